package gpucache

import "github.com/tessera-gpu/tessera/pkg/device"

// The states a Summary counts GPUs in, as indexes of ModelSummary.GPUs and
// GPUStates.
const (
	GPUFree = iota
	GPUPartial
	GPUFull
	GPUUnhealthy
)

// GPUStates names the states, as tessera_scheduler_gpus labels them.
var GPUStates = [...]string{GPUFree: "free", GPUPartial: "partial", GPUFull: "full", GPUUnhealthy: "unhealthy"}

// ModelSummary counts the GPUs of one model.
type ModelSummary struct {
	// GPUs counts them by state.
	GPUs [len(GPUStates)]int
	// Units are the units in use on them.
	Units int
	// PartialUnits are the units used on the GPUs counted partial.
	PartialUnits int
}

// Summary counts a cache's GPUs by model and state, and its GPU
// nodes by trust.
type Summary struct {
	// Models counts the GPUs by model.
	Models map[string]*ModelSummary
	// Fresh, Stale and Held count the GPU nodes whose inventory is fresh,
	// stale, or held whole by pods of unknown assignment.
	Fresh, Stale, Held int
}

// count adds (sign 1) or takes away (sign -1) what one node's state
// contributes: its node under held, stale or fresh, and each device under
// its model and state. A node whose pods hold GPUs the cache cannot pin
// counts as all in use, as Filter treats it. A model left with no devices
// is dropped, so that it stops being reported.
func (sum *Summary) count(st *NodeState, stale bool, sign int) {
	if st == nil || st.Inv == nil {
		return
	}
	switch {
	case st.Unknown > 0:
		sum.Held += sign
	case stale:
		sum.Stale += sign
	default:
		sum.Fresh += sign
	}
	for i := range st.Inv.Devices {
		d := &st.Inv.Devices[i]
		ms := sum.Models[d.Model]
		if ms == nil {
			ms = &ModelSummary{}
			sum.Models[d.Model] = ms
		}
		used := st.Used[i]
		if st.Unknown > 0 {
			used = device.FullUnits
		}
		used = min(used, device.FullUnits)
		ms.Units += sign * used
		switch {
		case !d.Healthy:
			ms.GPUs[GPUUnhealthy] += sign
		case used == 0:
			ms.GPUs[GPUFree] += sign
		case used == device.FullUnits:
			ms.GPUs[GPUFull] += sign
		default:
			ms.GPUs[GPUPartial] += sign
			ms.PartialUnits += sign * used
		}
		if ms.GPUs == [len(GPUStates)]int{} {
			delete(sum.Models, d.Model)
		}
	}
}

// clone returns a copy that shares nothing with sum.
func (sum *Summary) clone() Summary {
	out := *sum
	out.Models = make(map[string]*ModelSummary, len(sum.Models))
	for m, ms := range sum.Models {
		c := *ms
		out.Models[m] = &c
	}
	return out
}

// Summary returns the cache's GPUs by model and state. The cache keeps the
// counts up to date as it publishes node states (publishLocked,
// setStaleLocked), so a scrape costs a copy of a few models' counters
// rather than a walk over every node: on 5,000 nodes that walk took 1.7 %
// of the scheduler's CPU under scheduler_perf, which gathers every second.
func (c *Cache) Summary() Summary {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tally.clone()
}
