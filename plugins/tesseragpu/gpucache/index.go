package gpucache

import (
	"sync/atomic"

	v1 "k8s.io/api/core/v1"
	fwk "k8s.io/kube-scheduler/framework"
)

// infoIndex finds the slot of a node (its state and Filter's memo) from
// the NodeInfo the framework hands Filter and Score without reading the
// node's name, and keeps the slots of the snapshot's nodes side by side,
// in the list's order.
//
// Why: at 5,000 nodes, finding a node by name cost a third of the plugin's
// CPU in the scheduler_perf profile, and almost all the rest was cache
// misses on the way from the name to the state: the name's bytes (which
// live in the Node object's metadata, which no in-tree plugin touches in
// Filter), the map's key, the node's record, its state, and the memo
// written back (bench/README.md). The index is keyed by the address of the
// Node object, which NodeInfo.Node returns from the NodeInfo the framework
// has just read; the answer is the node's position in the list, and the
// framework filters a cycle's nodes in list order (each of its workers a
// run of consecutive positions), so the slots it reaches are neighbours in
// memory.
//
// Correctness rests only on what client-go promises: objects from an
// informer are never changed in place, so a Node object's address names
// one node for as long as anything holds the object, and the index holds
// every one it was built from. When a node is updated its NodeInfo carries
// a new Node object, which the index does not know: the lookup misses,
// SlotOf finds the node by name, and the miss asks the next PreFilter for
// a rebuild. The index is also rebuilt when the snapshot hands PreFilter
// another list (nodes added or removed) or the cache's node map changes.
type infoIndex struct {
	// names is the cache's node map the index was built from.
	names *map[string]*nodeRecord
	// list is the node list it was built from: the index is current for
	// the cycles PreFilter is handed this list.
	list []fwk.NodeInfo
	// pos maps each Node object of the list to its position, or to -1 for
	// a node without a record (no GPUNode).
	pos map[*v1.Node]int32
	// slots holds, at each list position of a node with a record, the
	// slot the record points to while this index is the latest.
	slots []Slot
	// gpuNodes counts the positions with a record.
	gpuNodes int
	// missed is set when a lookup met a Node object the index does not
	// hold, which happens when a node was updated since the build.
	missed atomic.Bool
}

// lookup returns the slot of node (nil for a node without a record), and
// whether the index holds node.
func (x *infoIndex) lookup(node *v1.Node) (*Slot, bool) {
	i, ok := x.pos[node]
	switch {
	case !ok:
		return nil, false
	case i < 0:
		return nil, true
	}
	return &x.slots[i], true
}

// IndexNodes makes SlotOf answer from an index for the NodeInfo objects of
// list, the snapshot's node list as PreFilter is given it. It rebuilds the
// index only when the list, the cache's node map or a node has changed
// since the last build, which costs one name lookup per node, about what
// one cycle's Filter calls cost without it. The build holds cache.mu, so
// that no state is published into a slot it is moving.
func (c *Cache) IndexNodes(list []fwk.NodeInfo) {
	if len(list) == 0 {
		return
	}
	if x := c.byInfo.Load(); x != nil && x.names == c.nodes.Load() && &x.list[0] == &list[0] && len(x.list) == len(list) && !x.missed.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	names := c.nodes.Load()
	x := &infoIndex{names: names, list: list, pos: make(map[*v1.Node]int32, len(list)), slots: make([]Slot, len(list))}
	moved := make(map[*nodeRecord]bool, len(list))
	for i, ni := range list {
		n := ni.Node()
		if n == nil {
			continue
		}
		if _, dup := x.pos[n]; dup {
			continue
		}
		r := (*names)[n.Name]
		// Two Node objects of one name (not in a real snapshot) would need
		// two slots, and the second would stop receiving the node's
		// states; the second is left out, so that SlotOf finds it by name
		// and both share the record's slot. Their memo is then written
		// without a lock by whichever Filter runs last, which is safe only
		// because a snapshot never holds two objects of one name.
		if r != nil && moved[r] {
			continue
		}
		if r == nil {
			x.pos[n] = -1
			continue
		}
		sl := &x.slots[i]
		sl.state.Store(r.State())
		r.slot.Store(sl)
		moved[r] = true
		x.gpuNodes++
		x.pos[n] = int32(i)
	}
	c.byInfo.Store(x)
	c.logger.V(5).Info("Indexed the scheduler's nodes", "nodes", len(list), "gpuNodes", x.gpuNodes)
}

// SlotOf returns the slot of the node that ni describes, or nil when
// nothing is known of it.
func (c *Cache) SlotOf(ni fwk.NodeInfo) *Slot {
	n := ni.Node()
	if n == nil {
		return nil
	}
	if x := c.byInfo.Load(); x != nil && x.names == c.nodes.Load() {
		if sl, ok := x.lookup(n); ok {
			return sl
		}
		// Filter and Score of many nodes may get here at once; only the
		// first miss since the build writes the flag's cache line.
		if !x.missed.Load() {
			x.missed.Store(true)
		}
	}
	return c.Slot(n.Name)
}

// Slot returns the slot of the named node, or nil when nothing is known
// of it.
func (c *Cache) Slot(node string) *Slot {
	if r := c.record(node); r != nil {
		return r.slot.Load()
	}
	return nil
}
