package tesseradra

import (
	"slices"
	"strings"

	resourceapi "k8s.io/api/resource/v1"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

// drainventoryMaxOnStack is how many devices' ranks reordered keeps on the
// stack: a node's GPUs, in every slice seen so far.
const drainventoryMaxOnStack = 64

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
//
// memo holds the slices reordered for the previous pod: a node whose
// preferred devices have not changed since gets the same copy, so that a
// run of pods costs one copy per node that changed, not one per node and
// pod. ordered returns the memo for the next call.
//
// byNode is each GPU node's preferred devices, as order gave them.
func ordered(all []*resourceapi.ResourceSlice, order func(node string) []string, memo map[*resourceapi.ResourceSlice]reorder) (out []*resourceapi.ResourceSlice, next map[*resourceapi.ResourceSlice]reorder, byNode map[string][]string) {
	out = all
	copied := false
	byNode = map[string][]string{}
	next = make(map[*resourceapi.ResourceSlice]reorder, len(memo))
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
		if len(ids) == 0 {
			continue
		}
		r := s
		if m, ok := memo[s]; ok && slices.Equal(m.ids, ids) {
			r = m.out
		} else {
			r = reordered(s, ids)
		}
		next[s] = reorder{ids: ids, out: r}
		if r == s {
			continue
		}
		if !copied {
			out, copied = slices.Clone(all), true
		}
		out[i] = r
	}
	return out, next, byNode
}

// reorder is a slice as ordered for some preferred devices.
type reorder struct {
	ids []string
	out *resourceapi.ResourceSlice
}

// reordered returns s with the devices of ids first, in that order, or s
// itself when that is its order already.
func reordered(s *resourceapi.ResourceSlice, ids []string) *resourceapi.ResourceSlice {
	if len(ids) == 0 {
		return s
	}
	// IDs are "<pool ID>/<name>": compare the names without building
	// each device's ID.
	pool := drainventory.PoolID(s.Spec.Driver, s.Spec.Pool.Name) + "/"
	rank := func(d *resourceapi.Device) int {
		for i, id := range ids {
			if len(id) == len(pool)+len(d.Name) && strings.HasPrefix(id, pool) && id[len(pool):] == d.Name {
				return i
			}
		}
		return len(ids)
	}
	var buf [drainventoryMaxOnStack]int
	ranks := buf[:0]
	if len(s.Spec.Devices) > len(buf) {
		ranks = make([]int, 0, len(s.Spec.Devices))
	}
	ranks = ranks[:len(s.Spec.Devices)]
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
