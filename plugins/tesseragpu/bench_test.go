package tesseragpu

import (
	"context"
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/noderesources"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// benchNode is a node state for the hot-path benchmarks.
type benchNode struct {
	name  string
	gpus  int
	state string // empty, half, fragmented, tainted
}

func benchNodes() []benchNode {
	var out []benchNode
	for _, n := range []int{1, 4, 8} {
		for _, st := range []string{"empty", "half", "fragmented", "tainted"} {
			out = append(out, benchNode{name: fmt.Sprintf("%dgpu-%s", n, st), gpus: n, state: st})
		}
	}
	return out
}

// setup builds the node in the plugin's cache and the same node, with the
// same pods, as a NodeInfo for NodeResourcesFit.
func (bn benchNode) setup(tb testing.TB, pl *TesseraGPU) fwk.NodeInfo {
	gn := gpuNode(bn.name, bn.gpus, "H100")
	if bn.state == "tainted" {
		for i := 0; i < bn.gpus; i += 2 {
			gn.Status.GPUs[i].Taints = []v1alpha1.DeviceTaint{{Key: "tessera.io/xid", Value: "79", Effect: v1.TaintEffectNoSchedule}}
		}
	}
	pl.cache.setGPUNode(gn)
	var pods []*v1.Pod
	add := func(name string, opt podOpt, pct, gpuIdx int) {
		p := makePod(name, onNode(bn.name), opt,
			annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":%d}]}`, uuid(bn.name, gpuIdx), pct)))
		p.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("1"), v1.ResourceMemory: resource.MustParse("4Gi")}
		for k, q := range p.Spec.Containers[0].Resources.Limits {
			p.Spec.Containers[0].Resources.Requests[k] = q
		}
		pl.cache.upsertPod(p)
		pods = append(pods, p)
	}
	switch bn.state {
	case "half":
		for i := 0; i < bn.gpus/2; i++ {
			add(fmt.Sprintf("%s-w%d", bn.name, i), whole("1"), 100, i)
		}
	case "fragmented":
		for i := 0; i < bn.gpus; i++ {
			pct := 30 + 40*(i%2)
			add(fmt.Sprintf("%s-s%d", bn.name, i), percent(fmt.Sprint(pct)), pct, i)
		}
	}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: bn.name}}
	alloc := v1.ResourceList{
		v1.ResourceCPU: resource.MustParse("64"), v1.ResourceMemory: resource.MustParse("512Gi"), v1.ResourcePods: resource.MustParse("110"),
		gpu.ResourceGPU:     *resource.NewQuantity(int64(bn.gpus), resource.DecimalSI),
		gpu.ResourcePercent: *resource.NewQuantity(int64(100*bn.gpus), resource.DecimalSI),
	}
	node.Status.Allocatable, node.Status.Capacity = alloc, alloc
	ni := framework.NewNodeInfo(pods...)
	ni.SetNode(node)
	return ni
}

func benchPods() map[string]*v1.Pod {
	out := map[string]*v1.Pod{}
	for name, opt := range map[string]podOpt{"whole1": whole("1"), "share30": percent("30")} {
		p := makePod("incoming-"+name, opt)
		p.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("1"), v1.ResourceMemory: resource.MustParse("4Gi")}
		for k, q := range p.Spec.Containers[0].Resources.Limits {
			p.Spec.Containers[0].Resources.Requests[k] = q
		}
		out[name] = p
	}
	return out
}

// BenchmarkHotPath measures, per node, TesseraGPU's PreFilter, Filter and
// Score under each strategy beside the in-tree NodeResourcesFit Filter on
// the same node, for nodes of 1, 4 and 8 GPUs that are empty, half used by
// whole GPUs, fragmented by shares, or half under device taints.
func BenchmarkHotPath(b *testing.B) {
	ctx := context.Background()
	fit, err := noderesources.NewFit(ctx, &schedconfig.NodeResourcesFitArgs{
		ScoringStrategy: &schedconfig.ScoringStrategy{Type: schedconfig.LeastAllocated,
			Resources: []schedconfig.ResourceSpec{{Name: "cpu", Weight: 1}, {Name: "memory", Weight: 1}}},
	}, nil, feature.Features{})
	if err != nil {
		b.Fatal(err)
	}
	fitPl := fit.(*noderesources.Fit)
	for _, strategy := range []config.ScoringStrategyType{config.ScoringStrategyBinpack, config.ScoringStrategySpread} {
		pl := testPlugin(b, strategy)
		for _, bn := range benchNodes() {
			ni := bn.setup(b, pl)
			for podName, pod := range benchPods() {
				prefix := fmt.Sprintf("%s/%s/%s", bn.name, podName, strategy)
				b.Run(prefix+"/PreFilter", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						pl.PreFilter(ctx, framework.NewCycleState(), pod, nil)
					}
				})
				cs, _ := preFilter(b, pl, pod)
				b.Run(prefix+"/Filter", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						pl.Filter(ctx, cs, pod, ni)
					}
				})
				b.Run(prefix+"/Score", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						pl.Score(ctx, cs, pod, ni)
					}
				})
				if strategy != config.ScoringStrategyBinpack {
					continue
				}
				fcs := framework.NewCycleState()
				if _, st := fitPl.PreFilter(ctx, fcs, pod, nil); !st.IsSuccess() {
					b.Fatal(st)
				}
				b.Run(fmt.Sprintf("%s/%s/NodeResourcesFit/Filter", bn.name, podName), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						fitPl.Filter(ctx, fcs, pod, ni)
					}
				})
			}
		}
	}
}
