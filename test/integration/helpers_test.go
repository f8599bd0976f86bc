package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
	"github.com/tessera-gpu/tessera/pkg/podgpu"
	"github.com/tessera-gpu/tessera/pkg/report"
)

const schedulerName = "tessera-scheduler"

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Verbose() {
		// The apiserver and scheduler log hundreds of lines per test.
		klog.SetLogger(logr.Discard())
	}
	os.Exit(m.Run())
}

// env is one test's control plane and scheduler.
type env struct {
	t     *testing.T
	ctx   context.Context
	c     *localcluster.Cluster
	dir   string
	sched *localcluster.Scheduler
	so    localcluster.SchedulerOptions
}

func newEnv(t *testing.T, so localcluster.SchedulerOptions) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, TB: t})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	e := &env{t: t, ctx: ctx, c: c, dir: dir, so: so}
	e.startScheduler()
	t.Cleanup(func() {
		if e.sched != nil {
			e.sched.Stop()
		}
	})
	return e
}

func (e *env) startScheduler() {
	e.t.Helper()
	s, err := e.c.StartScheduler(e.ctx, e.dir, e.so)
	if err != nil {
		e.t.Fatal(err)
	}
	e.sched = s
}

func (e *env) stopScheduler() {
	e.sched.Stop()
	e.sched = nil
}

// addNode creates a node and its GPUNode inventory; GPU nodes are split
// into two NVLink islands on two NUMA nodes.
func (e *env) addNode(name string, fn localcluster.FakeNode) {
	e.t.Helper()
	fn.Name = name
	if fn.Islands == 0 {
		fn.Islands = 2
	}
	if err := e.c.AddNode(e.ctx, fn); err != nil {
		e.t.Fatal(err)
	}
}

func gpuUUID(node string, i int) string { return localcluster.FakeGPUUUID(node, i) }

type podOpt func(*v1.Pod)

func gpus(n int) podOpt { return resources("nvidia.com/gpu", fmt.Sprint(n)) }
func share(p int) podOpt {
	return resources("tessera.io/gpu-percent", fmt.Sprint(p))
}
func resources(name v1.ResourceName, q string) podOpt {
	return func(p *v1.Pod) {
		c := &p.Spec.Containers[0]
		if c.Resources.Limits == nil {
			c.Resources.Limits = v1.ResourceList{}
		}
		c.Resources.Limits[name] = resource.MustParse(q)
	}
}
func annotated(k, v string) podOpt {
	return func(p *v1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}
func scheduler(name string) podOpt { return func(p *v1.Pod) { p.Spec.SchedulerName = name } }
func tolerating(key string) podOpt {
	return func(p *v1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, v1.Toleration{Key: key, Operator: v1.TolerationOpExists})
	}
}

func (e *env) createPod(name string, opts ...podOpt) *v1.Pod {
	e.t.Helper()
	p, err := e.tryCreatePod(name, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) tryCreatePod(name string, opts ...podOpt) (*v1.Pod, error) {
	return e.c.Client.CoreV1().Pods("default").Create(e.ctx, newPod(name, opts...), metav1.CreateOptions{})
}

// newPod is a pod of tessera-scheduler in the default namespace with one
// container, "main", asking for 100m CPU.
func newPod(name string, opts ...podOpt) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.PodSpec{
			SchedulerName: schedulerName,
			Containers: []v1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10",
				Resources: v1.ResourceRequirements{Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("100m")}}}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// waitBound waits until the pod is bound and returns it.
func (e *env) waitBound(name string) *v1.Pod {
	e.t.Helper()
	var pod *v1.Pod
	err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := e.c.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return p.Spec.NodeName != "", nil
	})
	if err != nil {
		e.t.Fatalf("pod %s not bound: %v; events: %s", name, err, e.events(name))
	}
	return pod
}

