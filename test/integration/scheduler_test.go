package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// TestPlacesWholeMultiAndFractionalPods places pods of every shape and
// checks that each assignment names GPUs of its node, as many as asked.
func TestPlacesWholeMultiAndFractionalPods(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("big", localcluster.FakeNode{GPUs: 8})
	e.addNode("small", localcluster.FakeNode{GPUs: 4})

	e.createPod("eight", gpus(8))
	p := e.waitBound("eight")
	if p.Spec.NodeName != "big" {
		t.Fatalf("8-GPU pod on %s", p.Spec.NodeName)
	}
	if a := e.assignmentOf(p); len(a["main"]) != 8 {
		t.Fatalf("8-GPU pod got %v", a)
	}

	e.createPod("two", gpus(2))
	e.createPod("one", gpus(1))
	e.createPod("frac", share(30))
	for _, c := range []struct {
		name   string
		n, pct int
	}{{"two", 2, 100}, {"one", 1, 100}, {"frac", 1, 30}} {
		p := e.waitBound(c.name)
		if p.Spec.NodeName != "small" {
			t.Errorf("%s on %s; big is full", c.name, p.Spec.NodeName)
		}
		devs := e.assignmentOf(p)["main"]
		if len(devs) != c.n {
			t.Errorf("%s got %d GPUs, want %d", c.name, len(devs), c.n)
		}
		for _, d := range devs {
			if d.Percent != c.pct {
				t.Errorf("%s got %d%% of %s, want %d", c.name, d.Percent, d.UUID, c.pct)
			}
		}
	}
	use := e.checkNoOverbooking()
	if len(use) != 12 {
		t.Errorf("%d GPUs in use, want all 12: %v", len(use), use)
	}
	// The 2-GPU pod sits on one NVLink island of the 4-GPU node.
	two := e.assignmentOf(e.waitBound("two"))["main"]
	island := func(u string) bool { return strings.HasSuffix(u, "-0") || strings.HasSuffix(u, "-1") }
	if island(two[0].UUID) != island(two[1].UUID) {
		t.Errorf("2-GPU pod spans NVLink islands: %v", two)
	}

	// The scheduler's metrics show the allocation. tessera-scheduler serves
	// this registry on its /metrics endpoint; here it is scraped directly.
	body := scrapeSchedulerMetrics(t)
	for _, want := range []string{
		`tessera_scheduler_gpus{model="NVIDIA H100 80GB HBM3",state="full"} 11`,
		`tessera_scheduler_gpus{model="NVIDIA H100 80GB HBM3",state="partial"} 1`,
		`tessera_scheduler_gpus_allocated{model="NVIDIA H100 80GB HBM3"} 11.3`,
		`tessera_scheduler_gpus_fragmented{model="NVIDIA H100 80GB HBM3"} 0.7`,
		`tessera_scheduler_gpu_nodes{inventory="fresh"} 2`,
		`tessera_scheduler_placements_total{kind="whole",strategy="binpack"}`,
		`tessera_scheduler_placements_total{kind="share",strategy="binpack"}`,
		`tessera_scheduler_cache_rebuild_seconds`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestSixtyPercentPodsOnePerGPU submits ten 60% pods to eight GPUs.
func TestSixtyPercentPodsOnePerGPU(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("n1", localcluster.FakeNode{GPUs: 4})
	e.addNode("n2", localcluster.FakeNode{GPUs: 4})
	for i := 0; i < 10; i++ {
		e.createPod(fmt.Sprintf("p%d", i), share(60))
	}
	deadline := time.Now().Add(30 * time.Second)
	var bound, pending []string
	for time.Now().Before(deadline) {
		bound, pending = nil, nil
		pods, err := e.c.Client.CoreV1().Pods("default").List(e.ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" {
				bound = append(bound, p.Name)
			} else {
				pending = append(pending, p.Name)
			}
		}
		if len(bound) == 8 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(bound) != 8 || len(pending) != 2 {
		t.Fatalf("bound %v, pending %v; want 8 and 2", bound, pending)
	}
	use := e.checkNoOverbooking()
	if len(use) != 8 {
		t.Errorf("pods share GPUs: %v", use)
	}
	for _, name := range pending {
		e.waitUnschedulable(name, "insufficient gpu capacity")
	}
	// Still exactly 8 after the pending pods were retried.
	time.Sleep(time.Second)
	if n := len(e.checkNoOverbooking()); n != 8 {
		t.Errorf("%d GPUs in use", n)
	}
}

// TestNonGPUPodsStayOffGPUNodes checks the GPU-node taint and the guard.
func TestNonGPUPodsStayOffGPUNodes(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{TaintArgs: map[string]any{"guardGPUNodes": true}})
	e.addNode("gpu-tainted", localcluster.FakeNode{GPUs: 4})
	e.addNode("gpu-untainted", localcluster.FakeNode{GPUs: 4, NoTaint: true})

	// No CPU node yet: the CPU pod has nowhere to go.
	e.createPod("cpu")
	msg := e.waitUnschedulable("cpu", "untolerated taint")
	if !strings.Contains(msg, "reserved for gpu pods") {
		t.Errorf("guard reason missing: %s", msg)
	}
	// A GPU pod goes to a tainted GPU node without any toleration.
	e.createPod("gpu", gpus(1))
	e.waitBound("gpu")
	// Once a CPU node exists the CPU pod lands there.
	e.addNode("cpu-node", localcluster.FakeNode{})
	if p := e.waitBound("cpu"); p.Spec.NodeName != "cpu-node" {
		t.Errorf("cpu pod on %s", p.Spec.NodeName)
	}
	// A CPU pod that tolerates the GPU taint explicitly may use GPU nodes.
	// It is kept off cpu-node by affinity rather than by deleting the node:
	// the scheduler learns of a deletion and of a new pod on separate
	// watches, and would bind the pod to a node already gone if the pod
	// came first.
	e.createPod("cpu-tolerating", tolerating("nvidia.com/gpu"), func(p *v1.Pod) {
		p.Spec.Affinity = &v1.Affinity{NodeAffinity: &v1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchFields: []v1.NodeSelectorRequirement{{Key: "metadata.name", Operator: v1.NodeSelectorOpNotIn, Values: []string{"cpu-node"}}},
			}}},
		}}
	})
	if p := e.waitBound("cpu-tolerating"); !strings.HasPrefix(p.Spec.NodeName, "gpu-") {
		t.Errorf("tolerating pod on %s", p.Spec.NodeName)
	}
}

