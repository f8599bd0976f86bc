package discovery_test

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/google/go-cmp/cmp"

	"github.com/tessera-gpu/tessera/deviceplugin/discovery"
	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
)

var uuidFormat = regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func newMachine(t *testing.T, kind, node string) *fakegpu.Machine {
	t.Helper()
	m, err := fakegpu.New(kind, node)
	if err != nil {
		t.Fatalf("fakegpu.New(%q, %q): %v", kind, node, err)
	}
	return m
}

// mockDevice returns the upstream mock behind a fake GPU, for scripting one
// answer.
func mockDevice(t *testing.T, m *fakegpu.Machine, i int) *server.Device {
	t.Helper()
	d, ok := m.Devices[i].(*server.Device)
	if !ok {
		t.Fatalf("device %d is a %T, not a *server.Device", i, m.Devices[i])
	}
	return d
}

// peersOf returns, for each GPU, the sorted UUIDs of the GPUs in groups
// that contain it (a group is a list of indices), nil for none.
func peersOf(uuids []string, groups ...[]int) [][]string {
	out := make([][]string, len(uuids))
	for _, g := range groups {
		for _, i := range g {
			for _, j := range g {
				if i != j {
					out[i] = append(out[i], uuids[j])
				}
			}
		}
	}
	for _, p := range out {
		sort.Strings(p)
	}
	return out
}

func TestDiscoverFakeMachines(t *testing.T) {
	dgxIslands := [][]int{{0, 1, 2, 3}, {4, 5, 6, 7}}
	dgxNUMA := []int{0, 0, 0, 0, 1, 1, 1, 1}
	h100Buses := []string{"18", "2a", "3a", "5d", "9a", "ab", "ba", "db"}

	tests := []struct {
		kind    string
		driver  string
		cuda    int
		models  []string
		memory  []int64
		cc      []string
		numa    []int
		buses   []string
		islands [][]int
	}{
		{
			kind: "dgxa100", driver: "550.54.15", cuda: 12040,
			models: repeat(8, "NVIDIA A100-SXM4-40GB"), memory: repeat[int64](8, 40960), cc: repeat(8, "8.0"),
			numa: dgxNUMA, buses: []string{"07", "0f", "47", "4e", "87", "90", "b7", "bd"}, islands: dgxIslands,
		},
		{
			kind: "dgxh100", driver: "550.54.15", cuda: 12040,
			models: repeat(8, "NVIDIA H100 80GB HBM3"), memory: repeat[int64](8, 81920), cc: repeat(8, "9.0"),
			numa: dgxNUMA, buses: h100Buses, islands: dgxIslands,
		},
		{
			kind: "dgxh200", driver: "550.54.15", cuda: 12040,
			models: repeat(8, "NVIDIA H200 141GB HBM3e"), memory: repeat[int64](8, 144384), cc: repeat(8, "9.0"),
			numa: dgxNUMA, buses: h100Buses, islands: dgxIslands,
		},
		{
			kind: "dgxb200", driver: "560.28.03", cuda: 12060,
			models: repeat(8, "NVIDIA B200 180GB HBM3e"), memory: repeat[int64](8, 184320), cc: repeat(8, "10.0"),
			numa: dgxNUMA, buses: h100Buses, islands: dgxIslands,
		},
		{
			kind: "mixed", driver: "550.54.15", cuda: 12040,
			models: []string{
				"NVIDIA A100-PCIE-80GB", "NVIDIA A100-PCIE-80GB", "NVIDIA A30-PCIE-24GB",
				"NVIDIA A100-PCIE-80GB", "NVIDIA A100-PCIE-80GB", "NVIDIA A30-PCIE-24GB",
			},
			memory:  []int64{81920, 81920, 24576, 81920, 81920, 24576},
			cc:      repeat(6, "8.0"),
			numa:    []int{0, 0, 0, 1, 1, 1},
			buses:   []string{"17", "31", "4b", "98", "b1", "ca"},
			islands: [][]int{{0, 1}, {3, 4}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			m := newMachine(t, tc.kind, "node-a")
			inv, err := discovery.Discover(m)
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			uuids := m.UUIDs()
			want := discovery.Inventory{DriverVersion: tc.driver, CUDADriverVersion: tc.cuda}
			peers := peersOf(uuids, tc.islands...)
			for i := range tc.models {
				want.GPUs = append(want.GPUs, discovery.GPU{
					UUID:              uuids[i],
					Index:             i,
					Model:             tc.models[i],
					MemoryMiB:         tc.memory[i],
					ComputeCapability: tc.cc[i],
					NUMANode:          tc.numa[i],
					PCIBusID:          "00000000:" + tc.buses[i] + ":00.0",
					NVLinkPeers:       peers[i],
				})
			}
			if diff := cmp.Diff(want, inv); diff != "" {
				t.Errorf("inventory mismatch (-want +got):\n%s", diff)
			}
			for _, g := range inv.GPUs {
				if !uuidFormat.MatchString(g.UUID) {
					t.Errorf("GPU %d UUID %q does not look like an NVML UUID", g.Index, g.UUID)
				}
			}
			assertSymmetric(t, inv)
		})
	}
}

