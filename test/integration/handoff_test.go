package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/deviceplugin/agent"
	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// startAgent runs tessera-device-plugin in fake mode for node against the
// kubelet k, and returns a function that stops it.
func (e *env) startAgent(node, kind string, k *kubelet) func() {
	e.t.Helper()
	return e.startAgentBeating(node, kind, k, 5*time.Second)
}

// startAgentBeating is startAgent with the given heartbeat period.
func (e *env) startAgentBeating(node, kind string, k *kubelet, heartbeat time.Duration) func() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := agent.Run(ctx, agent.Config{
			NodeName: node, Kube: e.c.Client, GPU: e.c.GPU, Fake: kind,
			DevicePluginDir: k.dir, Heartbeat: heartbeat, ReconcileInterval: 500 * time.Millisecond,
			Health: health.DefaultConfig(), KubeletRecord: k,
		}, nil)
		if err != nil {
			e.t.Errorf("device plugin: %v", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// TestBulkHandOff is the bulk race, end to end: the real apiserver, the
// real tessera-scheduler, tessera-device-plugin in fake mode and the real
// kubelet device manager for one 8-GPU node. 64 pods arrive at once; the
// kubelet admits bound pods one at a time, in arrival order for odd seeds
// and in shuffled batches for even ones. Afterwards every admitted
// container's annotation must be what the kubelet gave it, no GPU may be
// over 100 %, and every admitted pod must be in the accounting.
func TestBulkHandOff(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	const node = "gpu-0"
	e.addNode(node, localcluster.FakeNode{GPUs: 8, NoInventory: true})
	var lat []time.Duration
	var exact, total int
	for seed := int64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			l, x, n := e.bulkRound(t, node, seed)
			lat, exact, total = append(lat, l...), exact+x, total+n
		})
		if t.Failed() {
			return
		}
	}
	t.Logf("the kubelet served the scheduler's exact choice in %d of %d admissions (%.1f%%)", exact, total, 100*float64(exact)/float64(max(total, 1)))
	// Reported, not asserted: timing belongs to benchmarks.
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		t.Logf("kubelet admissions: %d, latency p50 %v p99 %v max %v", len(lat), lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	}
}

func (e *env) bulkRound(t *testing.T, node string, seed int64) (lat []time.Duration, exact, total int) {
	rng := rand.New(rand.NewSource(seed))
	k := startKubelet(t, shortTempDir(t))
	stop := e.startAgent(node, "dgxh100", k)
	defer stop()
	k.waitAllocatable("nvidia.com/gpu", 8)

	prefix := fmt.Sprintf("s%d-", seed)
	for i := 0; i < 64; i++ {
		name := fmt.Sprintf("%sp%02d", prefix, i)
		if i%8 == 0 {
			e.createPod(name, gpus(1))
		} else {
			e.createPod(name, share(10+rng.Intn(61)))
		}
	}

	// Play the kubelet: admit bound pods one at a time.
	admitted, failed := map[string]bool{}, map[string]bool{}
	for quiet := 0; quiet < 20; { // 20 polls (2 s) without a newly bound pod
		pods, err := e.c.Client.CoreV1().Pods("default").List(e.ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var batch []*v1.Pod
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Spec.NodeName == node && !admitted[p.Name] && !failed[p.Name] {
				batch = append(batch, p)
			}
		}
		if len(batch) == 0 {
			quiet++
			time.Sleep(100 * time.Millisecond)
			continue
		}
		quiet = 0
		sort.Slice(batch, func(i, j int) bool { return batch[i].Name < batch[j].Name })
		if seed%2 == 0 {
			rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		}
		for _, p := range batch {
			start := time.Now()
			err := k.admit(e.ctx, p)
			lat = append(lat, time.Since(start))
			if err != nil {
				// The kubelet rejects the pod: it fails and holds nothing.
				failed[p.Name] = true
				t.Logf("admission of %s failed: %v", p.Name, err)
				if len(failed) == 1 {
					e.dumpState(t, k, p)
				}
				p.Status.Phase = v1.PodFailed
				p.Status.Reason = "UnexpectedAdmissionError"
				p.Status.Message = err.Error()
				if _, err := e.c.Client.CoreV1().Pods("default").UpdateStatus(e.ctx, p, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
				continue
			}
			admitted[p.Name] = true
			// The annotation the kubelet was steered by is the scheduler's
			// choice: no correction is written before admission.
			total++
			if e.servedAsChosen(k, p) {
				exact++
			}
			if os.Getenv("HANDOFF_DEBUG") != "" {
				var got []string
				for res, ids := range k.m.GetDevices(string(p.UID), "main") {
					var list []string
					for id := range ids {
						list = append(list, id)
					}
					for _, x := range devicesOfTruth(handoff.ContainerDevices{Resource: handoff.Resource(res), IDs: list}) {
						got = append(got, fmt.Sprintf("%s:%d", x.UUID[:12], x.Percent))
					}
				}
				t.Logf("admitted %s: annotation %s kubelet %v", p.Name, p.Annotations[assignment.Annotation], got)
			}
		}
	}

	// Wait for the reconciler to write the kubelet's truth everywhere.
	var mismatch string
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		mismatch = e.compareWithKubelet(k, admitted)
		return mismatch == "", nil
	})
	if err != nil {
		t.Fatalf("annotations do not match the kubelet: %s", mismatch)
	}
	// A pod the scheduler bound after the admission loop went quiet was
	// never shown to the kubelet; it is checked for overbooking but kept
	// out of the comparison with the kubelet.
	use := e.checkBookings(admitted)
	truth := map[string]int{}
	devs, _ := k.List(e.ctx)
	devs = handoff.MergeContainerDevices(devs)
	for _, d := range devs {
		for _, x := range devicesOfTruth(d) {
			truth[x.UUID] += x.Percent
		}
	}
	// Init containers aside (none here), the annotations' per-GPU sums are
	// the kubelet's: every admitted pod is in the accounting.
	if fmt.Sprint(sortedUse(use)) != fmt.Sprint(sortedUse(truth)) {
		t.Errorf("scheduler-visible use %v, kubelet %v", sortedUse(use), sortedUse(truth))
	}
	t.Logf("seed %d: %d pods admitted, %d failed admission, GPU use %v", seed, len(admitted), len(failed), sortedUse(truth))
	if len(failed) > 0 {
		t.Errorf("%d pods the scheduler placed failed admission: %v", len(failed), failed)
	}

	// Clean up for the next round.
	if err := e.c.Client.CoreV1().Pods("default").DeleteCollection(e.ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := e.c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatal("pods not deleted")
	}
	return lat, exact, total
}

