package fakegpu

import (
	"sort"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// machineSpec is what a kind adds on top of an upstream mock server.
type machineSpec struct {
	// build returns a fresh upstream mock server.
	build func() (*server.Server, error)
	// buses are the PCI bus numbers of the GPUs in index order (domain 0,
	// device 0, function 0). NVML numbers GPUs in PCI order, so they
	// ascend.
	buses []uint32
	// links returns, for GPU i of n, the peer GPU index at the far end of
	// each of its NVLink links, -1 for a link that exists but is down. A
	// nil result means the GPU has no NVLink at all.
	links func(i int) []int
}

// Bus numbers modelled on the DGX A100 and DGX H100 layouts: four GPUs behind
// each CPU socket, the first socket's below bus 0x80. DGX H200 and B200 use
// the H100 layout; only their shape matters here.
var (
	dgxA100Buses = []uint32{0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd}
	dgxH100Buses = []uint32{0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb}
	mixedBuses   = []uint32{0x17, 0x31, 0x4b, 0x98, 0xb1, 0xca}
)

// specs holds every machine kind New accepts.
var specs = map[string]machineSpec{
	"dgxa100": {build: upstream(dgxa100.New), buses: dgxA100Buses, links: islands(8, 4, 12)},
	"dgxh100": {build: upstream(dgxh100.New), buses: dgxH100Buses, links: islands(8, 4, 18)},
	"dgxh200": {build: upstream(dgxh200.New), buses: dgxH100Buses, links: islands(8, 4, 18)},
	"dgxb200": {build: upstream(dgxb200.New), buses: dgxH100Buses, links: islands(8, 4, 18)},
	"mixed":   {build: mixedServer, buses: mixedBuses, links: mixedLinks},
}

// Kinds returns the machine kinds New accepts, sorted.
func Kinds() []string {
	out := make([]string, 0, len(specs))
	for k := range specs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// upstream adapts one of go-nvml's DGX constructors.
func upstream(newServer func() *server.Server) func() (*server.Server, error) {
	return func() (*server.Server, error) { return newServer(), nil }
}

// islands models an NVSwitch machine of n GPUs as NVLink islands of size
// GPUs each, every GPU spreading its linkCount links evenly over the other
// GPUs of its island.
//
// This is a deliberate simplification. In a real DGX every GPU reaches every
// other at full bandwidth through NVSwitch, and each link's far end is a
// switch, not a GPU; that topology is uniform and gives topology-aware
// placement nothing to choose between. Two islands give the placement code a
// real decision (keep a 4-GPU job inside one island) while every link still
// ends at a GPU of this machine, as on bridge-connected PCIe cards.
func islands(n, size, linkCount int) func(int) []int {
	return func(i int) []int {
		first := i / size * size
		var peers []int
		for p := first; p < first+size && p < n; p++ {
			if p != i {
				peers = append(peers, p)
			}
		}
		links := make([]int, linkCount)
		for l := range links {
			links[l] = -1
			if len(peers) > 0 {
				perPeer := linkCount / len(peers)
				if perPeer > 0 && l/perPeer < len(peers) {
					links[l] = peers[l/perPeer]
				}
			}
		}
		return links
	}
}

// mixedServer is a heterogeneous PCIe machine: per CPU socket, two
// A100-PCIE-80GB cards joined by NVLink bridges and one A30-PCIE-24GB
// without a bridge. Interleaving the models (rather than four A100s then two
// A30s) keeps each bridged pair on one socket, as the cards would be cabled,
// and gives every NUMA node both models.
func mixedServer() (*server.Server, error) {
	return server.New(
		server.WithGPUs(
			gpus.A100_PCIE_80GB, gpus.A100_PCIE_80GB, gpus.A30_PCIE_24GB,
			gpus.A100_PCIE_80GB, gpus.A100_PCIE_80GB, gpus.A30_PCIE_24GB,
		),
		server.WithDriverVersion("550.54.15"),
		server.WithNVMLVersion("12.550.54.15"),
		server.WithCUDADriverVersion(12040),
	)
}

// mixedLinks gives each bridged A100 pair all 12 of its links (three bridges
// of four links) to its partner, and each A30 its 4 links, all down because
// no bridge is fitted.
func mixedLinks(i int) []int {
	partner := map[int]int{0: 1, 1: 0, 3: 4, 4: 3}
	p, ok := partner[i]
	if !ok {
		return []int{-1, -1, -1, -1}
	}
	links := make([]int, 12)
	for l := range links {
		links[l] = p
	}
	return links
}

// supportedEvents is the event mask every fake GPU reports: all the data
// centre GPUs modelled here have ECC memory and report XIDs.
const supportedEvents uint64 = nvml.EventTypeXidCriticalError |
	nvml.EventTypeDoubleBitEccError |
	nvml.EventTypeSingleBitEccError
