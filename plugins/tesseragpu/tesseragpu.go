// Package tesseragpu is the TesseraGPU scheduler plugin. It places whole,
// multi and fractional GPU requests from the per-GPU inventory that device
// plugins publish as GPUNode resources: PreFilter reads the pod's request
// once, Filter and Score read a lock-free per-node GPU state, Reserve picks
// the exact GPUs and assumes them, and PreBind records the choice on the pod
// in the tessera.io/gpu-assignment annotation for the node to honour.
package tesseragpu

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	configscheme "github.com/tessera-gpu/tessera/config/scheme"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/plugins/tesseradra"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// Name is the plugin's name in the registry and in configuration.
const Name = config.TesseraGPUName

const (
	stateKey fwk.StateKey = "PreFilter" + Name

	// Filter and PreFilter reasons. They end up, node by node, in the
	// pod's FailedScheduling event, so they are short and say what to fix.
	reasonNotSynced    = "gpu inventory not yet synced"
	reasonNoInventory  = "node has no gpu inventory"
	reasonStale        = "gpu inventory is stale"
	reasonUnknownPods  = "node has gpu pods of unknown assignment"
	reasonNoGPUs       = "node has no usable gpus"
	reasonModel        = "no gpu of an allowed model"
	reasonUnhealthy    = "no healthy gpu of an allowed model"
	reasonDeviceTaints = "gpus have untolerated device taints"
	reasonCapacity     = "insufficient gpu capacity"
	reasonDRAModels    = "gpu models are not checked on a node that serves gpus through dra"
)

// TesseraGPU is the GPU placement plugin.
type TesseraGPU struct {
	handle fwk.Handle
	// cache is what the extension points read and write of the GPUs.
	cache gpucache.Interface
	// store is the same cache, for what feeds and watches it: the
	// informers, the NoExecute evictor, the metrics and event hooks.
	store     *gpucache.Cache
	staleness time.Duration
	synced    func() bool
	now       func() time.Time
	waiting   *waitingPods
	// scorer is the scoring strategy of the args, chosen once in New.
	scorer scorer
	// planStrategy is scorer.planStrategy(), read once: Filter asks for it
	// on every node.
	planStrategy device.Strategy
	// comparisonOperators follows the TaintTolerationComparisonOperators
	// gate, so device taints match tolerations exactly as node taints do.
	comparisonOperators bool
	// classes resolves an extended resource to the DeviceClass that maps
	// it, if any (dra.go); nil without DRA.
	classes fwk.DeviceClassResolver
	// draManager reads claims and classes for claimRequest; nil without
	// DRA.
	draManager fwk.SharedDRAManager
	// dra feeds the cache from ResourceSlices and ResourceClaims, and
	// from the allocations TesseraDynamicResources reports.
	dra *draFeed
}

var (
	_ fwk.PreFilterPlugin     = &TesseraGPU{}
	_ fwk.PreFilterExtensions = &TesseraGPU{}
	_ fwk.FilterPlugin        = &TesseraGPU{}
	_ fwk.PreScorePlugin      = &TesseraGPU{}
	_ fwk.ScorePlugin         = &TesseraGPU{}
	_ fwk.ReservePlugin       = &TesseraGPU{}
	_ fwk.PreBindPlugin       = &TesseraGPU{}
	_ fwk.BindPlugin          = &TesseraGPU{}
	_ fwk.EnqueueExtensions   = &TesseraGPU{}
	_ fwk.SignPlugin          = &TesseraGPU{}
)

// Name returns the plugin's name.
func (pl *TesseraGPU) Name() string { return Name }

// cycleState is what PreFilter works out once per pod, and what Reserve
// chose for Bind (or PreBind) to write.
type cycleState struct {
	// req is nil for a pod without GPUs, which only a scorer that asks for
	// it (scorer.preFilter) scores.
	req *device.Request
	// cpu is the pod's CPU request in millicores, for the scorer.
	cpu int64
	now time.Time
	// cycle tells this scheduling cycle's fit memos (gpucache.Slot.Remember) from
	// older ones.
	cycle uint64
	// chosen is set by Reserve.
	chosen assignment.Assignment
	// dra is set when a DeviceClass maps every GPU resource the pod asks
	// for: nodes without a device plugin for them serve it through DRA.
	dra bool
	// claimOnly is set when req is what the pod's ResourceClaims ask of GPU
	// classes (claimRequest): Tessera ranks the DRA nodes and rejects
	// none, since DynamicResources decides what the claims can get.
	claimOnly bool
	// whatIf holds the nodes that PreFilterExtensions changed in this copy
	// of the cycle state: preemption's victims taken off, nominated pods
	// put on. Nil in an ordinary cycle.
	whatIf map[string]*whatIfNode
}

