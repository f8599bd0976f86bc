package tesseragpu

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// whatIfStep is one PreFilterExtensions call: remove or add pod.
type whatIfStep struct {
	remove bool
	pod    *v1.Pod
}

func TestPreFilterExtensions(t *testing.T) {
	mixed := gpuNode("mixed", 4, "H100")
	mixed.Status.GPUs[2].Model, mixed.Status.GPUs[3].Model = "A100", "A100"
	tainted := gpuNode("tainted", 2, "H100")
	tainted.Spec.DeviceTaints = []v1alpha1.GPUDeviceTaint{{UUID: uuid("tainted", 0),
		DeviceTaint: v1alpha1.DeviceTaint{Key: "maint", Effect: v1.TaintEffectNoSchedule}}}
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 2, "H100"), gpuNode("s", 1, "H100"), mixed, tainted, gpuNode("b", 4, "H100"))
	victims := map[string]*v1.Pod{
		"a-both":   holds("a-both", "a", 100, 0, 1),
		"s-60":     holds("s-60", "s", 60, 0),
		"mixed-h0": holds("mixed-h0", "mixed", 100, 0),
		"mixed-h1": holds("mixed-h1", "mixed", 100, 1),
		"mixed-a":  holds("mixed-a", "mixed", 100, 2, 3),
		"taint-1":  holds("taint-1", "tainted", 100, 1),
		"b-1":      holds("b-1", "b", 100, 0),
		"b-2":      holds("b-2", "b", 100, 1),
	}
	for _, p := range victims {
		pl.store.UpsertPod(p)
	}
	nominated := makePod("nominated", whole("3"))
	tests := []struct {
		name     string
		pod      *v1.Pod
		node     string
		steps    []whatIfStep
		wantCode fwk.Code
		wantMsg  string
	}{
		{name: "whole: full node", pod: makePod("p", whole("2")), node: "a", wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "whole: victim removed", pod: makePod("p", whole("2")), node: "a",
			steps: []whatIfStep{{remove: true, pod: victims["a-both"]}}, wantCode: fwk.Success},
		{name: "whole: victim put back", pod: makePod("p", whole("2")), node: "a",
			steps:    []whatIfStep{{remove: true, pod: victims["a-both"]}, {pod: victims["a-both"]}},
			wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "whole: removed twice counts once", pod: makePod("p", whole("2")), node: "a",
			steps:    []whatIfStep{{remove: true, pod: victims["a-both"]}, {remove: true, pod: victims["a-both"]}, {pod: victims["a-both"]}},
			wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "share: victim removed", pod: makePod("p", percent("60")), node: "s",
			steps: []whatIfStep{{remove: true, pod: victims["s-60"]}}, wantCode: fwk.Success},
		{name: "share: full", pod: makePod("p", percent("60")), node: "s", wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "model: victim of another model frees nothing", pod: makePod("p", whole("2"), annotate(gpu.ModelsAnnotation, "H100")), node: "mixed",
			steps:    []whatIfStep{{remove: true, pod: victims["mixed-a"]}},
			wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "model: victims of the model", pod: makePod("p", whole("2"), annotate(gpu.ModelsAnnotation, "H100")), node: "mixed",
			steps:    []whatIfStep{{remove: true, pod: victims["mixed-h0"]}, {remove: true, pod: victims["mixed-h1"]}},
			wantCode: fwk.Success},
		{name: "device taint: freed gpu is tainted", pod: makePod("p", whole("2")), node: "tainted",
			steps:    []whatIfStep{{remove: true, pod: victims["taint-1"]}},
			wantCode: fwk.Unschedulable, wantMsg: reasonDeviceTaints},
		{name: "device taint: tolerated", pod: makePod("p", whole("2"), tolerate("maint")), node: "tainted",
			steps: []whatIfStep{{remove: true, pod: victims["taint-1"]}}, wantCode: fwk.Success},
		{name: "nominated pod leaves room", pod: makePod("p", whole("1")), node: "b",
			steps: []whatIfStep{{pod: makePod("nom", whole("1"))}}, wantCode: fwk.Success},
		{name: "nominated pod that fits leaves too little", pod: makePod("p", whole("2")), node: "b",
			steps: []whatIfStep{{pod: makePod("nom", whole("1"))}}, wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "nominated pod waiting for its victims blocks the node", pod: makePod("p", whole("1")), node: "b",
			steps: []whatIfStep{{pod: nominated}}, wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "nominated pod fits once victims are off", pod: makePod("p", whole("1")), node: "b",
			steps:    []whatIfStep{{remove: true, pod: victims["b-1"]}, {remove: true, pod: victims["b-2"]}, {pod: nominated}},
			wantCode: fwk.Success},
		{name: "nominated pod removed again", pod: makePod("p", whole("2")), node: "b",
			steps: []whatIfStep{{pod: nominated}, {remove: true, pod: nominated}}, wantCode: fwk.Success},
		{name: "pods without gpus change nothing", pod: makePod("p", whole("2")), node: "a",
			steps:    []whatIfStep{{remove: true, pod: makePod("cpu", onNode("a"))}, {pod: makePod("cpu2")}},
			wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, st := preFilter(t, pl, tt.pod)
			if !st.IsSuccess() {
				t.Fatalf("PreFilter: %v", st)
			}
			ni := snapshotNode(pl, tt.node)
			before := pl.Filter(context.Background(), cs, tt.pod, ni)
			whatIf := cs.Clone()
			for _, step := range tt.steps {
				pi, err := framework.NewPodInfo(step.pod)
				if err != nil {
					t.Fatal(err)
				}
				// The framework changes the NodeInfo first, then calls
				// the extension.
				if step.remove {
					_ = ni.RemovePod(klog.Background(), step.pod)
					st = pl.RemovePod(context.Background(), whatIf, tt.pod, pi, ni)
				} else {
					ni.AddPodInfo(pi)
					st = pl.AddPod(context.Background(), whatIf, tt.pod, pi, ni)
				}
				if !st.IsSuccess() {
					t.Fatalf("step %+v: %v", step, st)
				}
			}
			st = pl.Filter(context.Background(), whatIf, tt.pod, ni)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Errorf("Filter after what-if = %v %q, want %v %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
			// The what-if stays in its copy of the cycle state: the
			// original, and the cache, are as before.
			if again := pl.Filter(context.Background(), cs, tt.pod, snapshotNode(pl, tt.node)); again.Code() != before.Code() || again.Message() != before.Message() {
				t.Errorf("Filter on the original state = %v, was %v", again, before)
			}
		})
	}
}

