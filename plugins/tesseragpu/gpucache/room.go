package gpucache

import (
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/tessera-gpu/tessera/pkg/device"
)

// room is what a published state has free, as the pruning in PreFilter
// reads it: the devices with nothing in use, and the most units free on
// any one device. Both count every device, whatever its health, model or
// taints, so that they bound from above what Filter can hand a pod: a
// node without room for a request is one Filter would reject.
type room struct {
	whole, share int
}

// roomOf works out the room of a state. A node without an inventory, or
// with pods of unknown assignment, has none.
func roomOf(st *NodeState) room {
	var rm room
	if st == nil || st.Inv == nil || st.Unknown > 0 {
		return rm
	}
	for _, u := range st.Used {
		if u <= 0 {
			rm.whole++
		}
		rm.share = max(rm.share, device.FullUnits-u)
	}
	return rm
}

// fits reports whether the room could hold whole free devices and a share
// of share units (0 for none).
func (rm room) fits(whole, share int) bool {
	return rm.whole >= whole && (share == 0 || rm.share >= share)
}

// HasRoom reports whether the state could hold whole free devices and a
// share of share units: false means Filter rejects any such request here.
func (st *NodeState) HasRoom(whole, share int) bool {
	return st != nil && st.room.fits(whole, share)
}

// roomIndex files every node with an inventory under its room, twice: by
// its free devices and by the most units free on one device. A request
// then visits only the nodes of the buckets that could hold it, in the
// dimension where they are fewer. Guarded by Cache.mu.
type roomIndex struct {
	byWhole [device.MaxDevicesPerNode + 1]map[*nodeRecord]struct{}
	byShare [device.FullUnits + 1]map[*nodeRecord]struct{}
}

// move refiles r from room old to room now; a node without an inventory is
// filed nowhere.
func (x *roomIndex) move(r *nodeRecord, old, now *NodeState) {
	if old != nil && old.Inv != nil {
		delete(x.byWhole[old.room.whole], r)
		delete(x.byShare[old.room.share], r)
	}
	if now != nil && now.Inv != nil {
		if x.byWhole[now.room.whole] == nil {
			x.byWhole[now.room.whole] = map[*nodeRecord]struct{}{}
		}
		if x.byShare[now.room.share] == nil {
			x.byShare[now.room.share] = map[*nodeRecord]struct{}{}
		}
		x.byWhole[now.room.whole][r] = struct{}{}
		x.byShare[now.room.share][r] = struct{}{}
	}
}

// count returns, for each dimension, how many nodes have at least the room
// asked for in it.
func (x *roomIndex) count(whole, share int) (byWhole, byShare int) {
	for k := min(max(whole, 0), device.MaxDevicesPerNode); k <= device.MaxDevicesPerNode; k++ {
		byWhole += len(x.byWhole[k])
	}
	for k := min(max(share, 0), device.FullUnits); k <= device.FullUnits; k++ {
		byShare += len(x.byShare[k])
	}
	return byWhole, byShare
}

// NodesWithRoom returns the names of the nodes whose state has room for
// whole free devices and a share of share units (HasRoom), unless more
// than limit nodes could have it: then it returns nil and false, having
// visited no node. Its cost is that of the nodes in the buckets it visits,
// not of the cluster.
func (c *Cache) NodesWithRoom(whole, share, limit int) (sets.Set[string], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byWhole, byShare := c.room.count(whole, share)
	if min(byWhole, byShare) > limit {
		return nil, false
	}
	names := sets.New[string]()
	buckets, from, last := c.room.byWhole[:], whole, device.MaxDevicesPerNode
	if byShare < byWhole {
		buckets, from, last = c.room.byShare[:], share, device.FullUnits
	}
	for k := min(max(from, 0), last); k <= last; k++ {
		for r := range buckets[k] {
			if r.State().room.fits(whole, share) {
				names.Insert(r.name)
			}
		}
	}
	return names, true
}