// Clone shares the request, which is never changed after PreFilter, and
// the what-if nodes, which are replaced, never changed.
func (s *cycleState) Clone() fwk.StateData {
	c := *s
	c.whatIf = maps.Clone(s.whatIf)
	return &c
}

func readState(cs fwk.CycleState) (*cycleState, error) {
	d, err := cs.Read(stateKey)
	if err != nil {
		return nil, fmt.Errorf("reading %q from cycle state: %w", stateKey, err)
	}
	s, ok := d.(*cycleState)
	if !ok {
		return nil, fmt.Errorf("%q in cycle state has type %T", stateKey, d)
	}
	return s, nil
}

// gpuRequestSignature is the part of a pod's GPU request that placement
// reads: each container's demand in spec order (init containers marked),
// and the allowed models. Container names are left out: they only label the
// assignment Reserve writes for each pod.
type gpuRequestSignature struct {
	Invalid    string   `json:"invalid,omitempty"`
	Containers []string `json:"containers,omitempty"`
	Models     []string `json:"models,omitempty"`
}

// SignPod lets the scheduler batch consecutive pods that this plugin cannot
// tell apart (opportunistic batching, KEP-5598): Filter and Score read the
// GPU request and model list, the tolerations (device taints), the
// priority (nominated pods of at least that priority hold their GPUs) and
// whatever else the scorer's scores depend on (scorer.signPod). Pods
// differing in any of these get different signatures.
func (pl *TesseraGPU) SignPod(_ context.Context, pod *v1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	var sig gpuRequestSignature
	req, err := gpu.ParsePod(pod)
	switch {
	case err != nil:
		sig.Invalid = err.Error()
	case req != nil:
		for _, c := range req.Containers {
			sig.Containers = append(sig.Containers, fmt.Sprintf("%d/%d/%t", c.Count, c.Units, c.Init))
		}
		sig.Models = slices.Sorted(slices.Values(req.Models))
	}
	out := []fwk.SignFragment{
		{Key: "tessera.io/GPURequest()", Value: sig},
		{Key: fwk.TolerationsSignerName, Value: fwk.TolerationsSigner(pod)},
		// Which nominated pods hold GPUs against this one depends on it.
		{Key: "tessera.io/Priority()", Value: corev1helpers.PodPriority(pod)},
	}
	return append(out, pl.scorer.signPod(pod)...), nil
}

// PreFilter parses and validates the pod's GPU request. Pods that ask for
// no GPU skip the rest of the plugin.
func (pl *TesseraGPU) PreFilter(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, nodes []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	req, err := gpu.ParsePod(pod)
	if err != nil {
		rejections.WithLabelValues("invalid gpu request").Inc()
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, "invalid gpu request: "+err.Error())
	}
	// A pod whose GPUs are ResourceClaims is what its claims ask: the
	// scorer (the fragmentation strategy's workload estimate) sees it so.
	var claims *device.Request
	if req.Empty() {
		claims = pl.claimRequest(pod)
	}
	observed := req
	if claims != nil {
		observed = claims
	}
	cpu, scoreWithoutGPUs := pl.scorer.preFilter(pod, observed)
	if req.Empty() {
		if claims != nil {
			// The device choice on DRA nodes (TesseraDynamicResources)
			// is only as good as the cache: wait for it, as GPU pods do.
			pl.waiting.attempt(pod, pl.cache.Generation())
			if !pl.synced() {
				rejections.WithLabelValues(reasonNotSynced).Inc()
				return nil, fwk.NewStatus(fwk.Unschedulable, reasonNotSynced)
			}
			pl.cache.IndexNodes(nodes)
			cs.Write(stateKey, &cycleState{req: claims, cpu: cpu, now: pl.now(), cycle: cycles.Add(1), claimOnly: true})
			return nil, nil
		}
		if scoreWithoutGPUs {
			pl.cache.IndexNodes(nodes)
			cs.Write(stateKey, &cycleState{cpu: cpu, now: pl.now(), cycle: cycles.Add(1)})
		}
		return nil, fwk.NewStatus(fwk.Skip)
	}
	req.ComparisonOperators = pl.comparisonOperators
	// Record the state this attempt sees before any rejection, so that
	// hints and activation know whether a later change is news to it.
	pl.waiting.attempt(pod, pl.cache.Generation())
	if !pl.synced() {
		rejections.WithLabelValues(reasonNotSynced).Inc()
		return nil, fwk.NewStatus(fwk.Unschedulable, reasonNotSynced)
	}
	// Nodes that serve the pod through DRA are not in the cache: neither
	// the size check nor pruning can speak for them.
	dra := pl.draMapped(req)
	if largest := pl.cache.LargestNode(); req.Whole > largest && !dra {
		rejections.WithLabelValues("larger than any node").Inc()
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable,
			fmt.Sprintf("pod asks for %d whole gpus; the largest gpu node has %d", req.Whole, largest))
	}
	pl.cache.IndexNodes(nodes)
	var res *fwk.PreFilterResult
	if !dra {
		res = pl.prune(pod, req, len(nodes))
	}
	cs.Write(stateKey, &cycleState{req: req, cpu: cpu, now: pl.now(), cycle: cycles.Add(1), dra: dra})
	return res, nil
}

