package device

import (
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// FullUnits is the capacity of one device in Tessera's single internal unit,
// percent of a device. A whole-device request takes all of it.
const FullUnits = 100

// MaxDevicesPerNode bounds the devices Tessera tracks on one node, so that a
// node's device sets fit in a uint64 bit mask and the hot path needs no heap.
const MaxDevicesPerNode = 64

// Taint is a taint on one device. It is a Kubernetes taint so that pod
// tolerations match it with exactly the semantics they have on node taints.
type Taint = corev1.Taint

// Device is one schedulable device of a node.
type Device struct {
	// ID is the device's stable identity (for GPUs, the NVML UUID).
	ID string
	// Index is the device's position in the node's inventory and the bit
	// that stands for it in masks.
	Index int
	// Model is the device's model name, matched exactly by model selectors.
	Model string
	// MemoryMiB is the device memory.
	MemoryMiB int64
	// NUMANode is the NUMA node the device hangs off; -1 when unknown.
	NUMANode int
	// Links is the set of devices (by Index) this one has a fast link to,
	// such as NVLink.
	Links uint64
	// Healthy is false while the device must not take new work.
	Healthy bool
	// Taints are the device taints.
	Taints []Taint
}

// Inventory is the immutable device inventory of one node.
//
// The fields that Filter reads for every node come first, next
// to each other, so that a scheduling cycle over thousands of nodes pays
// one or two cache misses per inventory rather than one per field.
type Inventory struct {
	// Heartbeat is when the node's agent last confirmed the inventory; the
	// zero time means never.
	Heartbeat time.Time
	// Devices are the usable devices; Devices[i].Index == i.
	Devices []Device

	all     uint64
	tainted uint64
	healthy uint64
	// hardTainted are the devices with a NoSchedule or NoExecute taint.
	hardTainted uint64
	// links[i] is Devices[i].Links; for nodes of up to 8 devices it lies in
	// linkBuf, inside the inventory, instead of one cache line per device.
	links   []uint64
	linkBuf [8]uint64

	// Node is the node's name.
	Node string
	// Problems lists the entries of the source inventory that were skipped,
	// each with the reason, for logs and events.
	Problems []string

	byID map[string]int
	// modelIDs are the devices' interned model names, for fragmentation.
	modelIDs []uint16
	models   []string
	// modelMasks[i] are the devices of model models[i], so that a model
	// constraint is checked once per model rather than once per device.
	modelMasks []uint64
	maxModel   int
}

// DeviceSpec is one device as a backend reports it, before validation.
type DeviceSpec struct {
	ID        string
	Model     string
	MemoryMiB int64
	NUMANode  int
	// LinkIDs are the IDs of linked peers.
	LinkIDs []string
	Healthy bool
	Taints  []Taint
}

// NewInventory validates specs and builds a node's inventory. Devices that
// cannot be used safely (no ID, no model, negative memory, an ID that appears
// twice, or more devices than MaxDevicesPerNode) are left out and named in
// Problems; links to unknown peers are dropped. It never fails: a bad entry
// costs that entry, not the node.
func NewInventory(node string, heartbeat time.Time, specs []DeviceSpec) *Inventory {
	inv := &Inventory{Node: node, Heartbeat: heartbeat, byID: make(map[string]int, len(specs))}
	seen := make(map[string]int, len(specs))
	for _, s := range specs {
		seen[s.ID]++
	}
	for i, s := range specs {
		switch {
		case s.ID == "":
			inv.Problems = append(inv.Problems, fmt.Sprintf("device #%d has no ID", i))
			continue
		case seen[s.ID] > 1:
			// Which of the two entries is real is unknowable; using either
			// could hand one physical device to two pods.
			inv.Problems = append(inv.Problems, fmt.Sprintf("device %s appears %d times; all its entries are skipped", s.ID, seen[s.ID]))
			seen[s.ID] = -seen[s.ID] // reported; skip the other entries silently
			continue
		case seen[s.ID] < 0:
			continue
		case s.Model == "":
			inv.Problems = append(inv.Problems, fmt.Sprintf("device %s has no model", s.ID))
			continue
		case s.MemoryMiB < 0:
			inv.Problems = append(inv.Problems, fmt.Sprintf("device %s has negative memory %d MiB", s.ID, s.MemoryMiB))
			continue
		case len(inv.Devices) == MaxDevicesPerNode:
			inv.Problems = append(inv.Problems, fmt.Sprintf("device %s is beyond the %d devices tracked per node", s.ID, MaxDevicesPerNode))
			continue
		}
		idx := len(inv.Devices)
		inv.byID[s.ID] = idx
		numa := s.NUMANode
		if numa < -1 {
			numa = -1
		}
		inv.Devices = append(inv.Devices, Device{
			ID: s.ID, Index: idx, Model: s.Model, MemoryMiB: s.MemoryMiB,
			NUMANode: numa, Healthy: s.Healthy, Taints: s.Taints,
		})
	}
	// Links are resolved once every index is known.
	for _, s := range specs {
		idx, ok := inv.byID[s.ID]
		if !ok {
			continue
		}
		for _, peer := range s.LinkIDs {
			if p, ok := inv.byID[peer]; ok && p != idx {
				inv.Devices[idx].Links |= 1 << uint(p)
				// Links are symmetric even if only one side reports them.
				inv.Devices[p].Links |= 1 << uint(idx)
			}
		}
	}
	inv.links = inv.linkBuf[:0]
	if len(inv.Devices) > len(inv.linkBuf) {
		inv.links = make([]uint64, 0, len(inv.Devices))
	}
	models := map[string]bool{}
	for i := range inv.Devices {
		d := &inv.Devices[i]
		inv.links = append(inv.links, d.Links)
		inv.all |= 1 << uint(i)
		if d.Healthy {
			inv.healthy |= 1 << uint(i)
		}
		if len(d.Taints) > 0 {
			inv.tainted |= 1 << uint(i)
		}
		for _, t := range d.Taints {
			if isHardEffect(t.Effect) {
				inv.hardTainted |= 1 << uint(i)
			}
		}
		inv.modelIDs = append(inv.modelIDs, modelID(d.Model))
		if !models[d.Model] {
			models[d.Model] = true
			inv.models = append(inv.models, d.Model)
		}
	}
	sort.Strings(inv.models)
	inv.modelMasks = make([]uint64, len(inv.models))
	for i := range inv.Devices {
		m, _ := slices.BinarySearch(inv.models, inv.Devices[i].Model)
		inv.modelMasks[m] |= 1 << uint(i)
	}
	return inv
}

// CopyTo makes dst a copy of inv. The copy shares the device list and the
// other large parts, which are never changed, but holds the words that
// Filter reads for every node (heartbeat, masks and, for up to 8 devices,
// the link masks) itself, so that a holder that embeds the copy finds them
// in its own cache lines.
func (inv *Inventory) CopyTo(dst *Inventory) {
	*dst = *inv
	if len(inv.links) <= len(inv.linkBuf) {
		dst.links = dst.linkBuf[:len(inv.links)]
	}
}

// Len is the number of usable devices.
func (inv *Inventory) Len() int { return len(inv.Devices) }

// IndexOf returns the index of the device with the given ID.
func (inv *Inventory) IndexOf(id string) (int, bool) {
	i, ok := inv.byID[id]
	return i, ok
}

// Models returns the distinct device models, sorted.
func (inv *Inventory) Models() []string { return inv.models }

// HealthyCount is the number of healthy devices.
func (inv *Inventory) HealthyCount() int { return bits.OnesCount64(inv.healthy) }

// Stale reports whether the inventory's heartbeat is older than bound at now.
func (inv *Inventory) Stale(now time.Time, bound time.Duration) bool {
	return Stale(inv.Heartbeat, now, bound)
}

// Stale reports whether a heartbeat (the zero time meaning none) is older
// than bound at now. Filter and the queueing hints share this one rule.
func Stale(heartbeat, now time.Time, bound time.Duration) bool {
	return heartbeat.IsZero() || now.Sub(heartbeat) > bound
}