func assertSymmetric(t *testing.T, inv discovery.Inventory) {
	t.Helper()
	linked := map[[2]string]bool{}
	for _, g := range inv.GPUs {
		for _, p := range g.NVLinkPeers {
			linked[[2]string{g.UUID, p}] = true
		}
	}
	for pair := range linked {
		if !linked[[2]string{pair[1], pair[0]}] {
			t.Errorf("NVLink %s -> %s is not symmetric", pair[0], pair[1])
		}
	}
}

func repeat[T any](n int, v T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestDiscoverUUIDsStablePerNode(t *testing.T) {
	for _, kind := range fakegpu.Kinds() {
		t.Run(kind, func(t *testing.T) {
			a1 := discoverUUIDs(t, newMachine(t, kind, "node-a"))
			a2 := discoverUUIDs(t, newMachine(t, kind, "node-a"))
			b := discoverUUIDs(t, newMachine(t, kind, "node-b"))
			if diff := cmp.Diff(a1, a2); diff != "" {
				t.Errorf("same node name gave different UUIDs (-first +second):\n%s", diff)
			}
			seen := map[string]bool{}
			for _, u := range append(append([]string{}, a1...), b...) {
				if seen[u] {
					t.Errorf("UUID %s appears twice across node-a and node-b", u)
				}
				seen[u] = true
			}
		})
	}
}

func discoverUUIDs(t *testing.T, lib nvml.Interface) []string {
	t.Helper()
	inv, err := discovery.Discover(lib)
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	var out []string
	for _, g := range inv.GPUs {
		out = append(out, g.UUID)
	}
	return out
}

func TestDiscoverErrors(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(t *testing.T, m *fakegpu.Machine)
		wantMsg string
		wantRet nvml.Return
	}{
		{
			name: "UUID unreadable",
			break_: func(t *testing.T, m *fakegpu.Machine) {
				mockDevice(t, m, 3).GetUUIDFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
			},
			wantMsg: "GPU 3: reading the UUID",
			wantRet: nvml.ERROR_UNKNOWN,
		},
		{
			name: "name unreadable",
			break_: func(t *testing.T, m *fakegpu.Machine) {
				mockDevice(t, m, 5).GetNameFunc = func() (string, nvml.Return) { return "", nvml.ERROR_NO_PERMISSION }
			},
			wantMsg: "GPU 5 (",
			wantRet: nvml.ERROR_NO_PERMISSION,
		},
		{
			name: "GPU lost",
			break_: func(t *testing.T, m *fakegpu.Machine) {
				if err := m.LoseGPU(m.UUIDs()[6]); err != nil {
					t.Fatal(err)
				}
			},
			wantMsg: "GPU 6: getting the device handle",
			wantRet: nvml.ERROR_GPU_IS_LOST,
		},
		{
			name: "driver version unreadable",
			break_: func(t *testing.T, m *fakegpu.Machine) {
				m.SystemGetDriverVersionFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNINITIALIZED }
			},
			wantMsg: "driver version",
			wantRet: nvml.ERROR_UNINITIALIZED,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t, "dgxh100", "node-a")
			tc.break_(t, m)
			_, err := discovery.Discover(m)
			if err == nil {
				t.Fatal("Discover succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tc.wantMsg)
			}
			if !errors.Is(err, tc.wantRet) {
				t.Errorf("error %q does not wrap %v", err, tc.wantRet)
			}
		})
	}
}