// pruneShare is the largest share of the nodes a PreFilterResult names:
// with more, building the set and looking its names up costs about what
// the Filter calls it saves.
const pruneShare = 4

// prune returns the nodes that have room for the request (see
// gpucache.NodeState.HasRoom), so that Filter and Score never visit the
// others, when they are at least one and at most one in pruneShare of the
// cluster's nodes (of which there are total); nil, for all nodes,
// otherwise. When no node has room, every node is left to Filter, so that
// the pod's FailedScheduling event and kubectl tessera explain give each
// node's own reason.
//
// The framework reports the nodes a PreFilterResult leaves out as
// unresolvable, under the plugin's name, and preemption does not look at
// them. A node is therefore left out only where preemption could not make
// room: when the pod cannot preempt (preemptionPolicy Never), or when no
// pod holding GPUs has a lower priority than it.
func (pl *TesseraGPU) prune(pod *v1.Pod, req *device.Request, total int) *fwk.PreFilterResult {
	if total == 0 || canPreemptGPUs(pod, pl.cache) {
		return nil
	}
	share := 0
	if len(req.Shares) > 0 {
		share = req.Shares[0] // the largest
	}
	names, ok := pl.cache.NodesWithRoom(req.Whole, share, total/pruneShare)
	if !ok || len(names) == 0 {
		return nil
	}
	pruned.Add(float64(total - len(names)))
	return &fwk.PreFilterResult{NodeNames: names}
}

// canPreemptGPUs reports whether preemption could free GPUs for the pod:
// it may preempt, and some pod holding GPUs has a lower priority.
func canPreemptGPUs(pod *v1.Pod, c gpucache.Interface) bool {
	if p := pod.Spec.PreemptionPolicy; p != nil && *p == v1.PreemptNever {
		return false
	}
	lowest, any := c.LowestHolderPriority()
	return any && lowest < corev1helpers.PodPriority(pod)
}

// Filter reports whether the node's GPUs can hold the pod.
func (pl *TesseraGPU) Filter(_ context.Context, cs fwk.CycleState, _ *v1.Pod, ni fwk.NodeInfo) *fwk.Status {
	s, err := readState(cs)
	if err != nil {
		return fwk.AsStatus(err)
	}
	if s.claimOnly {
		return nil
	}
	if s.whatIf != nil {
		if w := s.whatIf[ni.Node().Name]; w != nil {
			// A what-if of preemption or of nominated pods: judged on its
			// own state, and neither memoized nor counted as a rejection.
			_, status := pl.fit(s, w.st)
			return status
		}
	}
	sl := pl.cache.SlotOf(ni)
	st := sl.State()
	if s.dra && (st == nil || st.Inv == nil) && servedByDRA(s.req, ni) {
		return filterDRA(s.req)
	}
	f, status := pl.fit(s, st)
	if status != nil {
		if status.Code() == fwk.Unschedulable {
			if alt := pl.cache.Agreed(st, ni, ""); alt != nil {
				if _, again := pl.fit(s, alt); again == nil {
					// The node is free in the scheduler's snapshot and the
					// cache has not yet seen its pods go. Passing it keeps
					// preemption from taking victims elsewhere; Reserve
					// checks the cache again, and the pod is retried once
					// the cache catches up.
					return nil
				}
			}
		}
		rejections.WithLabelValues(status.Message()).Inc()
		return status
	}
	sl.Remember(s.cycle, f)
	return nil
}

