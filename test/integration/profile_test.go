package integration

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// TestPruningPlacesOnTheNodesWithRoom fills four of five 2-GPU nodes, so
// that PreFilter names only the fifth for the next GPU pod: it lands there,
// the scheduler counts the nodes it left out, and once no node has room a
// pod's FailedScheduling says why node by node rather than naming the
// plugin.
func TestPruningPlacesOnTheNodesWithRoom(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	for i := range 5 {
		e.addNode(fmt.Sprintf("n%d", i), localcluster.FakeNode{GPUs: 2})
	}
	used := map[string]int{}
	for i := range 8 {
		name := fmt.Sprintf("fill-%d", i)
		e.createPod(name, gpus(1))
		used[e.waitBound(name).Spec.NodeName]++
	}
	free := ""
	for i := range 5 {
		n := fmt.Sprintf("n%d", i)
		switch used[n] {
		case 0:
			free = n
		case 2:
		default:
			t.Fatalf("binpack left node %s half used: %v", n, used)
		}
	}
	before := prunedNodes(t)
	e.createPod("last", gpus(1))
	if got := e.waitBound("last").Spec.NodeName; got != free {
		t.Errorf("pod placed on %s, want %s, the only node with room", got, free)
	}
	if after := prunedNodes(t); after < before+4 {
		t.Errorf("pruned nodes counted %v -> %v, want the 4 full nodes left out", before, after)
	}
	e.createPod("one-too-many", gpus(2))
	msg := e.waitUnschedulable("one-too-many", "insufficient gpu capacity|Insufficient nvidia.com/gpu")
	if regexp.MustCompile(`didn't satisfy plugin\(s\) \[TesseraGPU\]`).MatchString(msg) {
		t.Errorf("with no node left with room, the message names the plugin instead of the reason: %s", msg)
	}
	e.checkNoOverbooking()
}

// TestPreBindProfileRecordsAssignment runs a profile that binds with
// kube-scheduler's DefaultBinder and enables TesseraGPU at preBind
// instead: PreBind records the GPUs in the annotation before the pod is
// bound.
func TestPreBindProfileRecordsAssignment(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{Plugins: map[string]any{
		"preBind": map[string]any{"enabled": []any{map[string]any{"name": "TesseraGPU"}}},
		"bind":    nil,
	}})
	e.addNode("a", localcluster.FakeNode{GPUs: 4})
	e.createPod("two", gpus(2))
	e.createPod("frac", share(40))
	for _, c := range []struct {
		name string
		n    int
	}{{"two", 2}, {"frac", 1}} {
		p := e.waitBound(c.name)
		if devs := e.assignmentOf(p)["main"]; len(devs) != c.n {
			t.Errorf("%s: assignment %v, want %d GPUs", c.name, devs, c.n)
		}
	}
	e.checkNoOverbooking()
}

// prunedNodes reads tessera_scheduler_prefilter_pruned_nodes_total.
func prunedNodes(t *testing.T) float64 {
	t.Helper()
	return metricValue(t, "tessera_scheduler_prefilter_pruned_nodes_total")
}

// metricValue reads one sample of the scheduler's metrics, named with its
// labels as the exposition writes them; 0 when there is none yet.
func metricValue(t *testing.T, sample string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` ([0-9.e+]+)$`).FindStringSubmatch(scrapeSchedulerMetrics(t))
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