// waitUnschedulable waits for a FailedScheduling event on the pod that
// contains want (or one of its "|"-separated alternatives), and checks the
// pod is still unbound.
func (e *env) waitUnschedulable(name, want string) string {
	e.t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		msg = e.schedulingMessages(name)
		for _, w := range strings.Split(want, "|") {
			if strings.Contains(msg, w) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		e.t.Fatalf("pod %s: no scheduling failure containing %q; saw: %s", name, want, msg)
	}
	if p, err := e.c.Client.CoreV1().Pods("default").Get(e.ctx, name, metav1.GetOptions{}); err != nil || p.Spec.NodeName != "" {
		e.t.Fatalf("pod %s should be pending: node %q, err %v", name, p.Spec.NodeName, err)
	}
	return msg
}

// schedulingMessages returns the pod's events followed by the message of its
// PodScheduled condition. Both are needed: the scheduler's event recorder
// folds a repeated FailedScheduling into a series of the first one and keeps
// that first message, so a pod retried after the scheduler caught up shows
// its current reason only in the condition.
func (e *env) schedulingMessages(name string) string {
	msg := e.events(name)
	p, err := e.c.Client.CoreV1().Pods("default").Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		return msg + " | " + err.Error()
	}
	if m, ok := report.UnschedulableMessage(p); ok {
		msg += " | PodScheduled: " + m
	}
	return msg
}

// waitEvent waits for an event on the named object whose "reason: message"
// contains want.
func (e *env) waitEvent(name, want string) {
	e.t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		msg = e.events(name)
		return strings.Contains(msg, want), nil
	})
	if err != nil {
		e.t.Fatalf("%s: no event containing %q; events: %s", name, want, msg)
	}
}

func (e *env) events(pod string) string {
	list, err := e.c.Client.CoreV1().Events("default").List(e.ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pod).String(),
	})
	if err != nil {
		return err.Error()
	}
	var msgs []string
	for _, ev := range list.Items {
		msgs = append(msgs, ev.Reason+": "+ev.Message)
	}
	return strings.Join(msgs, " | ")
}

// assignmentOf returns the pod's parsed assignment, failing the test if it
// is missing or invalid.
func (e *env) assignmentOf(p *v1.Pod) assignment.Assignment {
	e.t.Helper()
	a, err := assignment.Parse(p.Annotations[assignment.Annotation])
	if err != nil {
		e.t.Fatalf("pod %s: %v", p.Name, err)
	}
	return a
}

// checkNoOverbooking sums every bound pod's assignment per GPU and fails if
// a GPU is above 100% or a GPU is named that its node does not have.
func (e *env) checkNoOverbooking() map[string]int {
	e.t.Helper()
	return e.checkBookings(nil)
}

// checkBookings makes checkNoOverbooking's checks over every bound pod, and
// returns the per-GPU sums of only the pods named in of (all when of is
// nil).
func (e *env) checkBookings(of map[string]bool) map[string]int {
	e.t.Helper()
	pods, err := e.c.Client.CoreV1().Pods("").List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	inventory := map[string]string{} // GPU UUID -> node
	gns, err := e.c.GPU.TesseraV1alpha1().GPUNodes().List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, gn := range gns.Items {
		for _, g := range gn.Status.GPUs {
			inventory[g.UUID] = gn.Name
		}
	}
	all, use := map[string]int{}, map[string]int{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName == "" || p.Status.Phase == v1.PodFailed || p.Status.Phase == v1.PodSucceeded {
			continue
		}
		// What the pod holds by the one contract: annotations on pods that
		// ask for no GPU, or for containers that ask for none, hold nothing.
		h := podgpu.Of(p)
		if h.State != podgpu.Recorded {
			continue
		}
		// The pod's peak: an init container's GPU handed on to the app
		// container counts once.
		for u, pct := range h.Use {
			if inventory[u] != p.Spec.NodeName {
				e.t.Errorf("pod %s on %s got GPU %s, which node %q lists", p.Name, p.Spec.NodeName, u, inventory[u])
			}
			all[u] += pct
			if of == nil || of[p.Name] {
				use[u] += pct
			}
		}
	}
	for u, pct := range all {
		if pct > 100 {
			e.t.Errorf("GPU %s is booked at %d%%", u, pct)
		}
	}
	return use
}