// A bare upstream mock fills in no PCI bus id; discovery must say so rather
// than publish a made-up one, and must not reach the calls the bare mock
// would panic on.
func TestDiscoverBareUpstreamMock(t *testing.T) {
	_, err := discovery.Discover(dgxh100.New())
	if err == nil || !strings.Contains(err.Error(), "empty PCI bus id") {
		t.Fatalf("Discover(bare dgxh100) error = %v, want one about an empty PCI bus id", err)
	}
}

func TestDiscoverBestEffortTopology(t *testing.T) {
	m := newMachine(t, "dgxh100", "node-a")
	uuids := m.UUIDs()

	// GPU 1: NUMA not supported.
	mockDevice(t, m, 1).GetNumaNodeIdFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	// GPU 2: NUMA fails some other way.
	mockDevice(t, m, 2).GetNumaNodeIdFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }

	// GPU 0: link 0 ends at an NVSwitch, link 1's state cannot be read, and
	// link 2's remote end cannot be read; the remaining links still count.
	dev0 := mockDevice(t, m, 0)
	origState, origRemote := dev0.GetNvLinkStateFunc, dev0.GetNvLinkRemotePciInfoFunc
	dev0.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
		if link == 1 {
			return 0, nvml.ERROR_UNKNOWN
		}
		return origState(link)
	}
	dev0.GetNvLinkRemotePciInfoFunc = func(link int) (nvml.PciInfo, nvml.Return) {
		switch link {
		case 0:
			var p nvml.PciInfo
			for i, c := range "00000000:C5:00.0" {
				p.BusId[i] = int8(c)
			}
			return p, nvml.SUCCESS
		case 2:
			return nvml.PciInfo{}, nvml.ERROR_UNKNOWN
		}
		return origRemote(link)
	}

	// GPU 4: the legacy bus id only, as older drivers report it.
	dev4 := mockDevice(t, m, 4)
	origPci := dev4.GetPciInfoFunc
	dev4.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		p, ret := origPci()
		p.BusId = [32]int8{}
		return p, ret
	}

	inv, err := discovery.Discover(m)
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if got := inv.GPUs[1].NUMANode; got != -1 {
		t.Errorf("GPU 1 NUMA node = %d, want -1 when not supported", got)
	}
	if got := inv.GPUs[2].NUMANode; got != -1 {
		t.Errorf("GPU 2 NUMA node = %d, want -1 when the query fails", got)
	}
	// The fake gives each island peer 6 links, so GPU 0 still reaches all
	// three peers through its other links.
	want := peersOf(uuids, []int{0, 1, 2, 3})[0]
	if diff := cmp.Diff(want, inv.GPUs[0].NVLinkPeers); diff != "" {
		t.Errorf("GPU 0 peers (-want +got):\n%s", diff)
	}
	if got := inv.GPUs[4].PCIBusID; got != "00000000:9a:00.0" {
		t.Errorf("GPU 4 bus id from the legacy field = %q, want 00000000:9a:00.0", got)
	}
	// GPU 4 is still found as a peer through its (8-digit) bus id.
	if !contains(inv.GPUs[5].NVLinkPeers, uuids[4]) {
		t.Errorf("GPU 5 peers %v do not include GPU 4", inv.GPUs[5].NVLinkPeers)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestNormalizePCIBusID(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "00000000:18:00.0", want: "00000000:18:00.0"},
		{in: "00000000:AB:00.0", want: "00000000:ab:00.0"},
		{in: "0000:ab:00.0", want: "00000000:ab:00.0"},
		{in: "0001:3B:1f.7", want: "00000001:3b:1f.7"},
		{in: "3b:00.0", want: "00000000:3b:00.0"},
		{in: " 0000:3b:00.0 ", want: "00000000:3b:00.0"},
		{in: "", wantErr: true},
		{in: "0000:3b:00", wantErr: true},
		{in: "0000:3b:20.0", wantErr: true},
		{in: "0000:3b:00.8", wantErr: true},
		{in: "000000000:3b:00.0", wantErr: true},
		{in: "0000:xyz:00.0", wantErr: true},
		{in: "a:b:c:d.0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			got, err := discovery.NormalizePCIBusID(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("NormalizePCIBusID(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("NormalizePCIBusID(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
