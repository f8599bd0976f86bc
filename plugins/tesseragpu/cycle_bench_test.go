package tesseragpu

import (
	"context"
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/tessera-gpu/tessera/config"
)

// BenchmarkCycle is one scheduling cycle of the plugin over a cluster of
// 8-GPU nodes: PreFilter on the node list, then Filter and, where Filter
// admits, Score on every node in list order, as the framework calls them
// (on one goroutine here). It reports the cost per node, which includes
// finding each node's state from its NodeInfo: unlike BenchmarkHotPath,
// whose one node stays in the CPU's caches, the states of 5,000 nodes do
// not.
func BenchmarkCycle(b *testing.B) {
	ctx := context.Background()
	for _, nodes := range []int{1000, 5000} {
		for _, strategy := range []config.ScoringStrategyType{config.ScoringStrategyBinpack, config.ScoringStrategyFragmentation} {
			b.Run(fmt.Sprintf("nodes=%d/strategy=%s", nodes, strategy), func(b *testing.B) {
				pl := testPlugin(b, strategy)
				list := make([]fwk.NodeInfo, nodes)
				for i := range list {
					name := fmt.Sprintf("node-%05d", i)
					pl.store.SetGPUNode(gpuNode(name, 8, "H100"))
					list[i] = nodeInfo(name)
				}
				pod := makePod("p", whole("1"))
				b.ReportAllocs()
				for b.Loop() {
					cycleOver(ctx, b, pl, pod, list)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*nodes), "ns/node")
			})
		}
	}
}

func cycleOver(ctx context.Context, b *testing.B, pl *TesseraGPU, pod *v1.Pod, list []fwk.NodeInfo) {
	cs := framework.NewCycleState()
	if _, st := pl.PreFilter(ctx, cs, pod, list); !st.IsSuccess() {
		b.Fatal(st)
	}
	pl.PreScore(ctx, cs, pod, list)
	for _, ni := range list {
		if pl.Filter(ctx, cs, pod, ni).IsSuccess() {
			pl.Score(ctx, cs, pod, ni)
		}
	}
}