// TestDeviceTaints leaves a tainted GPU to pods that tolerate it.
func TestDeviceTaints(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("n", localcluster.FakeNode{GPUs: 2, Mutate: func(gn *v1alpha1.GPUNode) {
		gn.Status.GPUs[1].Taints = []v1alpha1.DeviceTaint{{Key: "tessera.io/xid", Value: "79", Effect: v1.TaintEffectNoSchedule}}
	}})
	e.createPod("a", gpus(1))
	if a := e.assignmentOf(e.waitBound("a")); a["main"][0].UUID != gpuUUID("n", 0) {
		t.Errorf("pod got %v; GPU 1 is tainted", a)
	}
	e.createPod("b", gpus(1))
	e.waitUnschedulable("b", "untolerated device taints")
	e.createPod("c", gpus(1), tolerating("tessera.io/xid"))
	if a := e.assignmentOf(e.waitBound("c")); a["main"][0].UUID != gpuUUID("n", 1) {
		t.Errorf("tolerating pod got %v", a)
	}
}

// TestModelSelection places a model-constrained pod on that model only.
func TestModelSelection(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("h100", localcluster.FakeNode{GPUs: 2, Model: "NVIDIA H100 80GB HBM3"})
	e.addNode("a100", localcluster.FakeNode{GPUs: 2, Model: "NVIDIA A100-SXM4-80GB"})
	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("a100-%d", i)
		e.createPod(name, gpus(1), annotated("tessera.io/gpu-models", "NVIDIA A100-SXM4-80GB"))
		if p := e.waitBound(name); p.Spec.NodeName != "a100" {
			t.Errorf("%s on %s", name, p.Spec.NodeName)
		}
	}
	e.createPod("a100-more", gpus(1), annotated("tessera.io/gpu-models", "NVIDIA A100-SXM4-80GB"))
	// The A100 node is full (NodeResourcesFit already counts its
	// nvidia.com/gpu), and the H100 node is refused for its model.
	e.waitUnschedulable("a100-more", "no gpu of an allowed model")
	e.createPod("bad-models", gpus(1), annotated("tessera.io/gpu-models", "H100,,A100"))
	e.waitUnschedulable("bad-models", "tessera.io/gpu-models: entry 2 is empty")
}

