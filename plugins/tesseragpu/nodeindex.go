package tesseragpu

import (
	"math/bits"
	"unsafe"

	fwk "k8s.io/kube-scheduler/framework"
)

// infoIndex finds the slot of a node (its state and Filter's memo) from
// the NodeInfo object of the scheduler's snapshot that the framework hands
// Filter and Score, without reading the node's name, and keeps the slots of
// the snapshot's nodes side by side, in the list's order.
//
// Why: at 5,000 nodes, finding a node by name cost a third of the plugin's
// CPU in the scheduler_perf profile, and almost all the rest was cache
// misses on the way from the name to the state: the name's bytes (which
// live in the scheduler's Node object, which no in-tree plugin touches in
// Filter), the map's key, the node's record, its state, and the memo
// written back (bench/README.md). The NodeInfo's address is in a register
// already, and the index answers with the node's position in the list:
// the framework filters a cycle's nodes in list order (each of its
// workers a run of consecutive positions), so the slots it reaches are
// neighbours in memory, and the list entry that confirms the match is the
// one the framework has just read.
//
// It relies on how the snapshot keeps its NodeInfo objects: one object per
// node name, updated in place, for as long as the node is in the snapshot,
// and a new node list (a new slice, never one changed in place) whenever a
// node is added or removed or a pod group cycle clones the snapshot. So an
// index built from one list is right for every NodeInfo of that list while
// the list is the snapshot's, and while the cache's node map is the one it
// was built from. Filter and Score are handed other NodeInfo objects too
// (clones with nominated pods added, preemption's what-if copies); those
// are not in the index, and slotOf falls back to the name.
type infoIndex struct {
	// names is the cache's node map the index was built from.
	names *map[string]*nodeRecord
	// list is the node list it was built from. Holding it keeps its
	// NodeInfo objects alive, so no other object can take the address of
	// one while the index holds it, and no later list can have its array.
	list []fwk.NodeInfo
	// table is an open-addressing hash table of the list's NodeInfo
	// addresses, a power of two at least twice the list's length; shift
	// makes a hash of log2(len(table)) bits. An entry is 0 when empty;
	// otherwise its high 32 bits are a fingerprint of the address (the
	// hash's low 32 bits, which the home position does not use), bit 31 is
	// infoHasRecord for a node with a record, and the low 31 bits are the
	// node's position plus one. At 8 bytes an entry the table of 5,000
	// nodes is 64 KiB.
	table []uint64
	shift uint
	// slots holds, at each list position of a node with a record, the
	// slot the record points to while this index is the latest.
	slots []nodeSlot
	// gpuNodes counts the positions with a record.
	gpuNodes int
}

// infoHasRecord marks a table entry of a node that has a record (and so a
// slot); the position takes the bits below it.
const infoHasRecord uint64 = 1 << 31

// infoKey is the address of the object behind ni: the data word of the
// interface value. The snapshot's NodeInfo objects are pointers, so this
// is the object's identity; an implementation held by value would give a
// new address each time, which the index never holds, and would only miss.
func infoKey(ni fwk.NodeInfo) unsafe.Pointer {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&ni))[1]
}

// infoHash spreads an address (Fibonacci hashing): its top bits pick the
// home position in the table, its low 32 bits are the entry's fingerprint.
func infoHash(key unsafe.Pointer) uint64 {
	return uint64(uintptr(key)) * 0x9e3779b97f4a7c15
}

// find returns the table position that holds key, and true; or the empty
// position where key belongs, and false. It reads the list only where a
// fingerprint matches, to confirm the match.
func (x *infoIndex) find(key unsafe.Pointer) (int, bool) {
	h := infoHash(key)
	fp := h & 0xffffffff
	mask := uint64(len(x.table) - 1)
	for i := h >> x.shift; ; i = (i + 1) & mask {
		e := x.table[i]
		if e == 0 {
			return int(i), false
		}
		if e>>32 == fp && infoKey(x.list[int(e&(infoHasRecord-1))-1]) == key {
			return int(i), true
		}
	}
}

// lookup returns key's slot (nil for a node without a record), and
// whether the table holds key.
func (x *infoIndex) lookup(key unsafe.Pointer) (*nodeSlot, bool) {
	i, ok := x.find(key)
	if !ok {
		return nil, false
	}
	e := x.table[i]
	if e&infoHasRecord == 0 {
		return nil, true
	}
	return &x.slots[int(e&(infoHasRecord-1))-1], true
}

// indexInfos makes slotOf answer from an index for the NodeInfo objects of
// list, the snapshot's node list as PreFilter is given it. It rebuilds the
// index only when the list or the cache's node map has changed since the
// last build, which costs one name lookup per node, about what one cycle's
// Filter calls cost without it. The build holds cache.mu, so that no
// state is published into a slot it is moving.
func (c *gpuCache) indexInfos(list []fwk.NodeInfo) {
	if len(list) == 0 || uint64(len(list)) >= infoHasRecord {
		return
	}
	if x := c.byInfo.Load(); x != nil && x.names == c.nodes.Load() && &x.list[0] == &list[0] && len(x.list) == len(list) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	names := c.nodes.Load()
	size := 1 << bits.Len(uint(2*len(list)-1))
	x := &infoIndex{names: names, list: list, table: make([]uint64, size),
		shift: uint(64 - bits.TrailingZeros(uint(size))), slots: make([]nodeSlot, len(list))}
	moved := make(map[*nodeRecord]bool, len(list))
	for pos, ni := range list {
		if ni == nil || ni.Node() == nil {
			continue
		}
		key := infoKey(ni)
		i, found := x.find(key)
		if found {
			continue
		}
		e := infoHash(key)<<32 | uint64(pos+1)
		r := (*names)[ni.Node().Name]
		// Two NodeInfo objects of one name (not in a real snapshot) would
		// need two slots, and the second would stop receiving the node's
		// states; the second is left out, so that slotOf finds it by name
		// and both share the record's slot. Their memo is then written
		// without a lock by whichever Filter runs last, which is safe only
		// because a snapshot never holds two objects of one name.
		if r != nil && moved[r] {
			continue
		}
		if r != nil {
			sl := &x.slots[pos]
			sl.state.Store(r.current())
			r.slot.Store(sl)
			moved[r] = true
			x.gpuNodes++
			e |= infoHasRecord
		}
		x.table[i] = e
	}
	c.byInfo.Store(x)
	c.logger.V(5).Info("Indexed the scheduler's nodes", "nodes", len(list), "gpuNodes", x.gpuNodes)
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
