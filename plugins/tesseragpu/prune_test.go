package tesseragpu

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/tessera-gpu/tessera/config"
)

// TestPreFilterPrunes checks which nodes PreFilter names: on a cluster of
// eight 4-GPU nodes, a CPU node, and pods of priority 0 holding GPUs, the
// nodes with room for the request when they are a quarter of the nodes or
// fewer and preemption could not make room elsewhere; every node
// otherwise.
func TestPreFilterPrunes(t *testing.T) {
	withPriority := func(p int32) podOpt { return func(pod *v1.Pod) { pod.Spec.Priority = &p } }
	never := func(pod *v1.Pod) { p := v1.PreemptNever; pod.Spec.PreemptionPolicy = &p }
	// holding fills node n's GPUs: full ones, then one at pct.
	type fill struct {
		node      string
		full, pct int
	}
	tests := []struct {
		name  string
		fills []fill
		pod   *v1.Pod
		want  []string // nil: every node
	}{
		{name: "empty cluster: every node", pod: makePod("p", whole("1"))},
		{name: "two of nine nodes with a free gpu",
			fills: []fill{{"n0", 4, 0}, {"n1", 4, 0}, {"n2", 4, 0}, {"n3", 4, 0}, {"n4", 4, 0}, {"n5", 4, 0}, {"n6", 3, 0}, {"n7", 3, 0}},
			pod:   makePod("p", whole("1")), want: []string{"n6", "n7"}},
		{name: "one node with two free gpus",
			fills: []fill{{"n0", 4, 0}, {"n1", 4, 0}, {"n2", 4, 0}, {"n3", 4, 0}, {"n4", 4, 0}, {"n5", 4, 0}, {"n6", 3, 0}, {"n7", 2, 0}},
			pod:   makePod("p", whole("2")), want: []string{"n7"}},
		{name: "a share fits beside another share",
			fills: []fill{{"n0", 4, 0}, {"n1", 4, 0}, {"n2", 4, 0}, {"n3", 4, 0}, {"n4", 4, 0}, {"n5", 4, 0}, {"n6", 3, 60}, {"n7", 3, 80}},
			pod:   makePod("p", percent("30")), want: []string{"n6"}},
		{name: "more than a quarter have room: every node",
			fills: []fill{{"n0", 4, 0}, {"n1", 4, 0}, {"n2", 4, 0}, {"n3", 4, 0}, {"n4", 3, 0}, {"n5", 3, 0}, {"n6", 3, 0}},
			pod:   makePod("p", whole("1"))},
		{name: "no node has room: every node, for Filter's reasons",
			fills: []fill{{"n0", 4, 0}, {"n1", 4, 0}, {"n2", 4, 0}, {"n3", 4, 0}, {"n4", 4, 0}, {"n5", 4, 0}, {"n6", 4, 0}, {"n7", 4, 0}},
			pod:   makePod("p", whole("1"))},
		{name: "a higher priority may preempt: every node",
			fills: []fill{{"n0", 4, 0}, {"n1", 4, 0}, {"n2", 4, 0}, {"n3", 4, 0}, {"n4", 4, 0}, {"n5", 4, 0}, {"n6", 3, 0}, {"n7", 4, 0}},
			pod:   makePod("p", whole("1"), withPriority(10))},
		{name: "a higher priority that never preempts is pruned",
			fills: []fill{{"n0", 4, 0}, {"n1", 4, 0}, {"n2", 4, 0}, {"n3", 4, 0}, {"n4", 4, 0}, {"n5", 4, 0}, {"n6", 3, 0}, {"n7", 4, 0}},
			pod:   makePod("p", whole("1"), withPriority(10), never), want: []string{"n6"}},
		{name: "a lower priority is pruned",
			fills: []fill{{"n0", 4, 0}, {"n1", 4, 0}, {"n2", 4, 0}, {"n3", 4, 0}, {"n4", 4, 0}, {"n5", 4, 0}, {"n6", 3, 0}, {"n7", 4, 0}},
			pod:   makePod("p", whole("1"), withPriority(-10)), want: []string{"n6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := testPlugin(t, config.ScoringStrategyBinpack)
			var list []fwk.NodeInfo
			for i := range 8 {
				name := fmt.Sprintf("n%d", i)
				pl.store.SetGPUNode(gpuNode(name, 4, "H100"))
				list = append(list, nodeInfo(name))
			}
			list = append(list, nodeInfo("cpu"))
			for _, f := range tt.fills {
				for g := range f.full {
					pl.store.UpsertPod(holds(fmt.Sprintf("%s-%d", f.node, g), f.node, 100, g))
				}
				if f.pct > 0 {
					pl.store.UpsertPod(holds(f.node+"-share", f.node, f.pct, f.full))
				}
			}
			res, st := pl.PreFilter(context.Background(), framework.NewCycleState(), tt.pod, list)
			if !st.IsSuccess() {
				t.Fatalf("PreFilter: %v", st)
			}
			var got []string
			if !res.AllNodes() {
				got = sets.List(res.NodeNames)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("nodes named (-want +got):\n%s", diff)
			}
			// Every node left out is one Filter rejects, judged on the
			// node as the scheduler's snapshot has it.
			cs := framework.NewCycleState()
			pl.PreFilter(context.Background(), cs, tt.pod, list)
			for _, ni := range list {
				name := ni.Node().Name
				if res.AllNodes() || res.NodeNames.Has(name) {
					continue
				}
				if st := pl.Filter(context.Background(), cs, tt.pod, snapshotNode(pl, name)); st.IsSuccess() {
					t.Errorf("node %s was left out, but Filter admits it", name)
				}
			}
		})
	}
}
