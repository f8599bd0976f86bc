package tesseragpu

import (
	"context"
	"maps"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podgpu"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// The framework asks "what if" in two places, and the plugin answers both
// through PreFilterExtensions, on a copy of the cycle state:
//
//   - DefaultPreemption's dry run takes lower-priority pods off a node
//     (RemovePod) and puts them back one at a time (AddPod) to find the
//     fewest victims whose GPUs let the preemptor fit;
//   - Filter with nominated pods puts the pods of equal or higher priority
//     that preemption has promised the node (AddPod) before it judges a
//     pod, so that a lower-priority pod cannot take the GPUs freed for them.
//
// Filter reads GPU use from the plugin's cache, not from the NodeInfo, so
// the NodeInfo the framework changes alongside would not be seen. Instead
// the copy of the cycle state carries, for each node it touched, the node's
// state as the cache had it plus the changes (whatIfNode), and Filter
// judges that node on it.

// PreFilterExtensions returns the plugin: preemption and nominated pods
// change which GPUs a node has free.
func (pl *TesseraGPU) PreFilterExtensions() fwk.PreFilterExtensions { return pl }

// whatIfNode is a node as it would be with some pods gone and others
// added: the cache's state of the node when the cycle state first changed
// it, less the pods removed, plus the pods added. It is never changed once
// built; each change makes a new one, so that copies of the cycle state
// share it safely.
type whatIfNode struct {
	base *gpucache.NodeState
	// removed are pods of the cache on this node, taken off.
	removed map[types.UID]gpucache.Hold
	// added are pods the cache does not hold on this node (nominated
	// pods), put on in order. A pod whose GPUs could not be planned blocks
	// the whole node: it has been promised the node, and nothing of it
	// may be handed to a pod of lower priority meanwhile.
	added []addedPod
	// st is the resulting state Filter judges.
	st *gpucache.NodeState
}

type addedPod struct {
	uid    types.UID
	hold   gpucache.Hold
	blocks bool
}

// build works out st from base and the changes.
func (w *whatIfNode) build() *whatIfNode {
	st := w.base.Clone()
	for _, h := range w.removed {
		st.Add(h, -1)
	}
	for _, a := range w.added {
		if a.blocks {
			for i := range st.Used {
				st.Used[i] = device.FullUnits
			}
			continue
		}
		st.Add(a.hold, 1)
	}
	w.st = st
	return w
}

// with returns a copy of the node's what-if (or a new one from the cache)
// for a change to be made on.
//
// The base counts only the pods of the node that the scheduler's snapshot
// has (see gpucache.Cache.agreed): a pod the scheduler has seen go is no victim.
// The framework changes ni before it calls the extension, so the pod
// being changed counts as in the snapshot.
func (s *cycleState) with(c gpucache.Interface, ni fwk.NodeInfo, changing types.UID) (*whatIfNode, bool) {
	node := ni.Node().Name
	if w := s.whatIf[node]; w != nil {
		return &whatIfNode{base: w.base, removed: w.removed, added: w.added}, true
	}
	base := c.Slot(node).State()
	if alt := c.Agreed(base, ni, changing); alt != nil {
		base = alt
	}
	if base == nil || base.Inv == nil {
		// No inventory: Filter rejects the node whatever its pods.
		return nil, false
	}
	return &whatIfNode{base: base}, true
}

func (s *cycleState) set(node string, w *whatIfNode) {
	if s.whatIf == nil {
		s.whatIf = map[string]*whatIfNode{}
	}
	s.whatIf[node] = w.build()
}

// whatIfFor is the common start of RemovePod and AddPod: the cycle state,
// a copy of the node's what-if to change, the pod and the node; false when
// there is nothing to change (a pod without GPU requests being scheduled,
// or a node without inventory).
func (pl *TesseraGPU) whatIfFor(cs fwk.CycleState, pi fwk.PodInfo, ni fwk.NodeInfo) (*cycleState, *whatIfNode, *v1.Pod, string, bool) {
	s, err := readState(cs)
	if err != nil || s.req.Empty() {
		return nil, nil, nil, "", false
	}
	pod := pi.GetPod()
	w, ok := s.with(pl.cache, ni, pod.UID)
	return s, w, pod, ni.Node().Name, ok
}

// RemovePod takes a pod's GPUs off the node in this copy of the cycle
// state.
func (pl *TesseraGPU) RemovePod(ctx context.Context, cs fwk.CycleState, _ *v1.Pod, pi fwk.PodInfo, ni fwk.NodeInfo) *fwk.Status {
	s, w, pod, node, ok := pl.whatIfFor(cs, pi, ni)
	if !ok {
		return nil
	}
	if i := slices.IndexFunc(w.added, func(a addedPod) bool { return a.uid == pod.UID }); i >= 0 {
		w.added = slices.Delete(slices.Clone(w.added), i, i+1)
		s.set(node, w)
		return nil
	}
	if _, gone := w.removed[pod.UID]; gone {
		return nil
	}
	h, held := pl.cache.HoldOf(pod.UID, node)
	if !held {
		// The cache counts nothing of it here (a pod without GPUs).
		return nil
	}
	// Copied, not changed: other copies of the cycle state share the map.
	removed := maps.Clone(w.removed)
	if removed == nil {
		removed = map[types.UID]gpucache.Hold{}
	}
	removed[pod.UID] = h
	w.removed = removed
	s.set(node, w)
	klog.FromContext(ctx).V(5).Info("What-if: pod's GPUs taken off", "pod", klog.KObj(pod), "node", node)
	return nil
}

// AddPod puts a pod's GPUs on the node in this copy of the cycle state: a
// victim that preemption puts back, or a nominated pod, whose GPUs the
// strategy plans on the node as it would place it.
func (pl *TesseraGPU) AddPod(ctx context.Context, cs fwk.CycleState, _ *v1.Pod, pi fwk.PodInfo, ni fwk.NodeInfo) *fwk.Status {
	s, w, pod, node, ok := pl.whatIfFor(cs, pi, ni)
	if !ok {
		return nil
	}
	if _, gone := w.removed[pod.UID]; gone {
		w.removed = maps.Clone(w.removed)
		delete(w.removed, pod.UID)
		s.set(node, w)
		return nil
	}
	if slices.ContainsFunc(w.added, func(a addedPod) bool { return a.uid == pod.UID }) {
		return nil
	}
	if _, held := pl.cache.HoldOf(pod.UID, node); held {
		// Already counted in the cache's state of the node.
		return nil
	}
	a, gpuPod := pl.plannedHold(s.current(w, node), pod)
	if !gpuPod {
		return nil
	}
	w.added = append(slices.Clone(w.added), a)
	s.set(node, w)
	klog.FromContext(ctx).V(5).Info("What-if: pod's GPUs put on", "pod", klog.KObj(pod), "node", node, "blocksNode", a.blocks)
	return nil
}

// current is the node's state as this copy of the cycle state has it.
func (s *cycleState) current(w *whatIfNode, node string) *gpucache.NodeState {
	if cur := s.whatIf[node]; cur != nil {
		return cur.st
	}
	return w.base
}

// plannedHold plans a pod the cache does not hold on a node's state, as
// Reserve would place it, and returns what it would take; false for a pod
// that asks for no GPU or whose request is invalid (it can never hold any).
func (pl *TesseraGPU) plannedHold(st *gpucache.NodeState, pod *v1.Pod) (addedPod, bool) {
	req, err := gpu.ParsePod(pod)
	if err != nil || req.Empty() {
		return addedPod{}, false
	}
	req.ComparisonOperators = pl.comparisonOperators
	a := addedPod{uid: pod.UID}
	usable, avoid, why := device.Usable(st.Inv, req)
	if why != device.Fits {
		a.blocks = true
		return a, true
	}
	p, ok := device.Plan(st.Inv, st.Used, req, usable, avoid, pl.planStrategy)
	if !ok {
		a.blocks = true
		return a, true
	}
	use, err := podgpu.PeakUse(pod, gpucache.AssignmentOf(st.Inv, req, p))
	if err != nil {
		a.blocks = true
		return a, true
	}
	a.hold = gpucache.Hold{Use: use}
	return a, true
}