// cycles numbers scheduling cycles. It is shared by every instance of the
// plugin so that a cycle number never means two cycles in one process.
var cycles atomic.Uint64

// fitAgain is fit for Score and Reserve: what Filter found on the node of
// slot sl in this cycle, unless the node's state has changed since.
func (pl *TesseraGPU) fitAgain(s *cycleState, sl *gpucache.Slot) (gpucache.Fit, *fwk.Status) {
	if f, ok := sl.Recall(s.cycle); ok {
		return f, nil
	}
	return pl.fit(s, sl.State())
}

// fit is Filter's verdict plus what Score and Reserve need. It does not
// allocate on the path that admits a node.
func (pl *TesseraGPU) fit(s *cycleState, st *gpucache.NodeState) (gpucache.Fit, *fwk.Status) {
	if st == nil || st.Inv == nil {
		return gpucache.Fit{}, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, reasonNoInventory)
	}
	if st.DRA {
		// A claim's own selectors hold its models; a model list of the
		// pod needs every GPU of the node to be of an allowed model.
		if status := filterDRAState(st, s.req); status != nil && !s.claimOnly {
			return gpucache.Fit{}, status
		}
	} else if st.Inv.Stale(s.now, pl.staleness) {
		return gpucache.Fit{}, fwk.NewStatus(fwk.Unschedulable, reasonStale)
	}
	if st.Unknown > 0 {
		return gpucache.Fit{}, fwk.NewStatus(fwk.Unschedulable, reasonUnknownPods)
	}
	usable, avoid, why := device.Usable(st.Inv, s.req)
	switch why {
	case device.Fits:
	case device.NoDevices, device.NoAllowedModel:
		return gpucache.Fit{}, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, failureReason(why))
	default:
		return gpucache.Fit{}, fwk.NewStatus(fwk.Unschedulable, failureReason(why))
	}
	p, ok := device.Plan(st.Inv, st.Used, s.req, usable, avoid, pl.planStrategy)
	if !ok {
		return gpucache.Fit{}, fwk.NewStatus(fwk.Unschedulable, failureReason(device.Blocked(st.Inv, st.Used, s.req)))
	}
	return gpucache.Fit{State: st, Usable: usable, Avoid: avoid, Placement: p,
		Score: pl.scorer.filterScore(s, st, p, avoid)}, nil
}

// failureReason is the Filter message for a device-model verdict.
func failureReason(why device.Reason) string {
	switch why {
	case device.NoDevices:
		return reasonNoGPUs
	case device.NoAllowedModel:
		return reasonModel
	case device.NoneHealthy:
		return reasonUnhealthy
	case device.Untolerated:
		return reasonDeviceTaints
	default:
		return reasonCapacity
	}
}

// PreScore skips scoring for pods that ask for no GPU.
func (pl *TesseraGPU) PreScore(_ context.Context, cs fwk.CycleState, _ *v1.Pod, _ []fwk.NodeInfo) *fwk.Status {
	if _, err := readState(cs); err != nil {
		return fwk.NewStatus(fwk.Skip)
	}
	pl.scorer.preScore()
	return nil
}

// Score rates the placement the strategy would choose on the node, from
// what Filter found there in this cycle unless the node has changed since.
func (pl *TesseraGPU) Score(_ context.Context, cs fwk.CycleState, _ *v1.Pod, ni fwk.NodeInfo) (int64, *fwk.Status) {
	s, err := readState(cs)
	if err != nil {
		return 0, fwk.AsStatus(err)
	}
	sl := pl.cache.SlotOf(ni)
	if s.req.Empty() {
		// Only a scorer that scores pods without GPUs gets here.
		return pl.scorer.score(s, gpucache.Fit{State: sl.State()}, ni), nil
	}
	if s.claimOnly {
		if st := sl.State(); st == nil || !st.DRA {
			// Claims are served from ResourceSlices only, and Tessera
			// reads no GPU of this node.
			return 0, nil
		}
	}
	f, status := pl.fitAgain(s, sl)
	if status != nil {
		// The node changed since Filter (or, for claims, Tessera sees no
		// room where DynamicResources found some); rank it last rather
		// than fail the cycle, and let Reserve have the final word.
		return 0, nil
	}
	return pl.scorer.score(s, f, ni), nil
}

