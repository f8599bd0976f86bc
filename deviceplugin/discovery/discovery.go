package discovery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"
)

// Discover reads the driver versions and every GPU from an NVML library that
// the caller has already initialised (and will shut down).
//
// It is DiscoverContext with a background context, so it logs through klog's
// global logger.
func Discover(lib nvml.Interface) (Inventory, error) {
	return DiscoverContext(context.Background(), lib)
}

// DiscoverContext is Discover with a context that carries the logger.
//
// The fields that identify a GPU or size it for scheduling (handle, UUID,
// name, total memory, compute capability, PCI bus id) must be readable: if one
// is not, DiscoverContext fails with an error that names the device index and
// wraps the nvml.Return, so that callers can test it with errors.Is (for
// example against nvml.ERROR_GPU_IS_LOST). Publishing a GPU with a guessed
// identity or capacity would mislead the scheduler, which is worse than
// publishing nothing and retrying.
//
// The topology fields are best effort: a NUMA node NVML cannot tell is -1, and
// NVLink links that cannot be read are skipped, because the GPU is usable
// without them and placement only loses a preference.
func DiscoverContext(ctx context.Context, lib nvml.Interface) (Inventory, error) {
	if lib == nil {
		return Inventory{}, errors.New("discovery: no NVML library")
	}
	logger := klog.FromContext(ctx).WithName("discovery")

	driver, ret := lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		return Inventory{}, fmt.Errorf("reading the NVIDIA driver version: %w", ret)
	}
	cuda, ret := lib.SystemGetCudaDriverVersion()
	if ret != nvml.SUCCESS {
		return Inventory{}, fmt.Errorf("reading the CUDA driver version: %w", ret)
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return Inventory{}, fmt.Errorf("counting GPUs: %w", ret)
	}

	inv := Inventory{DriverVersion: driver, CUDADriverVersion: cuda, GPUs: make([]GPU, 0, count)}
	handles := make([]nvml.Device, 0, count)
	for i := 0; i < count; i++ {
		gpu, h, err := describe(logger, lib, i)
		if err != nil {
			return Inventory{}, err
		}
		inv.GPUs = append(inv.GPUs, gpu)
		handles = append(handles, h)
	}

	// NVLink peers are reported by PCI bus id, so the peers can only be
	// resolved once every GPU's bus id is known.
	byBusID := make(map[string]string, len(inv.GPUs))
	for _, g := range inv.GPUs {
		byBusID[g.PCIBusID] = g.UUID
	}
	for i := range inv.GPUs {
		inv.GPUs[i].NVLinkPeers = nvlinkPeers(logger, handles[i], inv.GPUs[i], byBusID)
	}

	logger.V(2).Info("Discovered GPUs", "driverVersion", driver, "cudaDriverVersion", cuda, "count", len(inv.GPUs))
	return inv, nil
}

// describe reads one device's own properties (everything except NVLink peers).
func describe(logger klog.Logger, lib nvml.Interface, index int) (GPU, nvml.Device, error) {
	h, ret := lib.DeviceGetHandleByIndex(index)
	if ret != nvml.SUCCESS {
		return GPU{}, nil, fmt.Errorf("GPU %d: getting the device handle: %w", index, ret)
	}
	uuid, ret := h.GetUUID()
	if ret != nvml.SUCCESS {
		return GPU{}, nil, fmt.Errorf("GPU %d: reading the UUID: %w", index, ret)
	}
	if uuid == "" {
		return GPU{}, nil, fmt.Errorf("GPU %d: NVML returned an empty UUID", index)
	}
	name, ret := h.GetName()
	if ret != nvml.SUCCESS {
		return GPU{}, nil, fmt.Errorf("GPU %d (%s): reading the product name: %w", index, uuid, ret)
	}
	mem, ret := h.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return GPU{}, nil, fmt.Errorf("GPU %d (%s): reading the memory size: %w", index, uuid, ret)
	}
	major, minor, ret := h.GetCudaComputeCapability()
	if ret != nvml.SUCCESS {
		return GPU{}, nil, fmt.Errorf("GPU %d (%s): reading the CUDA compute capability: %w", index, uuid, ret)
	}
	pci, ret := h.GetPciInfo()
	if ret != nvml.SUCCESS {
		return GPU{}, nil, fmt.Errorf("GPU %d (%s): reading the PCI info: %w", index, uuid, ret)
	}
	busID, err := pciInfoBusID(pci)
	if err != nil {
		return GPU{}, nil, fmt.Errorf("GPU %d (%s): %w", index, uuid, err)
	}

	numa, ret := h.GetNumaNodeId()
	if ret != nvml.SUCCESS || numa < 0 {
		// Single-socket machines, VMs and older drivers legitimately have
		// no answer here; -1 tells the publisher "unknown" rather than
		// claiming node 0.
		if ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_SUPPORTED {
			logger.V(2).Info("NUMA node unknown", "index", index, "uuid", uuid, "err", ret)
		}
		numa = -1
	}

	return GPU{
		UUID:              uuid,
		Index:             index,
		Model:             name,
		MemoryMiB:         int64(mem.Total >> 20),
		ComputeCapability: strconv.Itoa(major) + "." + strconv.Itoa(minor),
		NUMANode:          numa,
		PCIBusID:          busID,
	}, h, nil
}