// TestWhatIfCopiesAreIndependent checks that changes made on one copy of
// the cycle state, as preemption makes them per candidate node, do not
// reach another copy taken before.
func TestWhatIfCopiesAreIndependent(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("b", 4, "H100"))
	b1, b2 := holds("b-1", "b", 100, 0), holds("b-2", "b", 100, 1)
	pl.store.UpsertPod(b1)
	pl.store.UpsertPod(b2)
	pod := makePod("p", whole("4"))
	cs, _ := preFilter(t, pl, pod)
	ni := snapshotNode(pl, "b")
	remove := func(cs fwk.CycleState, p *v1.Pod) {
		pi, _ := framework.NewPodInfo(p)
		_ = ni.RemovePod(klog.Background(), p)
		if st := pl.RemovePod(context.Background(), cs, pod, pi, ni); !st.IsSuccess() {
			t.Fatal(st)
		}
	}
	remove(cs, b1)
	first := cs.Clone()
	remove(cs, b2)
	if st := pl.Filter(context.Background(), cs, pod, ni); !st.IsSuccess() {
		t.Errorf("both victims off: Filter = %v, want success", st)
	}
	if st := pl.Filter(context.Background(), first, pod, ni); st.Code() != fwk.Unschedulable {
		t.Errorf("copy taken with one victim off: Filter = %v, want unschedulable", st)
	}
}

// TestFilterWhenCacheLagsSnapshot covers the moment after a pod has gone
// in which the scheduler's snapshot no longer has it and the plugin's
// cache still counts it: Filter passes the node, so that preemption does
// not look for victims elsewhere, and Reserve, which checks the cache,
// refuses until the cache has caught up.
func TestFilterWhenCacheLagsSnapshot(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 2, "H100"))
	gone := holds("gone", "a", 100, 0, 1)
	pl.store.UpsertPod(gone)
	pod := makePod("p", whole("2"))
	cs, _ := preFilter(t, pl, pod)
	if st := pl.Filter(context.Background(), cs, pod, snapshotNode(pl, "a")); st.Code() != fwk.Unschedulable {
		t.Fatalf("snapshot with the holder: Filter = %v, want unschedulable", st)
	}
	if st := pl.Filter(context.Background(), cs, pod, nodeInfo("a")); !st.IsSuccess() {
		t.Fatalf("snapshot without the holder: Filter = %v, want success", st)
	}
	if st := pl.Reserve(context.Background(), cs, pod, "a"); st.IsSuccess() {
		t.Fatal("Reserve succeeded while the cache still counts the holder")
	}
	pl.store.RemovePod(gone.UID)
	if st := pl.Reserve(context.Background(), cs, pod, "a"); !st.IsSuccess() {
		t.Fatalf("Reserve after the cache caught up: %v", st)
	}
}