// NormalizeScore maps the scores onto 0..MaxNodeScore as the scorer
// ranks them, so that the GPU ranking keeps its weight beside other
// plugins even when nodes differ by a few percent.
func (pl *TesseraGPU) NormalizeScore(_ context.Context, _ fwk.CycleState, _ *v1.Pod, scores fwk.NodeScoreList) *fwk.Status {
	if len(scores) > 0 {
		pl.scorer.normalize(scores)
	}
	return nil
}

// ScoreExtensions returns the plugin, which normalizes its scores.
func (pl *TesseraGPU) ScoreExtensions() fwk.ScoreExtensions { return pl }

// Reserve picks the exact GPUs on the chosen node and assumes them in the
// cache, so the next pod's Filter already sees them taken.
func (pl *TesseraGPU) Reserve(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, node string) *fwk.Status {
	s, err := readState(cs)
	if err != nil || s.req.Empty() {
		// PreFilter skipped the pod: it asks for no GPU.
		return nil
	}
	sl := pl.cache.Slot(node)
	if s.claimOnly || pl.leftToDRA(s, sl.State(), node) {
		// DynamicResources allocates the devices and records them in the
		// pod's claim; the cache counts them once the claim shows them.
		pl.waiting.done(pod.UID)
		draPlacements.WithLabelValues(requestKind(s.req)).Inc()
		klog.FromContext(ctx).V(3).Info("GPUs left to DRA", "pod", klog.KObj(pod), "node", node)
		return nil
	}
	f, status := pl.fitAgain(s, sl)
	if status != nil {
		return status
	}
	a := gpucache.AssignmentOf(f.State.Inv, s.req, pl.scorer.placement(s, f, node))
	if err := pl.cache.Assume(pod, node, a); err != nil {
		return fwk.NewStatus(fwk.Unschedulable, "gpus changed during scheduling: "+err.Error())
	}
	s.chosen = a
	pl.waiting.done(pod.UID)
	placements.WithLabelValues(pl.scorer.name(), requestKind(s.req)).Inc()
	klog.FromContext(ctx).V(3).Info("Reserved GPUs", "pod", klog.KObj(pod), "node", node, "assignment", a.String())
	return nil
}

func requestKind(r *device.Request) string {
	switch {
	case r.Whole > 0 && len(r.Shares) > 0:
		return "mixed"
	case r.Whole > 0:
		return "whole"
	default:
		return "share"
	}
}

// Unreserve releases the GPUs Reserve assumed.
func (pl *TesseraGPU) Unreserve(_ context.Context, cs fwk.CycleState, pod *v1.Pod, _ string) {
	if s, err := readState(cs); err == nil {
		s.chosen = nil
	}
	pl.cache.Forget(pod.UID)
}

// PreBindPreFlight skips PreBind for pods that ask for no GPU.
func (pl *TesseraGPU) PreBindPreFlight(_ context.Context, cs fwk.CycleState, _ *v1.Pod, _ string) (*fwk.PreBindPreFlightResult, *fwk.Status) {
	if s, err := readState(cs); err != nil || s.chosen == nil {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	return &fwk.PreBindPreFlightResult{AllowParallel: true}, nil
}

// PreBind writes the chosen GPUs onto the pod before it is bound, so the
// node's device plugin can hand exactly those to the containers. It is for
// profiles that bind with another plugin and enable TesseraGPU at preBind
// instead: one more API write per pod. The shipped profile binds with
// TesseraGPU and leaves it out of preBind; a profile that enables it at
// both writes the assignment twice, to the same effect.
func (pl *TesseraGPU) PreBind(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, _ string) *fwk.Status {
	s, err := readState(cs)
	if err != nil || s.chosen == nil {
		return nil
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{assignment.Annotation: s.chosen.String()}},
	})
	if err != nil {
		return fwk.AsStatus(err)
	}
	_, err = pl.handle.ClientSet().CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1PatchOptions)
	if err != nil {
		return fwk.AsStatus(fmt.Errorf("recording gpu assignment on pod %s: %w", klog.KObj(pod), err))
	}
	return nil
}

