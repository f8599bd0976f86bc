// Package fakegpu builds fake GPU machines that implement nvml.Interface, for
// tests and for running the device plugin on nodes without GPUs.
//
// A Machine starts from one of go-nvml's own mock servers (mock/dgxa100,
// dgxh100, dgxh200, dgxb200, or mock/server with mock/gpus for the
// heterogeneous "mixed" kind) and adds what those mocks leave out:
//
//   - UUIDs that are stable for a node name and device index, so a fake node
//     keeps its GPU identities across restarts;
//   - product names as NVML reports them (without the mocks' "Mock " prefix);
//   - NUMA nodes: the first half of the GPUs on node 0, the rest on node 1;
//   - PCI bus ids in GetPciInfo (upper case with an 8-digit domain, as NVML
//     spells them) and lookup by bus id;
//   - NVLink state and remote PCI info (see below for the topology);
//   - supported event types, event registration and event sets whose Wait
//     returns injected events;
//   - failure injection: XIDs, double-bit ECC errors, lost GPUs and failing
//     Wait calls.
//
// NVLink topology: DGX kinds are modelled as two islands of four GPUs, every
// GPU linked directly to the three others of its island and to no GPU of the
// other island. Real DGX machines connect all eight GPUs through NVSwitch;
// see islands for why the fake does not. The "mixed" kind has two bridged
// A100 pairs and two A30s without NVLink.
//
// Calls the fake does not model return ERROR_NOT_SUPPORTED instead of
// panicking as the bare mocks do. Tests may still override a device's
// XxxFunc field (m.Devices[i].(*server.Device)) to script one answer, but
// only before the machine is shared between goroutines, and an overridden
// field bypasses the lost-GPU guard.
//
// A Machine is safe for concurrent use.
package fakegpu

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// noInstance is the GPU/compute instance id NVML puts in an event that did
// not come from a MIG instance.
const noInstance = 0xFFFFFFFF

// maxBacklog bounds the events held while no event set listens for them, so
// a fake-mode binary that injects faster than it consumes cannot grow
// without limit. The oldest events are dropped first.
const maxBacklog = 1024

// Machine is a fake GPU machine. It implements nvml.Interface through the
// embedded go-nvml mock server, with the additions listed in the package
// documentation.
type Machine struct {
	*server.Server

	kind     string
	nodeName string
	gpus     []*fakeGPU          // index order; fixed after New
	byUUID   map[string]*fakeGPU // fixed after New

	mu       sync.Mutex
	seq      uint64 // counts injected events
	sets     map[*eventSet]struct{}
	backlog  []pendingEvent
	failRet  nvml.Return
	failLeft int
}

// fakeGPU is the state the fake keeps per GPU beyond the mock device.
type fakeGPU struct {
	index int
	dev   *server.Device
	uuid  string
	bus   uint32
	numa  int
	// links holds, per NVLink link, the index of the peer GPU at its far
	// end, or -1 for a link that is down; nil means no NVLink at all.
	links []int
	// lost is read on every call to the device, so it is an atomic rather
	// than something guarded by the machine's lock.
	lost atomic.Bool
}