// servedAsChosen reports whether the kubelet gave the pod's container the
// GPUs and shares its annotation names.
func (e *env) servedAsChosen(k *kubelet, p *v1.Pod) bool {
	annotation, kubelet, err := mainDevices(k, p)
	return err == nil && annotation == kubelet
}

// compareWithKubelet returns "" when every admitted pod's annotation equals
// the kubelet's record of its containers, or a description of the first
// difference.
func (e *env) compareWithKubelet(k *kubelet, admitted map[string]bool) string {
	pods, err := e.c.Client.CoreV1().Pods("default").List(e.ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !admitted[p.Name] {
			continue
		}
		annotation, kubelet, err := mainDevices(k, p)
		if err != nil {
			return fmt.Sprintf("%s: %v", p.Name, err)
		}
		if annotation != kubelet {
			return fmt.Sprintf("%s: annotation %v, kubelet %v", p.Name, annotation, kubelet)
		}
	}
	return ""
}

// mainDevices is what the pod's annotation gives its container "main", and
// what the kubelet gave it, each as a sorted list of GPU:percent.
func mainDevices(k *kubelet, p *v1.Pod) (annotation, kubelet string, err error) {
	a, err := assignment.Parse(p.Annotations[assignment.Annotation])
	if err != nil {
		return "", "", err
	}
	var want, got []string
	for _, x := range a["main"] {
		want = append(want, fmt.Sprintf("%s:%d", x.UUID, x.Percent))
	}
	for res, ids := range k.m.GetDevices(string(p.UID), "main") {
		var list []string
		for id := range ids {
			list = append(list, id)
		}
		for _, x := range devicesOfTruth(handoff.ContainerDevices{Resource: handoff.Resource(res), IDs: list}) {
			got = append(got, fmt.Sprintf("%s:%d", x.UUID, x.Percent))
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	return fmt.Sprint(want), fmt.Sprint(got), nil
}

// devicesOfTruth groups a container's device IDs per GPU.
func devicesOfTruth(d handoff.ContainerDevices) []assignment.Device {
	count := map[string]int{}
	for _, id := range d.IDs {
		if d.Resource == handoff.Whole {
			count[id] += 100
		} else if u, _, ok := handoff.ParsePercentID(id); ok {
			count[u]++
		}
	}
	var out []assignment.Device
	for u, n := range count {
		out = append(out, assignment.Device{UUID: u, Percent: n})
	}
	return out
}

func sortedUse(m map[string]int) []string {
	var out []string
	for k, v := range m {
		if v > 0 {
			out = append(out, fmt.Sprintf("%s=%d", k, v))
		}
	}
	sort.Strings(out)
	return out
}

func (e *env) dumpState(t *testing.T, k *kubelet, failing *v1.Pod) {
	devs, _ := k.List(e.ctx)
	devs = handoff.MergeContainerDevices(devs)
	truth := map[string][]string{}
	for _, d := range devs {
		for _, x := range devicesOfTruth(d) {
			truth[x.UUID] = append(truth[x.UUID], fmt.Sprintf("%s:%d", d.Pod, x.Percent))
		}
	}
	pods, _ := e.c.Client.CoreV1().Pods("default").List(e.ctx, metav1.ListOptions{})
	claims := map[string][]string{}
	for _, p := range pods.Items {
		if p.Spec.NodeName == "" {
			continue
		}
		a, _ := assignment.Parse(p.Annotations[assignment.Annotation])
		for _, d := range a["main"] {
			claims[d.UUID] = append(claims[d.UUID], fmt.Sprintf("%s:%d", p.Name, d.Percent))
		}
	}
	t.Logf("failing pod %s wants %v", failing.Name, failing.Annotations[assignment.Annotation])
	for u := range claims {
		t.Logf("GPU %s\n   annotations %v\n   kubelet     %v", u[:12], claims[u], truth[u])
	}
}

// gatedRecord is the kubelet's record, unreadable until open is closed, as
// when the kubelet restarts with the plugin.
type gatedRecord struct {
	k     *kubelet
	open  chan struct{}
	calls atomic.Int32
}

func (g *gatedRecord) List(ctx context.Context) ([]handoff.ContainerDevices, error) {
	g.calls.Add(1)
	select {
	case <-g.open:
		return g.k.List(ctx)
	default:
		return nil, errors.New("connection refused")
	}
}

// TestPluginWaitsForTheKubeletsRecord starts the device plugin while the
// kubelet's PodResources cannot be read: it must not register with the
// kubelet (it would serve from a ledger that does not know what is given
// out) until a reading succeeds.
func TestPluginWaitsForTheKubeletsRecord(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("gpu-0", localcluster.FakeNode{GPUs: 8, NoInventory: true})
	k := startKubelet(t, shortTempDir(t))
	g := &gatedRecord{k: k, open: make(chan struct{})}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Run(ctx, agent.Config{NodeName: "gpu-0", Kube: e.c.Client, GPU: e.c.GPU, Fake: "dgxh100",
			DevicePluginDir: k.dir, Heartbeat: 5 * time.Second, ReconcileInterval: time.Second,
			Health: health.DefaultConfig(), KubeletRecord: g}, nil)
	}()
	defer func() { cancel(); <-done }()
	// The GPUNode is published whatever the kubelet does.
	e.waitGPUNode("gpu-0", func(gn *v1alpha1.GPUNode) bool { return gn.Status.GPUCount == 8 })
	if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		return g.calls.Load() >= 3, nil
	}); err != nil {
		t.Fatal("the plugin stopped trying to read the kubelet's record")
	}
	if n := k.allocatable(v1.ResourceName(handoff.Whole)); n != 0 {
		t.Fatalf("the plugin registered %d GPUs with the kubelet before it could read the kubelet's record", n)
	}
	close(g.open)
	k.waitAllocatable(v1.ResourceName(handoff.Whole), 8)
}