// TestStaleInventoryAvoided checks that a node whose device plugin has
// stopped writing gets no GPU pods, judged on the scheduler's clock from the
// API server's time of the GPUNode's last write (not from the heartbeat the
// node stamped), and that a heartbeat brings it back.
func TestStaleInventoryAvoided(t *testing.T) {
	const staleness = 2 * time.Second
	e := newEnv(t, localcluster.SchedulerOptions{GPUArgs: map[string]any{"inventoryStaleness": staleness.String()}})
	e.addNode("cpu", localcluster.FakeNode{})
	e.createPod("p", gpus(1))
	e.waitUnschedulable("p", "the largest gpu node has 0")
	// While the scheduler is down, a GPU node appears whose plugin then
	// stops. It stamped its heartbeat as now: only the time of its last
	// write tells that it is dead.
	e.stopScheduler()
	e.addNode("stale", localcluster.FakeNode{GPUs: 8, Heartbeat: time.Now()})
	gn, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(e.ctx, "stale", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var written time.Time
	for _, f := range gn.ManagedFields {
		if f.Time != nil && f.Time.After(written) {
			written = f.Time.Time
		}
	}
	// The API server stamps writes to the second; wait until the write is
	// surely older than the bound.
	if err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return time.Since(written) > staleness+time.Second, nil
	}); err != nil {
		t.Fatal(err)
	}
	// The restarted scheduler retries the pod once its caches sync.
	e.startScheduler()
	e.waitUnschedulable("p", "gpu inventory is stale")
	// The GPUNode says why too, once.
	e.waitEvent("stale", "GPUInventoryStale: no heartbeat for 2s")

	// A node whose plugin beats takes the pod.
	e.addNode("fresh", localcluster.FakeNode{GPUs: 1})
	beat, stop := context.WithCancel(e.ctx)
	defer stop()
	go e.beat(beat, "fresh", staleness/4)
	if p := e.waitBound("p"); p.Spec.NodeName != "fresh" {
		t.Errorf("pod on %s", p.Spec.NodeName)
	}
	// A heartbeat brings the stale node back, with an event saying so,
	// even one the node stamped an hour ago: it is news to the scheduler.
	gn, err = e.c.GPU.TesseraV1alpha1().GPUNodes().Get(e.ctx, "stale", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hb := metav1.NewTime(time.Now().Add(-time.Hour))
	gn.Status.HeartbeatTime = &hb
	if _, err := e.c.GPU.TesseraV1alpha1().GPUNodes().UpdateStatus(e.ctx, gn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitEvent("stale", "GPUInventoryFresh: heartbeat is current again")
	if ev := e.events("stale"); strings.Count(ev, "GPUInventoryStale") != 1 {
		t.Errorf("GPUNode events %s; want one GPUInventoryStale", ev)
	}
}

// beat writes a new heartbeat to the node's GPUNode every interval until
// ctx ends, as its device plugin would.
func (e *env) beat(ctx context.Context, node string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		gn, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			continue
		}
		hb := metav1.Now()
		gn.Status.HeartbeatTime = &hb
		_, _ = e.c.GPU.TesseraV1alpha1().GPUNodes().UpdateStatus(ctx, gn, metav1.UpdateOptions{})
	}
}