// New builds a fake machine of the given kind (see Kinds) for the node
// nodeName. The node name seeds the GPU UUIDs, so two fake nodes never share
// a UUID while one node keeps the same UUIDs every time it is built.
func New(kind, nodeName string) (*Machine, error) {
	spec, ok := specs[kind]
	if !ok {
		return nil, fmt.Errorf("unknown fake GPU machine kind %q; valid kinds are %s", kind, strings.Join(Kinds(), ", "))
	}
	if nodeName == "" {
		return nil, errors.New("fake GPU machine needs a node name: it seeds the GPU UUIDs")
	}
	srv, err := spec.build()
	if err != nil {
		return nil, fmt.Errorf("building the %s mock server: %w", kind, err)
	}
	if len(srv.Devices) != len(spec.buses) {
		// Only possible if a go-nvml upgrade changes a DGX mock's size.
		return nil, fmt.Errorf("%s mock server has %d GPUs, the fake models %d", kind, len(srv.Devices), len(spec.buses))
	}

	m := &Machine{
		Server:   srv,
		kind:     kind,
		nodeName: nodeName,
		byUUID:   make(map[string]*fakeGPU, len(srv.Devices)),
		sets:     make(map[*eventSet]struct{}),
	}
	n := len(srv.Devices)
	for i, d := range srv.Devices {
		dev, ok := d.(*server.Device)
		if !ok {
			return nil, fmt.Errorf("%s mock server device %d has unexpected type %T", kind, i, d)
		}
		g := &fakeGPU{
			index: i,
			dev:   dev,
			uuid:  stableUUID(nodeName, i),
			bus:   spec.buses[i],
			numa:  i * 2 / n,
			links: spec.links(i),
		}
		m.gpus = append(m.gpus, g)
		m.byUUID[g.uuid] = g
		m.layer(g)
	}

	// The machine's own methods shadow the mock's for callers holding a
	// *Machine; pointing the mock's fields at them too keeps anyone holding
	// the bare *server.Server consistent.
	srv.DeviceGetHandleByIndexFunc = m.DeviceGetHandleByIndex
	srv.DeviceGetHandleByUUIDFunc = m.DeviceGetHandleByUUID
	srv.DeviceGetHandleByPciBusIdFunc = m.DeviceGetHandleByPciBusId
	srv.EventSetCreateFunc = m.EventSetCreate
	srv.ErrorStringFunc = func(r nvml.Return) string { return r.Error() }
	fillUnset(&srv.Interface)
	return m, nil
}

// layer adds the fake's behaviour to one mock device.
func (m *Machine) layer(g *fakeGPU) {
	d := g.dev
	d.UUID = g.uuid
	d.PciBusID = busID(g.bus)
	// The mocks keep upstream's "Mock " marker on some names; the plugin
	// publishes names verbatim, so fakes must read like real ones.
	d.Config.Name = strings.TrimPrefix(d.Config.Name, "Mock ")

	d.GetNumaNodeIdFunc = func() (int, nvml.Return) { return g.numa, nvml.SUCCESS }
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return pciInfo(g), nvml.SUCCESS }
	d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		// An idle GPU: the mocks report Free as 0, which reads as full.
		total := d.MemoryInfo.Total
		return nvml.Memory{Total: total, Free: total}, nvml.SUCCESS
	}
	d.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
		peer, ret := g.link(link)
		if ret != nvml.SUCCESS {
			return nvml.FEATURE_DISABLED, ret
		}
		if peer < 0 {
			return nvml.FEATURE_DISABLED, nvml.SUCCESS
		}
		return nvml.FEATURE_ENABLED, nvml.SUCCESS
	}
	d.GetNvLinkRemotePciInfoFunc = func(link int) (nvml.PciInfo, nvml.Return) {
		peer, ret := g.link(link)
		if ret != nvml.SUCCESS {
			return nvml.PciInfo{}, ret
		}
		if peer < 0 {
			// A link that is down has no far end to describe.
			return nvml.PciInfo{}, nvml.ERROR_INVALID_ARGUMENT
		}
		return pciInfo(m.gpus[peer]), nvml.SUCCESS
	}
	d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return supportedEvents, nvml.SUCCESS }
	d.RegisterEventsFunc = func(mask uint64, set nvml.EventSet) nvml.Return { return m.register(g, mask, set) }

	guardFuncs(&d.Device, func() nvml.Return {
		if g.lost.Load() {
			return nvml.ERROR_GPU_IS_LOST
		}
		return nvml.SUCCESS
	})
}

// link returns the peer index at the far end of a link (-1 when the link is
// down), or the NVML error for a GPU without NVLink or a link number past its
// last link.
func (g *fakeGPU) link(link int) (int, nvml.Return) {
	if g.links == nil {
		return -1, nvml.ERROR_NOT_SUPPORTED
	}
	if link < 0 || link >= len(g.links) {
		return -1, nvml.ERROR_INVALID_ARGUMENT
	}
	return g.links[link], nvml.SUCCESS
}

