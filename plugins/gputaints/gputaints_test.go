package gputaints

import (
	"context"
	"encoding/json"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"
	st "k8s.io/kubernetes/pkg/scheduler/testing"

	configscheme "github.com/tessera-gpu/tessera/config/scheme"
)

var gpuTaint = v1.Taint{Key: "nvidia.com/gpu", Value: "present", Effect: v1.TaintEffectNoSchedule}

func node(name string, gpus int64, taints ...v1.Taint) fwk.NodeInfo {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{Taints: taints}}
	if gpus > 0 {
		n.Status.Allocatable = v1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(gpus, resource.DecimalSI)}
	}
	ni := framework.NewNodeInfo()
	ni.SetNode(n)
	return ni
}

func pod(res v1.ResourceName, tolerations ...v1.Toleration) *v1.Pod {
	p := &v1.Pod{Spec: v1.PodSpec{Containers: []v1.Container{{Name: "c"}}, Tolerations: tolerations}}
	if res != "" {
		p.Spec.Containers[0].Resources.Limits = v1.ResourceList{res: resource.MustParse("1")}
	}
	return p
}

func TestFilter(t *testing.T) {
	tolerateGPU := v1.Toleration{Key: "nvidia.com/gpu", Operator: v1.TolerationOpExists}
	other := v1.Taint{Key: "dedicated", Value: "infra", Effect: v1.TaintEffectNoSchedule}
	evict := v1.Taint{Key: "nvidia.com/gpu", Value: "broken", Effect: v1.TaintEffectNoExecute}
	tier5 := v1.Taint{Key: "tier", Value: "5", Effect: v1.TaintEffectNoSchedule}
	tierGt3 := v1.Toleration{Key: "tier", Operator: v1.TolerationOpGt, Value: "3", Effect: v1.TaintEffectNoSchedule}
	tests := []struct {
		name  string
		guard bool
		// fts are the scheduler's feature gates the plugin is built with.
		fts  feature.Features
		pod  *v1.Pod
		node fwk.NodeInfo
		want string
	}{
		{name: "gpu pod tolerates gpu taint implicitly", pod: pod("nvidia.com/gpu"), node: node("n", 8, gpuTaint)},
		{name: "share pod tolerates gpu taint implicitly", pod: pod("tessera.io/gpu-percent"), node: node("n", 8, gpuTaint)},
		{name: "cpu pod kept off tainted gpu node", pod: pod(""), node: node("n", 8, gpuTaint), want: ReasonUntolerated},
		{name: "cpu pod that tolerates may go", pod: pod("", tolerateGPU), node: node("n", 8, gpuTaint)},
		{name: "gpu pod still needs other tolerations", pod: pod("nvidia.com/gpu"), node: node("n", 8, gpuTaint, other), want: ReasonUntolerated},
		{name: "implicit toleration does not cover NoExecute", pod: pod("nvidia.com/gpu"), node: node("n", 8, evict), want: ReasonUntolerated},
		{name: "cpu pod on untainted gpu node without guard", pod: pod(""), node: node("n", 8)},
		{name: "guard keeps cpu pod off untainted gpu node", guard: true, pod: pod(""), node: node("n", 8), want: ReasonGuarded},
		{name: "guard lets tolerating cpu pod in", guard: true, pod: pod("", tolerateGPU), node: node("n", 8)},
		{name: "guard accepts an Equal toleration of the usual value", guard: true,
			pod: pod("", v1.Toleration{Key: "nvidia.com/gpu", Operator: v1.TolerationOpEqual, Value: "present", Effect: v1.TaintEffectNoSchedule}), node: node("n", 8)},
		{name: "guard ignores a NoExecute-only toleration", guard: true,
			pod: pod("", v1.Toleration{Key: "nvidia.com/gpu", Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute}), node: node("n", 8), want: ReasonGuarded},
		{name: "guard ignores cpu nodes", guard: true, pod: pod(""), node: node("n", 0)},
		{name: "guard lets gpu pods in", guard: true, pod: pod("nvidia.com/gpu"), node: node("n", 8)},
		// Comparison operators follow the gate the framework hands over.
		{name: "Gt toleration with comparison operators", fts: feature.Features{EnableTaintTolerationComparisonOperators: true},
			pod: pod("", tierGt3), node: node("n", 0, tier5)},
		{name: "Gt toleration without comparison operators", pod: pod("", tierGt3), node: node("n", 0, tier5), want: ReasonUntolerated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := configscheme.DefaultTesseraTaintTolerationArgs()
			args.GuardGPUNodes = tt.guard
			pl := newPlugin(args, tt.fts)
			cs := framework.NewCycleState()
			if _, st := pl.PreFilter(context.Background(), cs, tt.pod, nil); !st.IsSuccess() {
				t.Fatal(st)
			}
			st := pl.Filter(context.Background(), cs, tt.pod, tt.node)
			if st.Message() != tt.want {
				t.Errorf("Filter = %v, want %q", st, tt.want)
			}
			if tt.want != "" && st.Code() != fwk.UnschedulableAndUnresolvable {
				t.Errorf("code %v", st.Code())
			}
			// The queueing hint must agree with Filter.
			hint, _ := pl.afterNodeChange(klog.Background(), tt.pod, nil, tt.node.Node())
			if (hint == fwk.Queue) != (tt.want == "") {
				t.Errorf("hint %v disagrees with Filter %v", hint, st)
			}
		})
	}
}

