package tesseragpu

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/noderesources"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	configscheme "github.com/tessera-gpu/tessera/config/scheme"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// benchNode is a node state for the hot-path benchmarks.
type benchNode struct {
	name  string
	gpus  int
	state string // empty, half, fragmented, tainted; dra-empty, dra-half
}

func benchNodes() []benchNode {
	var out []benchNode
	for _, n := range []int{1, 4, 8} {
		for _, st := range []string{"empty", "half", "fragmented", "tainted"} {
			out = append(out, benchNode{name: fmt.Sprintf("%dgpu-%s", n, st), gpus: n, state: st})
		}
	}
	// An 8-GPU node of a DRA driver, its GPUs from ResourceSlices.
	for _, st := range []string{"dra-empty", "dra-half"} {
		out = append(out, benchNode{name: "8gpu-" + st, gpus: 8, state: st})
	}
	return out
}

// setupDRA builds a DRA node in the plugin's cache, half of its GPUs held
// by claims for dra-half, and the node as the snapshot has it: no GPU
// resources, since no device plugin serves them.
func (bn benchNode) setupDRA(pl *TesseraGPU) fwk.NodeInfo {
	var specs []device.DeviceSpec
	var claimed []drainventory.Held
	for i := range bn.gpus {
		id := drainventory.DeviceID(drainventory.NVIDIADriver, bn.name, fmt.Sprintf("gpu-%d", i))
		specs = append(specs, device.DeviceSpec{ID: id, Model: "H100", MemoryMiB: 81920, NUMANode: -1, Healthy: true})
		if bn.state == "dra-half" && i < bn.gpus/2 {
			claimed = append(claimed, drainventory.Held{ID: id, Units: device.FullUnits})
		}
	}
	pl.store.SetDRA(bn.name, device.NewInventory(bn.name, time.Time{}, specs), claimed)
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: bn.name}}
	alloc := v1.ResourceList{v1.ResourceCPU: resource.MustParse("64"), v1.ResourceMemory: resource.MustParse("512Gi"), v1.ResourcePods: resource.MustParse("110")}
	node.Status.Allocatable, node.Status.Capacity = alloc, alloc
	ni := framework.NewNodeInfo()
	ni.SetNode(node)
	return ni
}

