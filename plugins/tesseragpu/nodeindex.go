package tesseragpu

import (
	"math/bits"
	"unsafe"

	fwk "k8s.io/kube-scheduler/framework"
)

// infoIndex finds the slot of a node (its state and Filter's memo) from
// the NodeInfo object of the scheduler's snapshot that the framework hands
// Filter and Score, without reading the node's name, and keeps the slots of
// the snapshot's nodes side by side.
//
// Why: at 5,000 nodes, finding a node by name cost a third of the plugin's
// CPU in the scheduler_perf profile, and almost all the rest was cache
// misses on the way from the name to the state: the name's bytes (which
// live in the scheduler's Node object, which no in-tree plugin touches in
// Filter), the map's key, the node's record, its state, and the memo
// written back (bench/README.md). The NodeInfo's address is in a register
// already, the index's table of addresses is small enough to stay in the
// CPU's cache, and a slot is one dense array element away.
//
// It relies on how the snapshot keeps its NodeInfo objects: one object per
// node name, updated in place, for as long as the node is in the snapshot,
// and a new node list (a new slice) whenever a node is added or removed or
// a pod group cycle clones the snapshot. So an index built from one list is
// right for every NodeInfo of that list while the list is the snapshot's,
// and while the cache's node map is the one it was built from. Filter and
// Score are handed other NodeInfo objects too (clones with nominated pods
// added, preemption's what-if copies); those are not in the index, and
// slotOf falls back to the name.
type infoIndex struct {
	// names is the cache's node map the index was built from.
	names *map[string]*nodeRecord
	// first and n identify the node list it was built from. first also
	// keeps that list's array alive, so that no later list can have its
	// address.
	first *fwk.NodeInfo
	n     int
	// table is an open-addressing hash table of NodeInfo addresses, a
	// power of two at least twice the list's length; shift makes a hash of
	// log2(len(table)) bits. The keys keep those NodeInfo objects alive,
	// so no other object can take an address while the index holds it.
	table []infoEntry
	shift uint
	// slots are the slots of the list's nodes that have a record, which
	// the records point to while this index is the latest.
	slots []nodeSlot
}

// infoEntry maps a NodeInfo's address to its node's slot, or to nil for a
// node without a record.
type infoEntry struct {
	key  unsafe.Pointer
	slot *nodeSlot
}

// infoKey is the address of the object behind ni: the data word of the
// interface value. The snapshot's NodeInfo objects are pointers, so this
// is the object's identity; an implementation held by value would give a
// new address each time, which the index never holds, and would only miss.
func infoKey(ni fwk.NodeInfo) unsafe.Pointer {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&ni))[1]
}

// home is the table position where the search for key starts (Fibonacci
// hashing of the address).
func (x *infoIndex) home(key unsafe.Pointer) uint64 {
	return uint64(uintptr(key)) * 0x9e3779b97f4a7c15 >> x.shift
}

// find returns the entry that holds key, or the empty entry where key
// belongs (linear probing from home).
func (x *infoIndex) find(key unsafe.Pointer) *infoEntry {
	mask := uint64(len(x.table) - 1)
	for i := x.home(key); ; i = (i + 1) & mask {
		if e := &x.table[i]; e.key == key || e.key == nil {
			return e
		}
	}
}

// lookup returns key's slot, and whether the table holds key.
func (x *infoIndex) lookup(key unsafe.Pointer) (*nodeSlot, bool) {
	e := x.find(key)
	return e.slot, e.key != nil
}

// indexInfos makes slotOf answer from an index for the NodeInfo objects of
// list, the snapshot's node list as PreFilter is given it. It rebuilds the
// index only when the list or the cache's node map has changed since the
// last build, which costs one name lookup per node, about what one cycle's
// Filter calls cost without it. The build holds cache.mu, so that no
// state is published into a slot it is moving.
func (c *gpuCache) indexInfos(list []fwk.NodeInfo) {
	if len(list) == 0 {
		return
	}
	if x := c.byInfo.Load(); x != nil && x.names == c.nodes.Load() && x.first == &list[0] && x.n == len(list) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	names := c.nodes.Load()
	size := 1 << bits.Len(uint(2*len(list)-1))
	x := &infoIndex{names: names, first: &list[0], n: len(list), table: make([]infoEntry, size),
		shift: uint(64 - bits.TrailingZeros(uint(size))), slots: make([]nodeSlot, 0, len(list))}
	moved := make(map[*nodeRecord]*nodeSlot, len(list))
	for _, ni := range list {
		if ni == nil || ni.Node() == nil {
			continue
		}
		key := infoKey(ni)
		e := x.find(key)
		if e.key != nil {
			continue
		}
		e.key = key
		r := (*names)[ni.Node().Name]
		if r == nil {
			continue
		}
		// Two NodeInfo objects of one name (not in a real snapshot) share
		// the record's one slot: a second copy would stop receiving the
		// node's states.
		if sl := moved[r]; sl != nil {
			e.slot = sl
			continue
		}
		x.slots = append(x.slots, nodeSlot{})
		sl := &x.slots[len(x.slots)-1]
		sl.state.Store(r.current())
		r.slot.Store(sl)
		moved[r] = sl
		e.slot = sl
	}
	c.byInfo.Store(x)
	c.logger.V(5).Info("Indexed the scheduler's nodes", "nodes", len(list), "gpuNodes", len(x.slots))
}

// slotOf returns the slot of the node that ni describes, or nil when
// nothing is known of it.
func (c *gpuCache) slotOf(ni fwk.NodeInfo) *nodeSlot {
	if x := c.byInfo.Load(); x != nil && x.names == c.nodes.Load() {
		if sl, ok := x.lookup(infoKey(ni)); ok {
			return sl
		}
	}
	n := ni.Node()
	if n == nil {
		return nil
	}
	return c.slot(n.Name)
}

// slot returns the slot of the named node, or nil when nothing is known
// of it.
func (c *gpuCache) slot(node string) *nodeSlot {
	if r := c.record(node); r != nil {
		return r.slot.Load()
	}
	return nil
}