// Bind binds a GPU pod with its assignment in the Binding's annotations,
// which the apiserver copies onto the pod in the same write that sets its
// node: one API call instead of a patch and a binding, and no moment at
// which the pod is bound without its GPUs recorded. Pods without GPUs are
// left to the next bind plugin.
func (pl *TesseraGPU) Bind(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, node string) *fwk.Status {
	s, err := readState(cs)
	if err != nil || s.chosen == nil {
		return fwk.NewStatus(fwk.Skip)
	}
	b := &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
			Annotations: map[string]string{assignment.Annotation: s.chosen.String()}},
		Target: v1.ObjectReference{Kind: "Node", Name: node},
	}
	if err := pl.handle.ClientSet().CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{}); err != nil {
		return fwk.AsStatus(fmt.Errorf("binding pod %s with its gpu assignment: %w", klog.KObj(pod), err))
	}
	return nil
}

// New builds the plugin: it decodes and validates its args, starts the
// GPUNode informer and feeds the cache from it and from the pod informer.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle, fts feature.Features) (*TesseraGPU, error) {
	args, err := configscheme.DecodeTesseraGPUArgs(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	logger := klog.FromContext(ctx).WithValues("plugin", Name)
	registerMetrics()
	pl := newPlugin(logger, args, fts)
	pl.handle = h
	if m := h.SharedDRAManager(); m != nil {
		pl.classes, pl.draManager = m.DeviceClassResolver(), m
	}
	// Every event the plugin records goes through one gate, which watch
	// opens once the scheduler records events (eventgate.go).
	gate := newEventGate(h.EventRecorder())
	pl.store.Warn = func(regarding runtime.Object, reason, note string) {
		gate.record(regarding, v1.EventTypeWarning, reason, note)
	}
	pl.store.Normal = func(regarding runtime.Object, reason, note string) {
		gate.record(regarding, v1.EventTypeNormal, reason, note)
	}
	// The evictor hooks into the cache before the informers feed it.
	evict := newEvictor(pl.store, h.ClientSet(), pl.store.Warn, time.Now)
	synced, err := pl.watch(ctx, h, gate)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	pl.synced = synced
	// TesseraDynamicResources, where the profile runs it, asks for the
	// devices to list first and reports pending allocations.
	tesseradra.Provide(ctx, h, pl)
	inventory.track(ctx, pl.store)
	go evict.run(klog.NewContext(ctx, logger.WithName("device-taint-eviction")))
	go pl.activateLoop(klog.NewContext(ctx, logger), h)
	return pl, nil
}

func newPlugin(logger klog.Logger, args *config.TesseraGPUArgs, fts feature.Features) *TesseraGPU {
	store := gpucache.New(logger, args.InventoryStaleness.Duration)
	pl := &TesseraGPU{
		cache:               store,
		store:               store,
		waiting:             newWaitingPods(),
		staleness:           args.InventoryStaleness.Duration,
		synced:              func() bool { return true },
		now:                 time.Now,
		comparisonOperators: fts.EnableTaintTolerationComparisonOperators,
		dra:                 newDRAFeed(store),
	}
	pl.store.Changed = pl.waiting.notify
	pl.scorer = newScorer(args, pl.cache, func() fwk.Handle { return pl.handle })
	pl.planStrategy = pl.scorer.planStrategy()
	return pl
}

// handlers adapts cache updates to informer callbacks.
func (pl *TesseraGPU) podHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { pl.onPod(obj) },
		UpdateFunc: func(_, obj any) { pl.onPod(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*v1.Pod); ok {
				pl.store.RemovePod(pod.UID)
				pl.waiting.done(pod.UID)
			}
		},
	}
}

func (pl *TesseraGPU) onPod(obj any) {
	if pod, ok := obj.(*v1.Pod); ok {
		pl.store.UpsertPod(pod)
	}
}

func (pl *TesseraGPU) gpuNodeHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { pl.onGPUNode(obj) },
		UpdateFunc: func(_, obj any) { pl.onGPUNode(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if gn, ok := obj.(*v1alpha1.GPUNode); ok {
				pl.store.DeleteGPUNode(gn.Name)
			}
		},
	}
}

func (pl *TesseraGPU) onGPUNode(obj any) {
	if gn, ok := obj.(*v1alpha1.GPUNode); ok {
		pl.store.SetGPUNode(gn)
	}
}
