package tesseragpu

import (
	"context"
	"encoding/json"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// signature is the JSON of a pod's fragments, as the framework combines
// them.
func signature(t *testing.T, pl *TesseraGPU, pod *v1.Pod) string {
	t.Helper()
	frags, st := pl.SignPod(context.Background(), pod)
	if !st.IsSuccess() {
		t.Fatal(st)
	}
	b, err := json.Marshal(frags)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSignPod: pods that differ only in what the plugin does not read
// (names, labels, container names) share a signature, and may be batched;
// pods that differ in anything it reads (GPU request, init containers,
// models, tolerations, priority, and under fragmentation the CPU request
// and the workload estimate) do not.
func TestSignPod(t *testing.T) {
	base := func(name string, opts ...podOpt) *v1.Pod {
		return makePod(name, append([]podOpt{whole("1")}, opts...)...)
	}
	binpack := testPlugin(t, config.ScoringStrategyBinpack)
	same := []*v1.Pod{
		base("a"),
		base("b", func(p *v1.Pod) { p.Labels = map[string]string{"app": "x"} }),
		base("c", func(p *v1.Pod) { p.Spec.Containers[0].Name = "other" }),
		base("d", annotate(gpu.ModelsAnnotation, "B,A")),
	}
	// Model lists in another order are the same list.
	same[0] = base("a", annotate(gpu.ModelsAnnotation, "A,B"))
	for _, p := range same[1:3] {
		p.Annotations = map[string]string{gpu.ModelsAnnotation: "A,B"}
	}
	want := signature(t, binpack, same[0])
	for _, p := range same[1:] {
		if got := signature(t, binpack, p); got != want {
			t.Errorf("pod %s: signature %s, want that of %s: %s", p.Name, got, same[0].Name, want)
		}
	}

	differ := map[string]*v1.Pod{
		"two gpus":    makePod("x", whole("2"), annotate(gpu.ModelsAnnotation, "A,B")),
		"a share":     makePod("x", percent("50"), annotate(gpu.ModelsAnnotation, "A,B")),
		"other model": base("x", annotate(gpu.ModelsAnnotation, "A")),
		"toleration":  base("x", annotate(gpu.ModelsAnnotation, "A,B"), tolerate("maintenance")),
		"priority": base("x", annotate(gpu.ModelsAnnotation, "A,B"), func(p *v1.Pod) {
			p.Spec.Priority = ptr.To[int32](1000)
		}),
		"init container": base("x", annotate(gpu.ModelsAnnotation, "A,B"), func(p *v1.Pod) {
			p.Spec.InitContainers = []v1.Container{*p.Spec.Containers[0].DeepCopy()}
			p.Spec.InitContainers[0].Name = "prep"
		}),
		"invalid request": makePod("x", percent("150"), annotate(gpu.ModelsAnnotation, "A,B")),
	}
	seen := map[string]string{want: "the base pod"}
	for what, p := range differ {
		got := signature(t, binpack, p)
		if other, dup := seen[got]; dup {
			t.Errorf("%s shares a signature with %s: %s", what, other, got)
		}
		seen[got] = what
	}

	// Under fragmentation the CPU request and the estimate count too.
	frag := testPlugin(t, config.ScoringStrategyFragmentation)
	p := base("p")
	before := signature(t, frag, p)
	if signature(t, frag, base("q", func(p *v1.Pod) {
		p.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("4")}
	})) == before {
		t.Error("pods asking different CPU share a signature under fragmentation")
	}
	fragScorer(frag).workload.mu.Lock()
	fragScorer(frag).workload.rebuildLocked()
	fragScorer(frag).workload.mu.Unlock()
	if signature(t, frag, p) == before {
		t.Error("a new workload estimate left the signature as it was")
	}
	if signature(t, binpack, base("q", func(p *v1.Pod) {
		p.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("4")}
	})) != signature(t, binpack, base("p")) {
		t.Error("under binpack, which does not read CPU, pods asking different CPU do not share a signature")
	}
}

// BenchmarkSignPod is the per-pod cost SignPod adds to every scheduling
// cycle, beside PreFilter's on the same pod.
func BenchmarkSignPod(b *testing.B) {
	pl := testPlugin(b, config.ScoringStrategyBinpack)
	pod := makePod("p", whole("1"), annotate(gpu.ModelsAnnotation, "NVIDIA H100 80GB HBM3"), tolerate("maintenance"))
	ctx := context.Background()
	b.Run("SignPod", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = pl.SignPod(ctx, pod)
		}
	})
	b.Run("PreFilter", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = pl.PreFilter(ctx, framework.NewCycleState(), pod, nil)
		}
	})
}
