package integration

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// batchHints reads how often the scheduler reused the previous pod's node
// ranking for the tessera-scheduler profile (opportunistic batching).
func batchHints(t *testing.T) int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^scheduler_batch_attempts_total\{profile="tessera-scheduler",result="hint_used"\} (\d+)`)
	m := re.FindStringSubmatch(scrapeSchedulerMetrics(t))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestBatchingGPUPods runs the shipped profile, whose plugins all sign
// pods, so the scheduler's opportunistic batching stays on. Identical GPU
// pods that each fill a node reuse the previous pod's ranking (batching
// only applies when the node just chosen is full); pods that differ in what
// Tessera reads (here, their model lists, though both lists allow the same
// nodes) never do. Either way every pod is placed and nothing is
// overbooked.
func TestBatchingGPUPods(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	for i := 0; i < 12; i++ {
		e.addNode(fmt.Sprintf("n%02d", i), localcluster.FakeNode{GPUs: 2})
	}
	before := batchHints(t)
	for i := 0; i < 6; i++ {
		e.createPod(fmt.Sprintf("same-%d", i), gpus(2))
	}
	for i := 0; i < 6; i++ {
		e.waitBound(fmt.Sprintf("same-%d", i))
	}
	identical := batchHints(t) - before
	if identical == 0 {
		for _, l := range regexp.MustCompile(`(?m)^scheduler_batch.*$`).FindAllString(scrapeSchedulerMetrics(t), -1) {
			t.Log(l)
		}
		t.Error("no identical GPU pod reused the previous ranking: batching is off for the profile")
	}

	before = batchHints(t)
	const model = "NVIDIA H100 80GB HBM3"
	for i := 0; i < 6; i++ {
		models := model
		if i%2 == 1 {
			models = model + ",NVIDIA A100-SXM4-80GB"
		}
		e.createPod(fmt.Sprintf("alt-%d", i), gpus(2), annotated("tessera.io/gpu-models", models))
	}
	for i := 0; i < 6; i++ {
		e.waitBound(fmt.Sprintf("alt-%d", i))
	}
	if n := batchHints(t) - before; n != 0 {
		t.Errorf("%d pods reused the ranking of a pod with another model list", n)
	}
	if use := e.checkNoOverbooking(); len(use) != 24 {
		t.Errorf("%d GPUs in use, want all 24: %v", len(use), use)
	}
	t.Logf("identical pods batched: %d of 5", identical)
}
