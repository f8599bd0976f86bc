// Package gputaints is TesseraTaintToleration, the GPU-aware replacement for
// the in-tree TaintToleration plugin. Node taints behave exactly as upstream,
// with two GPU rules on top: a pod that requests a GPU resource tolerates the
// GPU-node taint without saying so, and with guardGPUNodes a pod that
// requests no GPU stays off GPU nodes even when the taint is missing.
package gputaints

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	v1helper "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/helper"
	"k8s.io/kubernetes/pkg/scheduler/util"

	"github.com/tessera-gpu/tessera/config"
	configscheme "github.com/tessera-gpu/tessera/config/scheme"
)

// Name is the plugin's name in the registry and in configuration.
const Name = config.TesseraTaintTolerationName

const (
	stateKey fwk.StateKey = "PreFilter" + Name

	// ReasonUntolerated is the Filter reason for an untolerated node taint.
	ReasonUntolerated = "node(s) had untolerated taint(s)"
	// ReasonGuarded is the Filter reason for a non-GPU pod on a GPU node.
	ReasonGuarded = "node(s) are reserved for gpu pods"
)

// TaintToleration filters and scores nodes by their taints.
type TaintToleration struct {
	taintKey            string
	resources           []v1.ResourceName
	guard               bool
	comparisonOperators bool
}

var (
	_ fwk.PreFilterPlugin   = &TaintToleration{}
	_ fwk.FilterPlugin      = &TaintToleration{}
	_ fwk.PreScorePlugin    = &TaintToleration{}
	_ fwk.ScorePlugin       = &TaintToleration{}
	_ fwk.EnqueueExtensions = &TaintToleration{}
	_ fwk.SignPlugin        = &TaintToleration{}
)

// Name returns the plugin's name.
func (pl *TaintToleration) Name() string { return Name }

// state is what PreFilter works out once per pod.
type state struct {
	// tolerations are the pod's own plus the implied GPU-node ones.
	tolerations []v1.Toleration
	// preferTolerations are those that can match PreferNoSchedule taints.
	preferTolerations []v1.Toleration
	// gpuPod is true when the pod requests a GPU resource.
	gpuPod bool
	// toleratesGPUTaint is true when the pod's own tolerations cover the
	// GPU-node taint, which lets a non-GPU pod past the guard.
	toleratesGPUTaint bool
}

// Clone shares the state: it is never changed after PreFilter.
func (s *state) Clone() fwk.StateData { return s }

// PreFilter works out the pod's effective tolerations.
func (pl *TaintToleration) PreFilter(_ context.Context, cs fwk.CycleState, pod *v1.Pod, _ []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	cs.Write(stateKey, pl.computeState(pod))
	return nil, nil
}

func (pl *TaintToleration) computeState(pod *v1.Pod) *state {
	s := &state{gpuPod: pl.requestsGPU(pod), tolerations: pod.Spec.Tolerations}
	s.toleratesGPUTaint = toleratesKey(pod.Spec.Tolerations, pl.taintKey)
	if s.gpuPod {
		// The implied toleration covers scheduling only, never NoExecute:
		// an evicting GPU-node taint still has to be tolerated explicitly.
		s.tolerations = append(append([]v1.Toleration(nil), pod.Spec.Tolerations...),
			v1.Toleration{Key: pl.taintKey, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoSchedule},
			v1.Toleration{Key: pl.taintKey, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectPreferNoSchedule})
	}
	for _, t := range s.tolerations {
		if t.Effect == "" || t.Effect == v1.TaintEffectPreferNoSchedule {
			s.preferTolerations = append(s.preferTolerations, t)
		}
	}
	return s
}

// SignPod lets the scheduler batch pods this plugin cannot tell apart:
// Filter and Score read only the pod's tolerations and whether it asks for
// a GPU resource (which implies the GPU-node toleration).
func (pl *TaintToleration) SignPod(_ context.Context, pod *v1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	return []fwk.SignFragment{
		{Key: fwk.TolerationsSignerName, Value: fwk.TolerationsSigner(pod)},
		{Key: "tessera.io/RequestsGPU()", Value: pl.requestsGPU(pod)},
	}, nil
}

// toleratesKey reports whether some toleration covers a NoSchedule taint
// with the key, whatever its value: the guard applies where the taint is
// missing, so there is no value to compare; on nodes that carry the taint,
// Filter has already matched the real taint.
func toleratesKey(tolerations []v1.Toleration, key string) bool {
	for _, t := range tolerations {
		if t.Effect != "" && t.Effect != v1.TaintEffectNoSchedule {
			continue
		}
		if t.Key == key || (t.Key == "" && t.Operator == v1.TolerationOpExists) {
			return true
		}
	}
	return false
}

// PreFilterExtensions returns nil: the state does not depend on other pods.
func (pl *TaintToleration) PreFilterExtensions() fwk.PreFilterExtensions { return nil }

func (pl *TaintToleration) requestsGPU(pod *v1.Pod) bool {
	has := func(cs []v1.Container) bool {
		for i := range cs {
			for _, r := range pl.resources {
				if q, ok := cs[i].Resources.Limits[r]; ok && !q.IsZero() {
					return true
				}
				if q, ok := cs[i].Resources.Requests[r]; ok && !q.IsZero() {
					return true
				}
			}
		}
		return false
	}
	return has(pod.Spec.Containers) || has(pod.Spec.InitContainers)
}

