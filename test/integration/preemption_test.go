package integration

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// The preemption tests run the real DefaultPreemption of the shipped
// profile. No kubelet runs, so a victim that preemption deletes stays
// Terminating until the test, standing in for the kubelet, removes it.

// priorityClasses creates PriorityClasses by name and value.
func (e *env) priorityClasses(classes map[string]int32) {
	e.t.Helper()
	for name, value := range classes {
		pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Value: value}
		if _, err := e.c.Client.SchedulingV1().PriorityClasses().Create(e.ctx, pc, metav1.CreateOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func priority(class string) podOpt {
	return func(p *v1.Pod) { p.Spec.PriorityClassName = class }
}

// terminating lists the pods (of names) that have been asked to leave.
func (e *env) terminating(names ...string) []string {
	e.t.Helper()
	var out []string
	for _, n := range names {
		p, err := e.c.Client.CoreV1().Pods("default").Get(e.ctx, n, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if p.DeletionTimestamp != nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// waitPreempted waits until exactly the victims, among candidates, have
// been asked to leave and the preemptor is nominated to node, then removes
// the victims as their kubelet would once their containers stopped.
func (e *env) waitPreempted(preemptor, node string, victims []string, candidates ...string) {
	e.t.Helper()
	e.waitVictims(preemptor, node, victims, candidates...)
	for _, v := range victims {
		e.forceDelete(v)
	}
}

// waitVictims waits until exactly the victims, among candidates, have been
// asked to leave and the preemptor is nominated to node, and checks that
// the preemptor is not bound yet.
func (e *env) waitVictims(preemptor, node string, victims []string, candidates ...string) {
	e.t.Helper()
	sort.Strings(victims)
	var got []string
	var nominated string
	err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got = e.terminating(candidates...)
		p, err := e.c.Client.CoreV1().Pods("default").Get(ctx, preemptor, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		nominated = p.Status.NominatedNodeName
		return len(got) >= len(victims) && nominated != "", nil
	})
	if err != nil || strings.Join(got, ",") != strings.Join(victims, ",") || nominated != node {
		e.t.Fatalf("preemption for %s: asked %v to leave and nominated %q (%v); want %v and %q; events: %s",
			preemptor, got, nominated, err, victims, node, e.schedulingMessages(preemptor))
	}
	for _, v := range victims {
		p, err := e.c.Client.CoreV1().Pods("default").Get(e.ctx, v, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if p.Spec.NodeName != node {
			e.t.Errorf("victim %s was on %s, not on %s", v, p.Spec.NodeName, node)
		}
	}
	if p, err := e.c.Client.CoreV1().Pods("default").Get(e.ctx, preemptor, metav1.GetOptions{}); err != nil || p.Spec.NodeName != "" {
		e.t.Fatalf("%s bound before its victims left (node %q, err %v)", preemptor, p.Spec.NodeName, err)
	}
}

func (e *env) forceDelete(name string) {
	e.t.Helper()
	zero := int64(0)
	if err := e.c.Client.CoreV1().Pods("default").Delete(e.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		e.t.Fatal(err)
	}
}

// waitBoundSince waits for the pod to bind and logs how long it took from
// created.
func (e *env) waitBoundSince(name string, created time.Time) *v1.Pod {
	e.t.Helper()
	p := e.waitBound(name)
	e.t.Logf("%s: created to bound in %v", name, time.Since(created).Round(time.Millisecond))
	return p
}

// TestPreemptionWholeGPUs fills a 4-GPU node with pods of three low
// priorities and one of high priority. A high-priority pod asking for two
// GPUs preempts exactly the two lowest (upstream's reprieve keeps the
// most important pods that can stay), binds once they are gone, and a
// further one finds nothing it may preempt: pods of its own priority are
// never victims.
func TestPreemptionWholeGPUs(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.priorityClasses(map[string]int32{"lowest": 1, "lower": 5, "low": 10, "high": 1000})
	e.addNode("n", localcluster.FakeNode{GPUs: 4})
	for _, p := range []struct{ name, class string }{{"l10", "low"}, {"l5", "lower"}, {"l1", "lowest"}, {"x", "high"}} {
		e.createPod(p.name, gpus(1), priority(p.class))
		e.waitBound(p.name)
	}
	created := time.Now()
	e.createPod("h", gpus(2), priority("high"))
	e.waitPreempted("h", "n", []string{"l1", "l5"}, "l10", "l5", "l1", "x")
	h := e.waitBoundSince("h", created)
	if n := len(e.assignmentOf(h)["main"]); n != 2 {
		t.Errorf("h got %d GPUs, want 2", n)
	}
	e.checkNoOverbooking()

	// The node now holds x and h (high) and l10: a second high pod asking
	// for two GPUs could free only l10's one GPU, so it preempts nobody.
	e.createPod("h2", gpus(2), priority("high"))
	e.waitUnschedulable("h2", "preemption: ")
	if got := e.terminating("l10", "x", "h"); len(got) > 0 {
		t.Errorf("h2 asked %v to leave; none can make room for it", got)
	}
}

// TestPreemptionMultiGPUFewestVictims has two full 2-GPU nodes: one holds a
// single 2-GPU pod, the other two 1-GPU pods, all of one low priority. A
// 2-GPU high-priority pod preempts on the node where one victim is enough.
func TestPreemptionMultiGPUFewestVictims(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.priorityClasses(map[string]int32{"low": 0, "high": 1000})
	e.addNode("one", localcluster.FakeNode{GPUs: 2})
	e.createPod("big", gpus(2), priority("low"))
	if p := e.waitBound("big"); p.Spec.NodeName != "one" {
		t.Fatalf("big on %s", p.Spec.NodeName)
	}
	e.addNode("two", localcluster.FakeNode{GPUs: 2})
	e.createPod("s1", gpus(1), priority("low"))
	e.createPod("s2", gpus(1), priority("low"))
	e.waitBound("s1")
	e.waitBound("s2")

	created := time.Now()
	e.createPod("h", gpus(2), priority("high"))
	e.waitPreempted("h", "one", []string{"big"}, "big", "s1", "s2")
	if p := e.waitBoundSince("h", created); p.Spec.NodeName != "one" {
		t.Errorf("h on %s, want one", p.Spec.NodeName)
	}
	e.checkNoOverbooking()
}

// TestPreemptionSharesAndNominatedGPUs fills a 3-GPU node so that no GPU
// has 70% free though the node has 110% free in all: a low-priority 60%
// pod on one GPU and two high-priority 65% pods on the others. A 70%
// high-priority pod preempts the low one. While the victim is still
// Terminating, a low-priority 40% pod, which would fit on the victim's GPU
// now and which the node's extended-resource count lets through, must not
// take the GPU promised to the nominated pod.
func TestPreemptionSharesAndNominatedGPUs(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.priorityClasses(map[string]int32{"low": 0, "high": 1000})
	e.addNode("n", localcluster.FakeNode{GPUs: 3})
	e.createPod("v", share(60), priority("low"))
	e.waitBound("v")
	e.createPod("x1", share(65), priority("high"))
	e.createPod("x2", share(65), priority("high"))
	e.waitBound("x1")
	e.waitBound("x2")
	if use := e.checkNoOverbooking(); len(use) != 3 {
		t.Fatalf("want one pod per GPU, got %v", use)
	}

	created := time.Now()
	e.createPod("h", share(70), priority("high"))
	e.waitVictims("h", "n", []string{"v"}, "v", "x1", "x2")
	e.createPod("l", share(40), priority("low"))
	e.waitUnschedulable("l", reasonCapacity)
	e.forceDelete("v")
	h := e.waitBoundSince("h", created)
	if a := e.assignmentOf(h)["main"]; len(a) != 1 || a[0].Percent != 70 {
		t.Fatalf("h got %v", a)
	}
	e.waitUnschedulable("l", reasonCapacity)
	e.checkNoOverbooking()
}

// reasonCapacity is TesseraGPU's Filter reason for GPUs that are taken.
const reasonCapacity = "insufficient gpu capacity"