// stableUUID derives a GPU UUID from the node name and device index, in the
// format NVML uses ("GPU-" and 32 hex digits grouped 8-4-4-4-12).
func stableUUID(nodeName string, index int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("tessera-fakegpu\x00%s\x00%d", nodeName, index)))
	h := hex.EncodeToString(sum[:16])
	return "GPU-" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// busID spells a bus number as NVML does: 8-digit domain, upper-case hex.
func busID(bus uint32) string { return fmt.Sprintf("%08X:%02X:00.0", 0, bus) }

// pciInfo is what GetPciInfo returns for g.
func pciInfo(g *fakeGPU) nvml.PciInfo {
	p := nvml.PciInfo{
		Domain:      0,
		Bus:         g.bus,
		Device:      0,
		PciDeviceId: g.dev.Config.PciDeviceId,
	}
	putCString(p.BusId[:], busID(g.bus))
	putCString(p.BusIdLegacy[:], fmt.Sprintf("%04X:%02X:00.0", 0, g.bus))
	return p
}

// putCString copies s into a NUL-terminated C char array, truncating it to
// fit.
func putCString(dst []int8, s string) {
	n := min(len(s), len(dst)-1)
	for i := 0; i < n; i++ {
		dst[i] = int8(s[i])
	}
	dst[n] = 0
}

// canonicalBusID parses a PCI address in any of NVML's spellings (4- or
// 8-digit domain, either case) into a comparable value.
func canonicalBusID(id string) (uint64, bool) {
	var domain, bus, dev, fn uint64
	if _, err := fmt.Sscanf(strings.ToLower(id), "%x:%x:%x.%x", &domain, &bus, &dev, &fn); err != nil {
		return 0, false
	}
	return domain<<32 | bus<<16 | dev<<8 | fn, true
}

// gpu returns the fake GPU with the given UUID, or an error naming it.
func (m *Machine) gpu(uuid string) (*fakeGPU, error) {
	g, ok := m.byUUID[uuid]
	if !ok {
		return nil, fmt.Errorf("no GPU with UUID %q on fake machine %s (%s)", uuid, m.nodeName, m.kind)
	}
	return g, nil
}

// Kind returns the machine kind New was given.
func (m *Machine) Kind() string { return m.kind }

// NodeName returns the node name New was given.
func (m *Machine) NodeName() string { return m.nodeName }

// UUIDs returns the GPU UUIDs in device index order.
func (m *Machine) UUIDs() []string {
	out := make([]string, len(m.gpus))
	for i, g := range m.gpus {
		out[i] = g.uuid
	}
	return out
}