// isGPUNode reports whether the node advertises a GPU resource or carries the
// GPU-node taint.
func (pl *TaintToleration) isGPUNode(node *v1.Node) bool {
	for _, r := range pl.resources {
		if q, ok := node.Status.Allocatable[r]; ok && !q.IsZero() {
			return true
		}
		if q, ok := node.Status.Capacity[r]; ok && !q.IsZero() {
			return true
		}
	}
	for i := range node.Spec.Taints {
		if node.Spec.Taints[i].Key == pl.taintKey {
			return true
		}
	}
	return false
}

func getState(cs fwk.CycleState) (*state, error) {
	d, err := cs.Read(stateKey)
	if err != nil {
		return nil, fmt.Errorf("reading %q from cycle state: %w", stateKey, err)
	}
	s, ok := d.(*state)
	if !ok {
		return nil, fmt.Errorf("%q in cycle state has type %T", stateKey, d)
	}
	return s, nil
}

// Filter rejects nodes with untolerated NoSchedule/NoExecute taints and,
// with the guard on, GPU nodes for pods that request no GPU.
func (pl *TaintToleration) Filter(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, ni fwk.NodeInfo) *fwk.Status {
	s, err := getState(cs)
	if err != nil {
		return fwk.AsStatus(err)
	}
	node := ni.Node()
	logger := klog.FromContext(ctx)
	if taint, untolerated := v1helper.FindMatchingUntoleratedTaint(logger, node.Spec.Taints, s.tolerations,
		helper.DoNotScheduleTaintsFilterFunc(), pl.comparisonOperators); untolerated {
		logger.V(4).Info("Node has an untolerated taint", "node", klog.KObj(node), "pod", klog.KObj(pod), "taint", taint)
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ReasonUntolerated)
	}
	if pl.guard && !s.gpuPod && !s.toleratesGPUTaint && pl.isGPUNode(node) {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ReasonGuarded)
	}
	return nil
}

// PreScore is a no-op: PreFilter already wrote the tolerations Score needs.
func (pl *TaintToleration) PreScore(context.Context, fwk.CycleState, *v1.Pod, []fwk.NodeInfo) *fwk.Status {
	return nil
}

// Score counts the node's untolerated PreferNoSchedule taints; fewer is better.
func (pl *TaintToleration) Score(ctx context.Context, cs fwk.CycleState, _ *v1.Pod, ni fwk.NodeInfo) (int64, *fwk.Status) {
	s, err := getState(cs)
	if err != nil {
		return 0, fwk.AsStatus(err)
	}
	taints := ni.Node().Spec.Taints
	var n int64
	for i := range taints {
		if taints[i].Effect == v1.TaintEffectPreferNoSchedule &&
			!v1helper.TolerationsTolerateTaint(klog.FromContext(ctx), s.preferTolerations, &taints[i], pl.comparisonOperators) {
			n++
		}
	}
	return n, nil
}

// NormalizeScore maps taint counts onto 0..MaxNodeScore, fewest taints highest.
func (pl *TaintToleration) NormalizeScore(_ context.Context, _ fwk.CycleState, _ *v1.Pod, scores fwk.NodeScoreList) *fwk.Status {
	return helper.DefaultNormalizeScore(fwk.MaxNodeScore, true, scores)
}

// ScoreExtensions returns the plugin itself, which normalizes its scores.
func (pl *TaintToleration) ScoreExtensions() fwk.ScoreExtensions { return pl }

// EventsToRegister requeues pods when a node appears or its taints or
// advertised resources change.
func (pl *TaintToleration) EventsToRegister(context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		{Event: fwk.ClusterEvent{Resource: fwk.Node, ActionType: fwk.Add | fwk.UpdateNodeTaint | fwk.UpdateNodeAllocatable}, QueueingHintFn: pl.afterNodeChange},
		{Event: fwk.ClusterEvent{Resource: fwk.TargetPod, ActionType: fwk.UpdatePodToleration}},
	}, nil
}

// afterNodeChange queues the pod when the changed node now passes the
// filter and did not before.
func (pl *TaintToleration) afterNodeChange(logger klog.Logger, pod *v1.Pod, oldObj, newObj interface{}) (fwk.QueueingHint, error) {
	oldNode, newNode, err := util.As[*v1.Node](oldObj, newObj)
	if err != nil {
		return fwk.Queue, err
	}
	s := pl.computeState(pod)
	if pl.admits(logger, s, newNode) && (oldNode == nil || !pl.admits(logger, s, oldNode)) {
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}

func (pl *TaintToleration) admits(logger klog.Logger, s *state, node *v1.Node) bool {
	if _, untolerated := v1helper.FindMatchingUntoleratedTaint(logger, node.Spec.Taints, s.tolerations,
		helper.DoNotScheduleTaintsFilterFunc(), pl.comparisonOperators); untolerated {
		return false
	}
	return !(pl.guard && !s.gpuPod && !s.toleratesGPUTaint && pl.isGPUNode(node))
}

// New builds the plugin from its args and the scheduler's feature gates
// (frameworkruntime.FactoryAdapter hands them over, as it does to in-tree
// plugins).
func New(_ context.Context, obj runtime.Object, _ fwk.Handle, fts feature.Features) (*TaintToleration, error) {
	args, err := configscheme.DecodeTesseraTaintTolerationArgs(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return newPlugin(args, fts), nil
}

func newPlugin(args *config.TesseraTaintTolerationArgs, fts feature.Features) *TaintToleration {
	pl := &TaintToleration{
		taintKey:            args.GPUNodeTaintKey,
		guard:               args.GuardGPUNodes,
		comparisonOperators: fts.EnableTaintTolerationComparisonOperators,
	}
	for _, r := range args.GPUResourceNames {
		pl.resources = append(pl.resources, v1.ResourceName(r))
	}
	return pl
}