func TestScore(t *testing.T) {
	prefer := v1.Taint{Key: "nvidia.com/gpu", Effect: v1.TaintEffectPreferNoSchedule}
	soft := v1.Taint{Key: "spot", Effect: v1.TaintEffectPreferNoSchedule}
	pl := newPlugin(configscheme.DefaultTesseraTaintTolerationArgs(), feature.Features{})
	score := func(p *v1.Pod, ni fwk.NodeInfo) int64 {
		cs := framework.NewCycleState()
		pl.PreFilter(context.Background(), cs, p, nil)
		s, st := pl.Score(context.Background(), cs, p, ni)
		if !st.IsSuccess() {
			t.Fatal(st)
		}
		return s
	}
	if s := score(pod("nvidia.com/gpu"), node("n", 8, prefer, soft)); s != 1 {
		t.Errorf("gpu pod counts %d untolerated soft taints, want 1 (spot)", s)
	}
	if s := score(pod(""), node("n", 8, prefer, soft)); s != 2 {
		t.Errorf("cpu pod counts %d, want 2", s)
	}
	scores := fwk.NodeScoreList{{Name: "a", Score: 0}, {Name: "b", Score: 2}}
	pl.NormalizeScore(context.Background(), nil, nil, scores)
	if scores[0].Score != fwk.MaxNodeScore || scores[1].Score != 0 {
		t.Errorf("normalized %v", scores)
	}
}

// TestSignPod: the signature follows the tolerations and whether the pod
// asks for a GPU, which are all Filter and Score read of the pod.
func TestSignPod(t *testing.T) {
	pl := newPlugin(configscheme.DefaultTesseraTaintTolerationArgs(), feature.Features{})
	sign := func(p *v1.Pod) string {
		frags, status := pl.SignPod(context.Background(), p)
		if !status.IsSuccess() {
			t.Fatal(status)
		}
		b, _ := json.Marshal(frags)
		return string(b)
	}
	gpuPod := st.MakePod().Name("a").Req(map[v1.ResourceName]string{"nvidia.com/gpu": "1"}).Obj()
	otherGPUPod := st.MakePod().Name("b").Label("x", "y").Req(map[v1.ResourceName]string{"nvidia.com/gpu": "2"}).Obj()
	cpuPod := st.MakePod().Name("c").Obj()
	tolerating := st.MakePod().Name("d").Req(map[v1.ResourceName]string{"nvidia.com/gpu": "1"}).
		Toleration("dedicated").Obj()
	if sign(gpuPod) != sign(otherGPUPod) {
		t.Error("two GPU pods with the same tolerations have different signatures")
	}
	if sign(gpuPod) == sign(cpuPod) {
		t.Error("a GPU pod and a CPU pod share a signature; only the GPU pod tolerates the GPU-node taint")
	}
	if sign(gpuPod) == sign(tolerating) {
		t.Error("pods with different tolerations share a signature")
	}
}