// DeviceGetHandleByIndex returns the device at an index; ERROR_GPU_IS_LOST
// for a lost GPU, as real NVML does.
func (m *Machine) DeviceGetHandleByIndex(index int) (nvml.Device, nvml.Return) {
	if index < 0 || index >= len(m.gpus) {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	return m.handle(m.gpus[index])
}

// DeviceGetHandleByUUID returns the device with a UUID; ERROR_NOT_FOUND for
// an unknown UUID and ERROR_GPU_IS_LOST for a lost GPU.
func (m *Machine) DeviceGetHandleByUUID(uuid string) (nvml.Device, nvml.Return) {
	g, ok := m.byUUID[uuid]
	if !ok {
		return nil, nvml.ERROR_NOT_FOUND
	}
	return m.handle(g)
}

// DeviceGetHandleByPciBusId returns the device at a PCI address, accepted in
// either case and with a 4- or 8-digit domain; ERROR_NOT_FOUND for an
// address with no GPU and ERROR_GPU_IS_LOST for a lost GPU.
func (m *Machine) DeviceGetHandleByPciBusId(id string) (nvml.Device, nvml.Return) {
	want, ok := canonicalBusID(id)
	if !ok {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	for _, g := range m.gpus {
		if have, _ := canonicalBusID(busID(g.bus)); have == want {
			return m.handle(g)
		}
	}
	return nil, nvml.ERROR_NOT_FOUND
}

// handle returns g's device handle unless g is lost.
func (m *Machine) handle(g *fakeGPU) (nvml.Device, nvml.Return) {
	if g.lost.Load() {
		return nil, nvml.ERROR_GPU_IS_LOST
	}
	return g.dev, nvml.SUCCESS
}

// LoseGPU makes a GPU behave as if it fell off the bus: from now on every
// call on its device handle, and every handle lookup for it, returns
// ERROR_GPU_IS_LOST. It does not inject the XID 79 a real loss usually
// comes with; tests that want both inject it separately.
func (m *Machine) LoseGPU(uuid string) error {
	g, err := m.gpu(uuid)
	if err != nil {
		return err
	}
	g.lost.Store(true)
	return nil
}

// RestoreGPU undoes LoseGPU: the GPU answers calls again.
func (m *Machine) RestoreGPU(uuid string) error {
	g, err := m.gpu(uuid)
	if err != nil {
		return err
	}
	g.lost.Store(false)
	return nil
}

// InjectXID raises an XID critical-error event with the given XID on a GPU.
func (m *Machine) InjectXID(uuid string, xid uint64) error {
	return m.injectFor(uuid, nvml.EventTypeXidCriticalError, xid)
}

// InjectDoubleBitECC raises a double-bit ECC error event on a GPU.
func (m *Machine) InjectDoubleBitECC(uuid string) error {
	return m.injectFor(uuid, nvml.EventTypeDoubleBitEccError, 0)
}

// InjectEvent delivers an arbitrary event, as given, to every live event set
// whatever it registered for, or to the next set created if none is live.
// It is for events NVML can produce but a test cannot raise through a GPU of
// this machine: events without a device, or with a device the listener did
// not register.
func (m *Machine) InjectEvent(ev nvml.EventData) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	p := pendingEvent{ev: ev, broadcast: true, seq: m.seq}
	if len(m.sets) == 0 {
		m.holdLocked(p)
		return
	}
	for s := range m.sets {
		s.pushLocked(p)
	}
}

// FailWait makes the next n Wait calls, on any event set of this machine,
// return ret instead of waiting; a Wait already blocked returns it at once.
// n <= 0 cancels an earlier FailWait.
func (m *Machine) FailWait(ret nvml.Return, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failRet, m.failLeft = ret, max(n, 0)
	for s := range m.sets {
		s.wakeLocked()
	}
}

// injectFor raises an event of one type on a GPU. It goes to every live
// event set that registered that GPU for that type; if none has, it is held
// until one registers. Real NVML would drop it, but holding it means tests
// need not synchronise with a listener's start-up.
func (m *Machine) injectFor(uuid string, eventType, data uint64) error {
	g, err := m.gpu(uuid)
	if err != nil {
		return err
	}
	p := pendingEvent{
		gpu: g,
		ev: nvml.EventData{
			Device:            g.dev,
			EventType:         eventType,
			EventData:         data,
			GpuInstanceId:     noInstance,
			ComputeInstanceId: noInstance,
		},
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	p.seq = m.seq
	delivered := false
	for s := range m.sets {
		if s.wantsLocked(p) {
			s.pushLocked(p)
			delivered = true
		}
	}
	if !delivered {
		m.holdLocked(p)
	}
	return nil
}

// holdLocked keeps an event nobody listens for, dropping the oldest held
// event when the backlog is full.
func (m *Machine) holdLocked(p pendingEvent) {
	if len(m.backlog) >= maxBacklog {
		m.backlog = m.backlog[1:]
	}
	m.backlog = append(m.backlog, p)
}

// register implements RegisterEvents for g.
func (m *Machine) register(g *fakeGPU, mask uint64, set nvml.EventSet) nvml.Return {
	s, ok := set.(*eventSet)
	if !ok || s.m != m {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	if mask&^supportedEvents != 0 {
		// As documented for nvmlDeviceRegisterEvents: asking for a type
		// the GPU cannot report fails the whole call.
		return nvml.ERROR_NOT_SUPPORTED
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.freed {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	if _, ok := s.registeredSeq[g.index]; !ok {
		s.registeredSeq[g.index] = m.seq
	}
	s.registered[g.index] |= mask
	kept := m.backlog[:0]
	for _, p := range m.backlog {
		if s.wantsLocked(p) {
			s.pushLocked(p)
		} else {
			kept = append(kept, p)
		}
	}
	clear(m.backlog[len(kept):])
	m.backlog = kept
	return nvml.SUCCESS
}
