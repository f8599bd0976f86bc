package device

import "slices"

// Model pressure: how hard the pods that may only use some device models
// lean on each model. Fragmentation alone cannot see it. Taking a device of
// a model that restricted pods need leaves those pods no worse placed on
// the node (they still fit, or the node is full), so the fragmentation
// score of such a placement equals that of a placement on a model nobody
// asked for, and the tie order decides. Tessera's tie order fills small
// nodes first; where the small nodes are of a model that restricted pods
// need (on the openb gpuspec traces, 2-GPU T4 nodes), unrestricted pods
// would drain that model before the restricted ones arrive.

// ModelPressure is the set of device models that the restricted classes
// of a workload claim a large share of.
type ModelPressure struct {
	claimed modelSet
	any     bool
}

// Pressure works out which models are under pressure from the workload
// classes in a cluster with the given number of devices per model. A
// restricted class's demand is spread over the models it accepts in
// proportion to their device counts; a model comes under pressure when
// the demand so assigned to it, per device, is at least enter times the
// workload's total GPU demand (shares included) per device of the cluster
// (so 0.3 means: if the cluster were exactly full, restricted pods would
// want 30% of the model's devices). A model already under pressure in
// held, the previous answer, stays under it until its share falls below
// leave. The estimate behind classes is noisy, and a model whose share
// sits near one threshold would otherwise flip in and out of pressure,
// letting unrestricted pods drain its nodes in the gaps. Classes that
// accept no model in the cluster cannot run and are left out. Every device
// counts, healthy or not: pressure is about which models pods need, not
// about which devices are up. No classes, or none restricted, put no model
// under pressure.
//
// It reads model names, not the interned IDs a Workload holds, so that the
// many rare shapes it is given (every pod shape seen, not only those
// scored) cannot use up the ID table with names no node has; only the
// cluster's own models are interned.
func Pressure(classes []WorkloadClass, capacity map[string]int, enter, leave float64, held *ModelPressure) *ModelPressure {
	mp := &ModelPressure{}
	var devices float64
	for _, n := range capacity {
		if n > 0 {
			devices += float64(n)
		}
	}
	claim := make(map[string]float64, len(capacity))
	var present []string
	var demand float64
	for _, c := range classes {
		if c.Count == 0 || !validClass(c) {
			continue
		}
		gpus := c.Weight * float64(c.Count) * float64(c.Units) / FullUnits
		if len(c.Models) == 0 {
			demand += gpus
			continue
		}
		// The models of the cluster the class accepts, each once.
		present = present[:0]
		var accepted float64
		for _, m := range c.Models {
			if capacity[m] > 0 && !slices.Contains(present, m) {
				present = append(present, m)
				accepted += float64(capacity[m])
			}
		}
		if accepted == 0 {
			continue
		}
		demand += gpus
		for _, m := range present {
			claim[m] += gpus * float64(capacity[m]) / accepted
		}
	}
	if demand == 0 {
		return mp
	}
	for m, gpus := range claim {
		id := modelID(m)
		threshold := enter
		if held != nil && held.claimed.has(id) {
			threshold = leave
		}
		if gpus/float64(capacity[m]) >= threshold*demand/devices {
			mp.claimed.add(id)
			mp.any = true
		}
	}
	return mp
}

// Claimed reports whether any device of the node is of a model under
// pressure. It does not allocate.
func (mp *ModelPressure) Claimed(inv *Inventory) bool {
	if mp == nil || !mp.any {
		return false
	}
	for _, id := range inv.modelIDs {
		if mp.claimed.has(id) {
			return true
		}
	}
	return false
}