// nvlinkPeers walks the device's NVLink links and returns the UUIDs of the
// GPUs at the other end, sorted and without duplicates (nil when there are
// none). Several links usually go to the same peer.
func nvlinkPeers(logger klog.Logger, h nvml.Device, g GPU, byBusID map[string]string) []string {
	peers := map[string]struct{}{}
scan:
	for link := 0; link < nvml.NVLINK_MAX_LINKS; link++ {
		state, ret := h.GetNvLinkState(link)
		switch ret {
		case nvml.SUCCESS:
		case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_INVALID_ARGUMENT, nvml.ERROR_GPU_IS_LOST:
			// NOT_SUPPORTED: the GPU has no NVLink at all.
			// INVALID_ARGUMENT: past the last link this GPU has.
			// GPU_IS_LOST: no later link can answer either.
			break scan
		default:
			logger.V(2).Info("Skipping NVLink link whose state cannot be read", "uuid", g.UUID, "link", link, "err", ret)
			continue
		}
		if state != nvml.FEATURE_ENABLED {
			continue
		}
		remote, ret := h.GetNvLinkRemotePciInfo(link)
		if ret != nvml.SUCCESS {
			logger.V(2).Info("Skipping NVLink link whose remote end cannot be read", "uuid", g.UUID, "link", link, "err", ret)
			continue
		}
		busID, err := pciInfoBusID(remote)
		if err != nil {
			logger.V(2).Info("Skipping NVLink link with an unreadable remote bus id", "uuid", g.UUID, "link", link, "err", err)
			continue
		}
		peer, ok := byBusID[busID]
		if !ok {
			// On NVSwitch systems every link ends at a switch, whose
			// bus id is not a GPU's; such links say nothing about which
			// GPU pairs are closer than others.
			logger.V(5).Info("NVLink link does not end at a GPU on this node", "uuid", g.UUID, "link", link, "remoteBusID", busID)
			continue
		}
		if peer == g.UUID {
			continue
		}
		peers[peer] = struct{}{}
	}
	if len(peers) == 0 {
		return nil
	}
	out := make([]string, 0, len(peers))
	for p := range peers {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// pciInfoBusID returns the normalised bus id from a PciInfo, preferring the
// 8-digit-domain BusId and falling back to the legacy 4-digit one, which is
// all some older drivers fill in.
func pciInfoBusID(p nvml.PciInfo) (string, error) {
	raw := cString(p.BusId[:])
	if raw == "" {
		raw = cString(p.BusIdLegacy[:])
	}
	if raw == "" {
		return "", errors.New("NVML returned an empty PCI bus id")
	}
	return NormalizePCIBusID(raw)
}

// cString converts a NUL-terminated C char array to a Go string.
func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// NormalizePCIBusID returns a PCI address in Tessera's canonical form: an
// 8-digit domain and lower-case hex, e.g. "00000000:18:00.0".
//
// NVML reports upper-case hex with an 8-digit domain ("00000000:AB:00.0"),
// its legacy field and sysfs use a 4-digit domain, and sysfs uses lower case;
// one canonical spelling lets ids from any of these sources be compared as
// strings. The domain may be omitted ("18:00.0"), meaning domain 0.
func NormalizePCIBusID(id string) (string, error) {
	s := strings.TrimSpace(id)
	parts := strings.Split(s, ":")
	var domainS, busS, devFn string
	switch len(parts) {
	case 3:
		domainS, busS, devFn = parts[0], parts[1], parts[2]
	case 2:
		domainS, busS, devFn = "0", parts[0], parts[1]
	default:
		return "", fmt.Errorf("malformed PCI bus id %q: want [domain:]bus:device.function", id)
	}
	devS, fnS, ok := strings.Cut(devFn, ".")
	if !ok {
		return "", fmt.Errorf("malformed PCI bus id %q: no function number", id)
	}
	domain, err1 := parseHex(domainS, 8, 0xffffffff)
	bus, err2 := parseHex(busS, 2, 0xff)
	dev, err3 := parseHex(devS, 2, 0x1f)
	fn, err4 := parseHex(fnS, 1, 0x7)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return "", fmt.Errorf("malformed PCI bus id %q: %w", id, err)
	}
	return fmt.Sprintf("%08x:%02x:%02x.%x", domain, bus, dev, fn), nil
}

// parseHex parses a hex field of at most maxDigits digits whose value is at
// most maxValue.
func parseHex(s string, maxDigits int, maxValue uint64) (uint64, error) {
	if s == "" || len(s) > maxDigits {
		return 0, fmt.Errorf("field %q must be 1 to %d hex digits", s, maxDigits)
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("field %q is not hex", s)
	}
	if v > maxValue {
		return 0, fmt.Errorf("field %q is out of range", s)
	}
	return v, nil
}