// TestBadRequestsGetEvents checks that invalid requests are refused with a
// reason and change nothing.
func TestBadRequestsGetEvents(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("n", localcluster.FakeNode{GPUs: 8})
	for _, c := range []struct {
		name string
		opts []podOpt
		want string
	}{
		{"pct-0", []podOpt{share(0)}, "must be 1-99"},
		{"pct-100", []podOpt{share(100)}, "must be 1-99"},
		{"pct-150", []podOpt{share(150)}, "must be 1-99"},
		{"both", []podOpt{gpus(1), share(20)}, "asks for both"},
		{"sixteen", []podOpt{gpus(16)}, "the largest gpu node has 8"},
	} {
		e.createPod(c.name, c.opts...)
		e.waitUnschedulable(c.name, c.want)
	}
	// The apiserver itself refuses a non-numeric quantity, with a message
	// that names the field.
	raw := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"abc"},"spec":{"schedulerName":"tessera-scheduler",` +
		`"containers":[{"name":"main","image":"x","resources":{"limits":{"tessera.io/gpu-percent":"abc"}}}]}}`
	err := e.c.Client.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").
		SetHeader("Content-Type", "application/json").Body([]byte(raw)).Do(e.ctx).Error()
	if err == nil || !strings.Contains(err.Error(), "quantities must match the regular expression") {
		t.Errorf("pod asking for abc percent: err = %v", err)
	}
	// A good pod still gets all 8 GPUs: the bad ones hold nothing.
	e.createPod("good", gpus(8))
	e.waitBound("good")
	e.checkNoOverbooking()
}

// TestRestartDoesNotDoubleBook restarts the scheduler between placements
// and after a pod with a corrupt assignment appears.
func TestRestartDoesNotDoubleBook(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	// n2 comes only after the first pod is on n1. Two empty nodes score the
	// same, and the scheduler breaks that tie by which node's Filter
	// finished first; binpack must fill n1, not whichever won, for the
	// counts below to hold.
	e.addNode("n1", localcluster.FakeNode{GPUs: 4})
	e.createPod("w0", gpus(1))
	if p := e.waitBound("w0"); p.Spec.NodeName != "n1" {
		t.Fatalf("w0 on %s with only n1 there", p.Spec.NodeName)
	}
	e.addNode("n2", localcluster.FakeNode{GPUs: 4})
	e.createPod("s0", share(50))
	for i := 1; i < 3; i++ {
		e.createPod(fmt.Sprintf("w%d", i), gpus(1))
		e.createPod(fmt.Sprintf("s%d", i), share(50))
	}
	for i := 0; i < 3; i++ {
		e.waitBound(fmt.Sprintf("w%d", i))
		e.waitBound(fmt.Sprintf("s%d", i))
	}
	e.stopScheduler()

	// While it is down, a pod appears on n2 whose GPU use cannot be known:
	// an invalid request (150% of one GPU) and a corrupt assignment, as if
	// written by a broken tool.
	bad := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "corrupt", Namespace: "default", Annotations: map[string]string{assignment.Annotation: "{broken"}},
		Spec:       v1.PodSpec{NodeName: "n2", SchedulerName: schedulerName, Containers: []v1.Container{{Name: "main", Image: "x"}}},
	}
	share(150)(bad)
	if _, err := e.c.Client.CoreV1().Pods("default").Create(e.ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 8; i++ {
		e.createPod(fmt.Sprintf("w%d", i), gpus(1))
	}
	e.startScheduler()
	e.waitEvent("corrupt", "InvalidGPUAssignment: invalid gpu request")

	// n1 and n2 had 8 GPUs; the earlier pods hold 3 whole and 3 halves.
	// n2 counts as full while the corrupt pod exists, so everything new
	// must fit on n1, and no GPU may be booked twice.
	time.Sleep(3 * time.Second)
	use := e.checkNoOverbooking()
	pods, _ := e.c.Client.CoreV1().Pods("default").List(e.ctx, metav1.ListOptions{})
	for _, p := range pods.Items {
		if strings.HasPrefix(p.Name, "w") && p.Spec.NodeName == "n2" {
			a := e.assignmentOf(&p)
			// Only pods placed before the restart may be on n2.
			var idx int
			fmt.Sscanf(p.Name, "w%d", &idx)
			if idx >= 3 {
				t.Errorf("%s placed on n2 (%v) although n2 has a pod of unknown assignment", p.Name, a)
			}
		}
	}
	t.Logf("GPU use after restart: %v", use)
	// Deleting the corrupt pod releases n2 for the pending pods.
	// No kubelet runs to finish a graceful deletion, so delete at once.
	if err := e.c.Client.CoreV1().Pods("default").Delete(e.ctx, "corrupt", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	// n2 has three whole GPUs free (the fourth holds a half), so exactly
	// three of the five waiting pods can now be placed, all on n2.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var onN2 int
		pods, _ := e.c.Client.CoreV1().Pods("default").List(e.ctx, metav1.ListOptions{})
		for _, p := range pods.Items {
			var idx int
			if _, err := fmt.Sscanf(p.Name, "w%d", &idx); err == nil && idx >= 3 && p.Spec.NodeName != "" {
				if p.Spec.NodeName != "n2" {
					t.Fatalf("%s placed on %s", p.Name, p.Spec.NodeName)
				}
				onN2++
			}
		}
		if onN2 == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pods placed on n2 after the corrupt pod went, want 3", onN2)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if use := e.checkNoOverbooking(); len(use) != 8 {
		t.Errorf("GPU use %v; want all 8 GPUs in use", use)
	}
}

// TestDeletedPodFreesShareAtOnce checks that a pending pod is placed as soon
// as a pod holding the GPU goes, without the periodic retry.
func TestDeletedPodFreesShareAtOnce(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	// Two GPUs, so the node's 200 percent units leave NodeResourcesFit
	// satisfied and only TesseraGPU rejects the waiter: neither GPU has
	// 50 % free.
	e.addNode("n", localcluster.FakeNode{GPUs: 2})
	e.createPod("holder", share(70))
	e.waitBound("holder")
	e.createPod("other", share(60))
	e.waitBound("other")
	e.createPod("waiter", share(50))
	e.waitUnschedulable("waiter", "insufficient gpu capacity")
	start := time.Now()
	if err := e.c.Client.CoreV1().Pods("default").Delete(e.ctx, "holder", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	e.waitBound("waiter")
	// The periodic flush of unschedulable pods is 5 minutes; backoff is at
	// most 10 seconds.
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("waiter placed %v after the deletion", d)
	}
	e.checkNoOverbooking()
}

// TestOtherSchedulersPodsLeftAlone checks that pods for other schedulers are
// not touched.
func TestOtherSchedulersPodsLeftAlone(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("n", localcluster.FakeNode{GPUs: 2})
	e.createPod("default-sched", gpus(1), scheduler("default-scheduler"))
	e.createPod("other", gpus(1), scheduler("volcano"))
	e.createPod("ours", gpus(1))
	e.waitBound("ours")
	time.Sleep(2 * time.Second)
	for _, name := range []string{"default-sched", "other"} {
		p, err := e.c.Client.CoreV1().Pods("default").Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Spec.NodeName != "" || p.Annotations[assignment.Annotation] != "" {
			t.Errorf("%s was touched: node %q annotations %v", name, p.Spec.NodeName, p.Annotations)
		}
	}
}

// TestBadInventorySkipsGPUs gives a GPUNode two GPUs with one UUID: both
// are skipped with an event on the GPUNode, and the good GPU is still used.
func TestBadInventorySkipsGPUs(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("dup", localcluster.FakeNode{GPUs: 3, Mutate: func(gn *v1alpha1.GPUNode) {
		gn.Status.GPUs[1].UUID = gn.Status.GPUs[0].UUID
	}})
	e.waitEvent("dup", "InvalidGPUInventory: GPUs skipped: device GPU-dup-0 appears 2 times")
	e.createPod("two", gpus(2))
	e.waitUnschedulable("two", "the largest gpu node has 1")
	e.createPod("one", gpus(1))
	if a := e.assignmentOf(e.waitBound("one")); a["main"][0].UUID != gpuUUID("dup", 2) {
		t.Errorf("pod got %v; only GPU 2 is usable", a)
	}
}

// TestFragmentationStrategy runs the real scheduler with the fragmentation
// strategy and a fixed workload of 50% pods, and checks that it picks the
// GPUs that keep room for such pods, where binpack and spread would not.
func TestFragmentationStrategy(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{GPUArgs: map[string]any{
		"scoringStrategy": map[string]any{
			"type": "fragmentation",
			"fragmentation": map[string]any{
				"windowPods": 0, "coverage": 100,
				"seed": []any{map[string]any{"cpu": "0", "gpus": 1, "gpuPercent": 50, "weight": 1}},
			},
		},
	}})
	e.addNode("b", localcluster.FakeNode{GPUs: 2})
	gpuOf := func(name string, opts ...podOpt) string {
		e.createPod(name, opts...)
		a := e.assignmentOf(e.waitBound(name))
		return a["main"][0].UUID
	}
	if got := gpuOf("hold", share(40)); got != gpuUUID("b", 0) {
		t.Fatalf("hold on %s, want GPU 0", got)
	}
	// 30% on GPU 0 would leave 30%, too little for a 50% pod; binpack
	// (tightest fit) would do it, fragmentation takes GPU 1.
	if got := gpuOf("p", share(30)); got != gpuUUID("b", 1) {
		t.Errorf("p on %s, want GPU 1", got)
	}
	// 10% leaves room for a 50% pod on either GPU; spread would take the
	// roomier GPU 1, fragmentation the first of equals.
	if got := gpuOf("q", share(10)); got != gpuUUID("b", 0) {
		t.Errorf("q on %s, want GPU 0", got)
	}
	e.checkNoOverbooking()
}

// TestForgedAssignmentsBlockNothing binds pods directly to GPU nodes, as
// another scheduler or a tenant with nodeName would, with annotations no
// tenant should be able to write (the admission policy is not installed
// here): on pods that ask for no GPU they block nothing; a GPU pod of
// another scheduler with a damaged annotation counts as the GPU it asks
// for, not as a full node.
func TestForgedAssignmentsBlockNothing(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("n", localcluster.FakeNode{GPUs: 2})
	both := fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100},{"uuid":%q,"percent":100}]}`, gpuUUID("n", 0), gpuUUID("n", 1))
	onNode := func(n string) podOpt { return func(p *v1.Pod) { p.Spec.NodeName = n } }
	e.createPod("broken", onNode("n"), scheduler("other"), annotated(assignment.Annotation, "{broken"))
	e.createPod("names-gpus", onNode("n"), scheduler("other"), annotated(assignment.Annotation, both))
	e.waitEvent("broken", "asks for no GPU; its tessera.io/gpu-assignment is ignored")
	e.waitEvent("names-gpus", "asks for no GPU; its tessera.io/gpu-assignment is ignored")
	if p := e.waitBound(e.createPod("two", gpus(2)).Name); p.Spec.NodeName != "n" {
		t.Fatalf("two on %s", p.Spec.NodeName)
	}

	e.addNode("m", localcluster.FakeNode{GPUs: 2})
	e.createPod("foreign", onNode("m"), scheduler("other"), gpus(1), annotated(assignment.Annotation, "{broken"))
	e.waitEvent("foreign", "counts as the GPUs it asks for on node m")
	e.createPod("m-two", gpus(2))
	e.waitUnschedulable("m-two", "insufficient gpu capacity|Insufficient nvidia.com/gpu")
	if msg := e.schedulingMessages("m-two"); strings.Contains(msg, "unknown assignment") {
		t.Errorf("the foreign pod made node m count as full: %s", msg)
	}
	if p := e.waitBound(e.createPod("m-one", gpus(1)).Name); p.Spec.NodeName != "m" {
		t.Fatalf("m-one on %s", p.Spec.NodeName)
	}
	e.checkNoOverbooking()
}
