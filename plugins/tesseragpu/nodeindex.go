package tesseragpu

import (
	"unsafe"

	fwk "k8s.io/kube-scheduler/framework"
)

// infoIndex maps the NodeInfo objects of the scheduler's snapshot to node
// records, so that Filter and Score find a node's record from the NodeInfo
// the framework hands them, without reading the node's name.
//
// Why: at 5,000 nodes, finding the record by name cost a third of the
// plugin's CPU in the scheduler_perf profile, almost all of it cache
// misses: the name's bytes live in the scheduler's Node object, which no
// in-tree plugin touches in Filter, so hashing them loads a cold line per
// node (bench/README.md). The NodeInfo's address is in a register already,
// and an index of 5,000 addresses stays in the CPU's cache.
//
// It relies on how the snapshot keeps its NodeInfo objects: one object per
// node name, updated in place, for as long as the node is in the snapshot,
// and a new node list (a new slice) whenever a node is added or removed
// or a pod group cycle clones the snapshot. So an index built from one
// list is right for every NodeInfo of that list while the list is the
// snapshot's, and while the cache's node map is the one it was built from.
// Filter and Score are handed other NodeInfo objects too (clones with
// nominated pods added, preemption's what-if copies); those are not in the
// index, and recordOf falls back to the name.
type infoIndex struct {
	// names is the cache's node map the index was built from.
	names *map[string]*nodeRecord
	// first and n identify the node list it was built from. first also
	// keeps that list's array alive, so that no later list can have its
	// address.
	first *fwk.NodeInfo
	n     int
	// records maps a NodeInfo's address to its node's record, or to nil
	// for a node without one. The keys keep those NodeInfo objects alive,
	// so no other object can take an address while the index holds it.
	records map[unsafe.Pointer]*nodeRecord
}

// infoKey is the address of the object behind ni: the data word of the
// interface value. The snapshot's NodeInfo objects are pointers, so this
// is the object's identity; an implementation held by value would give a
// new address each time, which the index never holds, and would only miss.
func infoKey(ni fwk.NodeInfo) unsafe.Pointer {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&ni))[1]
}

// indexInfos makes recordOf answer from an index for the NodeInfo objects of
// list, the snapshot's node list as PreFilter is given it. It rebuilds the
// index only when the list or the cache's node map has changed since the
// last build, which costs one name lookup per node, about what one cycle's
// Filter calls cost without it.
func (c *gpuCache) indexInfos(list []fwk.NodeInfo) {
	if len(list) == 0 {
		return
	}
	names := c.nodes.Load()
	if x := c.byInfo.Load(); x != nil && x.names == names && x.first == &list[0] && x.n == len(list) {
		return
	}
	records := make(map[unsafe.Pointer]*nodeRecord, len(list))
	for _, ni := range list {
		if ni == nil || ni.Node() == nil {
			continue
		}
		records[infoKey(ni)] = (*names)[ni.Node().Name]
	}
	c.byInfo.Store(&infoIndex{names: names, first: &list[0], n: len(list), records: records})
}

// recordOf returns the record of the node that ni describes, or nil when
// nothing is known of it, like record.
func (c *gpuCache) recordOf(ni fwk.NodeInfo) *nodeRecord {
	if x := c.byInfo.Load(); x != nil && x.names == c.nodes.Load() {
		if r, ok := x.records[infoKey(ni)]; ok {
			return r
		}
	}
	n := ni.Node()
	if n == nil {
		return nil
	}
	return c.record(n.Name)
}