// TestSyncPodsSeesWhatTheInformerHasNot: the plugin's direct read of the
// API, made when no known pod fits a request, records a pod bound to its
// node that its informer has not delivered (here: no informer at all), so
// the kubelet is steered to the pod's GPUs; pods of other nodes and pods
// it already knows are left alone.
func TestSyncPodsSeesWhatTheInformerHasNot(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	u := []string{gpuUUID("n1", 0), gpuUUID("n1", 1)}
	bound := func(node, uuid string) podOpt {
		return func(p *v1.Pod) {
			p.Spec.NodeName = node
			annotated(assignment.Annotation, `{"main":[{"uuid":"`+uuid+`","percent":100}]}`)(p)
		}
	}
	e.createPod("mine", gpus(1), scheduler("other"), bound("n1", u[1]))
	e.createPod("theirs", gpus(1), scheduler("other"), bound("n2", u[0]))

	l := handoff.NewLedger(u)
	r := handoff.NewReconciler("n1", l, e.c.Client, nil, nil, nil)
	if ids, ok := l.Match(handoff.Whole, u, nil, 1); ok {
		t.Fatalf("an empty ledger matched %v", ids)
	}
	n, err := r.SyncPods(e.ctx)
	if err != nil || n != 1 {
		t.Fatalf("SyncPods = %d, %v; want 1 pod added", n, err)
	}
	if ids, ok := l.Match(handoff.Whole, u, nil, 1); !ok || fmt.Sprint(ids) != fmt.Sprint([]string{u[1]}) {
		t.Errorf("after SyncPods the request is steered to %v (%v), want %s", ids, ok, u[1])
	}
	if n, err := r.SyncPods(e.ctx); err != nil || n != 0 {
		t.Errorf("a second SyncPods = %d, %v; want nothing added", n, err)
	}
}
