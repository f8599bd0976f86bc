package gpucache

import (
	"sync/atomic"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/device"
)

// Slot is what Filter and Score read of a node in every cycle: its current
// state, which the cache swaps under its lock, and the plugin's memo of
// what Filter found there, which the cache does not guard.
type Slot struct {
	state atomic.Pointer[NodeState]
	memo  memo
}

// State returns the node's current state, or nil for no slot.
func (sl *Slot) State() *NodeState {
	if sl == nil {
		return nil
	}
	return sl.state.Load()
}

// Fit is what Filter works out for a node that can hold the pod, kept for
// Score and Reserve of the same cycle.
type Fit struct {
	// State is the node's state it was worked out on.
	State *NodeState
	// Score is the scorer's rating, where the scorer rates nodes while
	// Filter has them: working it out while Filter has the node's state
	// and inventory in cache lets Score answer from the node's slot alone.
	Score int64
	// Usable and Avoid are the devices the pod may use and should avoid.
	Usable, Avoid uint64
	// Placement is the strategy's choice of devices.
	Placement device.Placement
}

// memo hands Filter's verdict on a node to Score and Reserve in the same
// cycle, which would otherwise work it out again: on a 5,000-node cluster
// Score's repeat was over a third of the plugin's CPU. It sits beside the
// node's state so that Score finds both in the cache lines Filter loaded.
type memo struct {
	cycle atomic.Uint64
	fit   Fit
}

// Remember records Filter's Fit for the node in cycle. No lock is needed
// because of how the framework calls the plugin: each node's Filter calls
// of a cycle (with and without nominated pods) run on one goroutine; every
// Filter of a cycle returns before the first Score; cycles do not overlap;
// and a preemption dry run, which filters again within the cycle, can only
// write the same result, since Filter reads the cache, not the NodeInfo it
// is given. Remember on a nil slot does nothing.
func (sl *Slot) Remember(cycle uint64, f Fit) {
	if sl == nil {
		return
	}
	sl.memo.fit = f
	sl.memo.cycle.Store(cycle)
}

// Recall returns the Fit remembered for cycle, and true, if it was worked
// out on the node's current state.
func (sl *Slot) Recall(cycle uint64) (Fit, bool) {
	if sl == nil || sl.memo.cycle.Load() != cycle {
		return Fit{}, false
	}
	if f := sl.memo.fit; f.State == sl.state.Load() {
		return f, true
	}
	return Fit{}, false
}

// AssignmentOf is the assignment of placement p of request r on inventory
// inv: for each container, the UUIDs of its devices and its share of each.
func AssignmentOf(inv *device.Inventory, r *device.Request, p device.Placement) assignment.Assignment {
	a := assignment.Assignment{}
	grants := p.Grants(r)
	for i, c := range r.Containers {
		for _, g := range grants[i] {
			a[c.Name] = append(a[c.Name], assignment.Device{UUID: inv.Devices[g.Device].ID, Percent: g.Units})
		}
	}
	return a
}