// setup builds the node in the plugin's cache and the same node, with the
// same pods, as a NodeInfo for NodeResourcesFit.
func (bn benchNode) setup(tb testing.TB, pl *TesseraGPU) fwk.NodeInfo {
	if strings.HasPrefix(bn.state, "dra-") {
		return bn.setupDRA(pl)
	}
	gn := gpuNode(bn.name, bn.gpus, "H100")
	if bn.state == "tainted" {
		for i := 0; i < bn.gpus; i += 2 {
			gn.Status.GPUs[i].Taints = []v1alpha1.DeviceTaint{{Key: "tessera.io/xid", Value: "79", Effect: v1.TaintEffectNoSchedule}}
		}
	}
	pl.store.SetGPUNode(gn)
	var pods []*v1.Pod
	add := func(name string, opt podOpt, pct, gpuIdx int) {
		p := makePod(name, onNode(bn.name), opt,
			annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":%d}]}`, uuid(bn.name, gpuIdx), pct)))
		p.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("1"), v1.ResourceMemory: resource.MustParse("4Gi")}
		for k, q := range p.Spec.Containers[0].Resources.Limits {
			p.Spec.Containers[0].Resources.Requests[k] = q
		}
		pl.store.UpsertPod(p)
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

// benchPod is an incoming pod of the hot-path benchmarks.
type benchPod struct {
	name string
	pod  *v1.Pod
}

func benchPods() []benchPod {
	var out []benchPod
	for _, bp := range []struct {
		name string
		opt  podOpt
	}{{"whole1", whole("1")}, {"share30", percent("30")}} {
		p := makePod("incoming-"+bp.name, bp.opt)
		p.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("1"), v1.ResourceMemory: resource.MustParse("4Gi")}
		for k, q := range p.Spec.Containers[0].Resources.Limits {
			p.Spec.Containers[0].Resources.Requests[k] = q
		}
		out = append(out, benchPod{bp.name, p})
	}
	return out
}

// strategyPlugin builds the plugin for a strategy from the args a user
// would write ({scoringStrategy: {type: ...}}), decoded, defaulted and
// validated as the scheduler does, and checks that PreFilter, Filter and
// Score work on an empty 8-GPU node. A strategy that cannot be set up that
// way yet gets an error, so its benchmarks are skipped rather than failed.
func strategyPlugin(tb testing.TB, strategy config.ScoringStrategyType) (pl *TesseraGPU, err error) {
	defer func() {
		if r := recover(); r != nil {
			pl, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	args, err := configscheme.DecodeTesseraGPUArgs(&runtime.Unknown{
		Raw: fmt.Appendf(nil, `{"scoringStrategy":{"type":%q}}`, strategy), ContentType: runtime.ContentTypeJSON,
	})
	if err != nil {
		return nil, fmt.Errorf("args: %w", err)
	}
	pl = newPlugin(klog.Background(), args, feature.Features{})
	pl.now = func() time.Time { return now }
	pl.store.Now = pl.now
	pl.store.SetGPUNode(gpuNode("smoke", 8, "H100"))
	pod := makePod("smoke", whole("1"))
	cs, st := preFilter(tb, pl, pod)
	if !st.IsSuccess() {
		return nil, fmt.Errorf("PreFilter: %v", st)
	}
	ni := nodeInfo("smoke")
	if st := pl.Filter(context.Background(), cs, pod, ni); !st.IsSuccess() {
		return nil, fmt.Errorf("Filter on an empty node: %v", st)
	}
	if _, st := pl.Score(context.Background(), cs, pod, ni); !st.IsSuccess() {
		return nil, fmt.Errorf("Score on an empty node: %v", st)
	}
	return pl, nil
}

func newFitPlugin(tb testing.TB) *noderesources.Fit {
	fit, err := noderesources.NewFit(context.Background(), &schedconfig.NodeResourcesFitArgs{
		ScoringStrategy: &schedconfig.ScoringStrategy{Type: schedconfig.LeastAllocated,
			Resources: []schedconfig.ResourceSpec{{Name: "cpu", Weight: 1}, {Name: "memory", Weight: 1}}},
	}, nil, feature.Features{})
	if err != nil {
		tb.Fatal(err)
	}
	return fit.(*noderesources.Fit)
}

// BenchmarkHotPath measures, per node, TesseraGPU's PreFilter, Filter,
// Score and Filter+Score under every strategy in
// config.SupportedScoringStrategies(), beside the in-tree NodeResourcesFit
// Filter on the same node (strategy=in-tree), for nodes of 1, 4 and 8 GPUs
// that are empty, half used by whole GPUs, fragmented by shares, or half
// under device taints, and for a one-GPU and a 30 % pod.
//
// Names are key=value, so benchstat can lay them side by side, e.g.
//
//	benchstat -col /strategy -filter '/op:Filter' hotpath.txt
func BenchmarkHotPath(b *testing.B) {
	ctx := context.Background()
	fitPl := newFitPlugin(b)
	scratch := testPlugin(b, config.ScoringStrategyBinpack)
	for _, bn := range benchNodes() {
		ni := bn.setup(b, scratch)
		for _, bp := range benchPods() {
			cs := framework.NewCycleState()
			if _, st := fitPl.PreFilter(ctx, cs, bp.pod, nil); !st.IsSuccess() {
				b.Fatal(st)
			}
			b.Run(fmt.Sprintf("node=%s/pod=%s/strategy=in-tree/op=Filter", bn.name, bp.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					fitPl.Filter(ctx, cs, bp.pod, ni)
				}
			})
		}
	}
	for _, strategy := range config.SupportedScoringStrategies() {
		pl, err := strategyPlugin(b, strategy)
		if err != nil {
			b.Run("strategy="+string(strategy), func(b *testing.B) {
				b.Skipf("strategy %s cannot be benchmarked yet: %v", strategy, err)
			})
			continue
		}
		for _, bn := range benchNodes() {
			ni := bn.setup(b, pl)
			for _, bp := range benchPods() {
				pod := bp.pod
				prefix := fmt.Sprintf("node=%s/pod=%s/strategy=%s/op=", bn.name, bp.name, strategy)
				b.Run(prefix+"PreFilter", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						pl.PreFilter(ctx, framework.NewCycleState(), pod, nil)
					}
				})
				// PreFilter is given the node, as the framework gives it
				// the snapshot's list, so that Filter and Score find the
				// node through the index as they do in the scheduler.
				cs, st := preFilterOn(b, pl, pod, ni)
				if !st.IsSuccess() {
					b.Fatalf("PreFilter(%s): %v", bp.name, st)
				}
				b.Run(prefix+"Filter", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						pl.Filter(ctx, cs, pod, ni)
					}
				})
				// Score follows Filter in the same cycle, as the framework
				// calls them, so it finds Filter's result for the node
				// (gpucache.Slot.fit); Filter+Score is the pair's whole cost.
				b.Run(prefix+"Score", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						pl.Score(ctx, cs, pod, ni)
					}
				})
				b.Run(prefix+"Filter+Score", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if pl.Filter(ctx, cs, pod, ni).IsSuccess() {
							pl.Score(ctx, cs, pod, ni)
						}
					}
				})
			}
		}
	}
}

// TestFilterDoesNotAllocateOnBenchNodes extends TestFilterDoesNotAllocate
// to every strategy and every benchmark node on which Filter admits the pod:
// admitting a node is the common path, taken for most nodes of most cycles.
func TestFilterDoesNotAllocateOnBenchNodes(t *testing.T) {
	for _, strategy := range config.SupportedScoringStrategies() {
		pl, err := strategyPlugin(t, strategy)
		if err != nil {
			t.Logf("strategy %s skipped: %v", strategy, err)
			continue
		}
		for _, bn := range benchNodes() {
			ni := bn.setup(t, pl)
			for _, bp := range benchPods() {
				cs, st := preFilterOn(t, pl, bp.pod, ni)
				if !st.IsSuccess() {
					t.Fatalf("PreFilter(%s): %v", bp.name, st)
				}
				if !pl.Filter(context.Background(), cs, bp.pod, ni).IsSuccess() {
					continue
				}
				if n := testing.AllocsPerRun(20, func() { pl.Filter(context.Background(), cs, bp.pod, ni) }); n != 0 {
					t.Errorf("%s: Filter(%s) on %s allocates %v times", strategy, bp.name, bn.name, n)
				}
			}
		}
	}
}

// preFilterOn runs PreFilter for a cycle over the one node ni.
func preFilterOn(tb testing.TB, pl *TesseraGPU, pod *v1.Pod, ni fwk.NodeInfo) (fwk.CycleState, *fwk.Status) {
	tb.Helper()
	cs := framework.NewCycleState()
	_, st := pl.PreFilter(context.Background(), cs, pod, []fwk.NodeInfo{ni})
	return cs, st
}
