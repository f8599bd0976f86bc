package tesseradra

import (
	"slices"

	resourceapi "k8s.io/api/resource/v1"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

// ordered returns the slices with the devices order names for each node
// moved to the front of their slice, in that order; the other devices keep
// their places after them. Slices of other drivers, slices not local to
// one node and slices without a preferred device are returned as they are;
// the rest are shallow copies with a reordered device list, so that the
// informer's objects are never changed.
//
// The allocator sorts a pool's slices by name and tries devices in the
// order a slice lists them, taking the first that satisfy a request. A
// node's GPUs in one slice, as NVIDIA's and Tessera's drivers publish them,
// are therefore tried in exactly Tessera's order; across several slices,
// each slice's preferred devices come first within it.
func ordered(all []*resourceapi.ResourceSlice, order func(node string) []string) []*resourceapi.ResourceSlice {
	out := all
	copied := false
	byNode := map[string][]string{}
	for i, s := range all {
		if s.Spec.NodeName == nil || !drainventory.IsGPUDriver(s.Spec.Driver) {
			continue
		}
		node := *s.Spec.NodeName
		ids, seen := byNode[node]
		if !seen {
			ids = order(node)
			byNode[node] = ids
		}
		r := reordered(s, ids)
		if r == s {
			continue
		}
		if !copied {
			out, copied = slices.Clone(all), true
		}
		out[i] = r
	}
	return out
}

// reordered returns s with the devices of ids first, in that order, or s
// itself when that is its order already.
func reordered(s *resourceapi.ResourceSlice, ids []string) *resourceapi.ResourceSlice {
	if len(ids) == 0 {
		return s
	}
	rank := func(d *resourceapi.Device) int {
		id := drainventory.DeviceID(s.Spec.Driver, s.Spec.Pool.Name, d.Name)
		if i := slices.Index(ids, id); i >= 0 {
			return i
		}
		return len(ids)
	}
	ranks := make([]int, len(s.Spec.Devices))
	for i := range s.Spec.Devices {
		ranks[i] = rank(&s.Spec.Devices[i])
	}
	if slices.IsSorted(ranks) {
		return s
	}
	idx := make([]int, len(ranks))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return ranks[a] - ranks[b] })
	c := *s
	c.Spec.Devices = make([]resourceapi.Device, len(idx))
	for i, j := range idx {
		c.Spec.Devices[i] = s.Spec.Devices[j]
	}
	return &c
}
