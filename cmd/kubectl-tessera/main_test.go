package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from the current output")

// t0 is the fixture's heartbeat time; the command's clock is pinned 90
// seconds later, so ages in the output never move.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Verbose() {
		// The apiserver logs hundreds of lines.
		klog.SetLogger(logr.Discard())
	}
	os.Exit(m.Run())
}

// TestCommandLine covers what needs no cluster: help, version, bad
// arguments, a missing kubeconfig.
func TestCommandLine(t *testing.T) {
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "help", args: []string{"--help"}, stdout: "kubectl tessera [command]"},
		{name: "help command", args: []string{"help"}, stdout: "--scheduler-name string"},
		{name: "help of a command", args: []string{"explain", "--help"}, stdout: "kubectl tessera explain POD [flags]"},
		{name: "version flag", args: []string{"--version"}, stdout: "kubectl-tessera "},
		{name: "version command", args: []string{"version"}, stdout: "kubernetes v1.37.2"},
		{name: "completion", args: []string{"completion", "bash"}, stdout: "__start_tessera"},
		{name: "unknown command", args: []string{"gpus"}, code: 1, stderr: `unknown command "gpus"`},
		{name: "unknown flag", args: []string{"--bogus"}, code: 1, stderr: "unknown flag: --bogus"},
		{name: "bad output", args: []string{"-o", "yamll"}, code: 1, stderr: `unknown output format "yamll"`},
		{name: "custom columns without columns", args: []string{"nodes", "-o", "custom-columns="}, code: 1, stderr: "no custom columns given"},
		{name: "pending takes no names", args: []string{"pending", "x"}, code: 1, stderr: `unknown command "x"`},
		{name: "explain needs a pod", args: []string{"explain"}, code: 1, stderr: "accepts 1 arg(s), received 0"},
		{name: "bad selector", args: []string{"nodes", "-l", "a=(b"}, code: 1, stderr: `invalid label selector "a=(b"`},
		{name: "empty scheduler name", args: []string{"--scheduler-name="}, code: 1, stderr: "--scheduler-name must not be empty"},
		{name: "missing kubeconfig", args: []string{"--kubeconfig", filepath.Join(t.TempDir(), "none")}, code: 1, stderr: "none: no such file"},
		// Port 1 on loopback refuses connections.
		{name: "unreachable", args: []string{"--server", "https://127.0.0.1:1", "--insecure-skip-tls-verify"}, code: 1,
			stderr: "cannot reach the API server at https://127.0.0.1:1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Whatever kubeconfig this machine has stays out of it.
			t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "absent"))
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), c.args, &stdout, &stderr)
			if code != c.code || !strings.Contains(stdout.String(), c.stdout) || !strings.Contains(stderr.String(), c.stderr) {
				t.Errorf("run(%q) = %d\nstdout: %s\nstderr: %s\nwant %d, stdout containing %q, stderr containing %q",
					c.args, code, stdout.String(), stderr.String(), c.code, c.stdout, c.stderr)
			}
		})
	}
}

// TestAgainstCluster runs the command against an in-process apiserver with
// a fixture of GPUNodes, bound pods carrying assignments, pending pods and
// their FailedScheduling events, and compares its output with
// testdata/*.golden. Run with -update to rewrite them.
func TestAgainstCluster(t *testing.T) {
	f := startFixture(t)
	ctx, c := f.ctx, f.c
	f.build()

	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"overview", nil},
		{"overview-wide", []string{"-o", "wide"}},
		{"overview-json", []string{"-o", "json"}},
		{"nodes", []string{"nodes"}},
		{"nodes-named", []string{"nodes", "h100-b", "cpu-1"}},
		{"nodes-not-found", []string{"nodes", "a100", "gpu-9"}},
		{"overview-summarised", []string{"--max-gpu-rows", "4"}},
		{"overview-jsonpath", []string{"-o", "jsonpath={range .nodes[*]}{.name}{\": \"}{.gpus[*].used}{\"\\n\"}{end}"}},
		{"pending-go-template", []string{"pending", "-A", "-o", "go-template={{range .pending}}{{.namespace}}/{{.pod}} {{.request}}{{\"\\n\"}}{{end}}"}},
		{"summary", []string{"summary"}},
		{"summary-wide-selector", []string{"summary", "-o", "wide", "-l", "kubernetes.io/hostname in (h100-a,a100)"}},
		{"summary-json", []string{"summary", "-o", "json"}},
		{"nodes-custom-columns", []string{"nodes", "-o", "custom-columns=NODE:.node,GPU:.index,MODEL:.model,USED:.used,HOLDERS:.holders[*].pod"}},
		{"nodes-selector-yaml", []string{"nodes", "-l", "kubernetes.io/hostname=a100", "-o", "yaml"}},
		{"nodes-no-match", []string{"nodes", "-l", "pool=none"}},
		{"pending", []string{"pending"}},
		{"pending-all-no-headers", []string{"pending", "-A", "--no-headers"}},
		{"pending-custom-columns", []string{"pending", "-A", "-o", "custom-columns=NAMESPACE:.namespace,POD:.pod,REQUEST:.request"}},
		{"pending-namespace-wide", []string{"pending", "-n", "ml", "-o", "wide"}},
		{"explain-too-big", []string{"explain", "too-big"}},
		{"explain-model", []string{"explain", "-n", "ml", "a30-job"}},
		{"explain-share-one-node", []string{"explain", "-n", "ml", "retried", "--node", "h100-a"}},
		{"explain-yaml", []string{"explain", "-n", "ml", "fresh", "-o", "yaml"}},
		{"explain-bound", []string{"explain", "-n", "ml", "train"}},
		{"explain-not-found", []string{"explain", "nope"}},
		{"pending-none", []string{"pending", "-n", "kube-public"}},
		{"pending-other-scheduler", []string{"pending", "--scheduler-name", "default-scheduler"}},
		{"forbidden", []string{"--as", "alice"}},
		{"events-forbidden", []string{"--as", "bob"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			compare(t, tc.golden, transcript(ctx, c.Kubeconfig, tc.args))
		})
	}

	t.Run("watch", func(t *testing.T) { f.watch(c.Kubeconfig) })

	// Last, as in a cluster where Tessera was never installed: no CRD.
	t.Run("no-crd", func(t *testing.T) {
		f.deleteCRD()
		compare(t, "no-crd", transcript(ctx, c.Kubeconfig, nil))
	})
}

// transcript runs the command and records its exit code and output.
func transcript(ctx context.Context, kubeconfig string, args []string) string {
	var stdout, stderr bytes.Buffer
	code := run(ctx, append([]string{"--kubeconfig", kubeconfig}, args...), &stdout, &stderr)
	cmd := strings.TrimSpace("kubectl tessera " + strings.Join(args, " "))
	return fmt.Sprintf("$ %s\nexit code: %d\n--- stdout\n%s--- stderr\n%s", cmd, code, stdout.String(), stderr.String())
}

func compare(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// startFixture starts an empty cluster for a test, stopped when it ends,
// with the command's clock pinned 90 seconds after t0.
func startFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: t.TempDir(), TB: t})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	clock = func() time.Time { return t0.Add(90 * time.Second) }
	t.Cleanup(func() { clock = time.Now })
	return &fixture{t: t, ctx: ctx, c: c}
}

// fixture builds the cluster the golden files show.
type fixture struct {
	t   *testing.T
	ctx context.Context
	c   *localcluster.Cluster
}

func (f *fixture) build() {
	f.t.Helper()
	for _, ns := range []string{"ml"} {
		if _, err := f.c.Client.CoreV1().Namespaces().Create(f.ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			f.t.Fatal(err)
		}
	}
	// bob may read everything but events.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "gpu-viewer-without-events"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{v1alpha1.GroupName}, Resources: []string{"gpunodes"}, Verbs: []string{"get", "list"}},
	}}
	if _, err := f.c.Client.RbacV1().ClusterRoles().Create(f.ctx, role, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bob"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "bob"}}}
	if _, err := f.c.Client.RbacV1().ClusterRoleBindings().Create(f.ctx, binding, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	// Two H100 nodes, one with a GPU hit by an XID and another drained by an
	// administrator, an A100 node and a CPU node.
	f.node(localcluster.FakeNode{Name: "h100-a", GPUs: 4, Islands: 2})
	f.node(localcluster.FakeNode{Name: "h100-b", GPUs: 2, Mutate: func(gn *v1alpha1.GPUNode) {
		g := &gn.Status.GPUs[1]
		g.Health = v1alpha1.GPUHealth{Healthy: false, Reason: "XID 79", Since: &metav1.Time{Time: t0}}
		g.Taints = []v1alpha1.DeviceTaint{{Key: "tessera.io/xid", Value: "79", Effect: v1.TaintEffectNoSchedule}}
		gn.Status.HealthyCount = 1
		gn.Spec.DeviceTaints = []v1alpha1.GPUDeviceTaint{{UUID: gn.Status.GPUs[0].UUID,
			DeviceTaint: v1alpha1.DeviceTaint{Key: "tessera.io/maintenance", Value: "planned", Effect: v1.TaintEffectNoSchedule}}}
	}})
	f.node(localcluster.FakeNode{Name: "a100", GPUs: 1, Model: "NVIDIA A100-SXM4-80GB", Islands: -1})
	f.node(localcluster.FakeNode{Name: "cpu-1"})

	uuid := localcluster.FakeGPUUUID
	f.bound("ml", "train", "h100-a", gpus(2), assigned("main", uuid("h100-a", 0), 100, uuid("h100-a", 1), 100))
	f.bound("default", "infer-1", "h100-a", share(30), assigned("main", uuid("h100-a", 2), 30))
	f.bound("default", "infer-2", "h100-a", share(50), assigned("main", uuid("h100-a", 2), 50))
	f.bound("ml", "notebook", "h100-a", share(10), assigned("main", uuid("h100-a", 3), 10))
	// A finished pod holds nothing any more.
	done := f.bound("default", "finished", "h100-a", gpus(1), assigned("main", uuid("h100-a", 3), 100))
	done.Status.Phase = v1.PodSucceeded
	if _, err := f.c.Client.CoreV1().Pods("default").UpdateStatus(f.ctx, done, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	f.bound("kube-system", "gpu-exporter", "h100-a")
	f.bound("default", "burn-in", "h100-b", gpus(1), assigned("main", uuid("h100-b", 0), 100),
		func(p *v1.Pod) {
			p.Spec.Tolerations = []v1.Toleration{{Key: "tessera.io/maintenance", Operator: v1.TolerationOpExists}}
		})
	f.bound("default", "corrupt", "h100-b", gpus(1), func(p *v1.Pod) { p.Annotations = map[string]string{assignment.Annotation: "{broken"} })
	f.bound("default", "legacy", "a100", gpus(1))
	f.bound("default", "web", "cpu-1")

	tooBig := f.pending("default", "too-big", gpus(16))
	f.coreEvent(tooBig, 0, "0/4 nodes are available: gpu inventory not yet synced.")
	f.coreEvent(tooBig, time.Minute, "0/4 nodes are available: pod asks for 16 whole gpus; the largest gpu node has 4. "+
		"preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.")
	a30 := f.pending("ml", "a30-job", gpus(1), models("NVIDIA A30-PCIE-24GB"))
	f.coreEvent(a30, time.Minute, "0/4 nodes are available: gpu inventory not yet synced.")
	// The scheduler writes events.k8s.io events; a repeat advances the
	// series, not the event time.
	f.seriesEvent(a30, 30*time.Second, 2*time.Minute, "0/4 nodes are available: 1 node(s) had untolerated taint(s), "+
		"3 no gpu of an allowed model. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.")
	f.pending("ml", "fresh", share(20))
	// The scheduler folds repeated FailedScheduling events into a series
	// that keeps the first message; the PodScheduled condition has the
	// current one, and is what pending shows.
	retried := f.pending("ml", "retried", share(60))
	f.seriesEvent(retried, 0, 80*time.Second, "0/4 nodes are available: gpu inventory not yet synced.")
	f.unschedulable(retried, "0/4 nodes are available: 1 insufficient gpu capacity, 3 node(s) had untolerated taint(s). "+
		"preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.")
	badShare := f.pending("default", "bad-share", share(150))
	f.coreEvent(badShare, 0, `0/4 nodes are available: invalid gpu request: container "main" asks for tessera.io/gpu-percent: 150; `+
		"it must be 1-99 (ask for nvidia.com/gpu for whole GPUs).")
	f.pending("default", "cpu-job", func(p *v1.Pod) { p.Spec.SchedulerName = "default-scheduler" })

	// Health events about GPUNodes, recorded as the device plugin records
	// them: in the default namespace, without the object's UID.
	f.gpuNodeEvent("h100-b", 10*time.Second, 1, v1.EventTypeNormal, "GPUHealthy", "GPU GPU-h100-b-0: healthy again")
	f.gpuNodeEvent("h100-b", 30*time.Second, 2, v1.EventTypeWarning, "GPUUnhealthy", "GPU GPU-h100-b-1: unhealthy: XID 79")
	f.gpuNodeEvent("h100-a", 20*time.Second, 1, v1.EventTypeWarning, "GPUUnhealthy", "GPU GPU-h100-a-3: unhealthy: XID 48")
}

func (f *fixture) gpuNodeEvent(node string, at time.Duration, count int32, typ, reason, msg string) {
	f.t.Helper()
	ts := metav1.Time{Time: t0.Add(at)}
	ev := &v1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, Name: fmt.Sprintf("%s.%s.%d", node, reason, at/time.Second)},
		InvolvedObject: v1.ObjectReference{Kind: "GPUNode", APIVersion: v1alpha1.SchemeGroupVersion.String(), Name: node},
		Reason:         reason, Message: msg, Type: typ, Count: count,
		Source:         v1.EventSource{Component: "tessera-device-plugin", Host: node},
		FirstTimestamp: ts, LastTimestamp: ts,
	}
	if _, err := f.c.Client.CoreV1().Events(metav1.NamespaceDefault).Create(f.ctx, ev, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) node(n localcluster.FakeNode) {
	f.t.Helper()
	n.Heartbeat = t0
	if err := f.c.AddNode(f.ctx, n); err != nil {
		f.t.Fatal(err)
	}
}

type podOpt func(*v1.Pod)

func limit(r v1.ResourceName, n int64) podOpt {
	return func(p *v1.Pod) {
		p.Spec.Containers[0].Resources.Limits = v1.ResourceList{r: *resource.NewQuantity(n, resource.DecimalSI)}
	}
}
func gpus(n int64) podOpt  { return limit(gpu.ResourceGPU, n) }
func share(n int64) podOpt { return limit(gpu.ResourcePercent, n) }

func models(m string) podOpt {
	return func(p *v1.Pod) { p.Annotations = map[string]string{gpu.ModelsAnnotation: m} }
}

// assigned writes the assignment annotation of one container: pairs of
// GPU UUID and percent.
func assigned(container string, pairs ...any) podOpt {
	return func(p *v1.Pod) {
		a := assignment.Assignment{}
		for i := 0; i < len(pairs); i += 2 {
			a[container] = append(a[container], assignment.Device{UUID: pairs[i].(string), Percent: pairs[i+1].(int)})
		}
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[assignment.Annotation] = a.String()
	}
}

func (f *fixture) pod(ns, name, node string, opts ...podOpt) *v1.Pod {
	f.t.Helper()
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.PodSpec{SchedulerName: "tessera-scheduler", NodeName: node,
			Containers: []v1.Container{{Name: "main", Image: "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04"}}},
	}
	for _, o := range opts {
		o(p)
	}
	p, err := f.c.Client.CoreV1().Pods(ns).Create(f.ctx, p, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// bound creates a pod already on a node, as if the scheduler had placed it.
func (f *fixture) bound(ns, name, node string, opts ...podOpt) *v1.Pod {
	f.t.Helper()
	return f.pod(ns, name, node, opts...)
}

func (f *fixture) pending(ns, name string, opts ...podOpt) *v1.Pod {
	f.t.Helper()
	return f.pod(ns, name, "", opts...)
}

// unschedulable sets the pod's PodScheduled condition as the scheduler does
// after a failed attempt.
func (f *fixture) unschedulable(p *v1.Pod, msg string) {
	f.t.Helper()
	p.Status.Conditions = append(p.Status.Conditions, v1.PodCondition{Type: v1.PodScheduled, Status: v1.ConditionFalse,
		Reason: v1.PodReasonUnschedulable, Message: msg, LastTransitionTime: metav1.Time{Time: t0}})
	if _, err := f.c.Client.CoreV1().Pods(p.Namespace).UpdateStatus(f.ctx, p, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// coreEvent records a FailedScheduling event the way older recorders do.
func (f *fixture) coreEvent(p *v1.Pod, at time.Duration, msg string) {
	f.t.Helper()
	ts := metav1.Time{Time: t0.Add(at)}
	ev := &v1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: p.Namespace, Name: fmt.Sprintf("%s.%d", p.Name, at/time.Second)},
		InvolvedObject: v1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		Reason:         "FailedScheduling", Message: msg, Type: v1.EventTypeWarning,
		Source:         v1.EventSource{Component: "tessera-scheduler"},
		FirstTimestamp: ts, LastTimestamp: ts, Count: 1,
	}
	if _, err := f.c.Client.CoreV1().Events(p.Namespace).Create(f.ctx, ev, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// seriesEvent records a FailedScheduling event the way the scheduler does:
// an events.k8s.io event first seen at first and last seen at last.
func (f *fixture) seriesEvent(p *v1.Pod, first, last time.Duration, msg string) {
	f.t.Helper()
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name + ".series"},
		EventTime:           metav1.MicroTime{Time: t0.Add(first)},
		Series:              &eventsv1.EventSeries{Count: 3, LastObservedTime: metav1.MicroTime{Time: t0.Add(last)}},
		ReportingController: "tessera-scheduler", ReportingInstance: "tessera-scheduler-0",
		Action: "Scheduling", Reason: "FailedScheduling", Note: msg, Type: v1.EventTypeWarning,
		Regarding: v1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
	}
	if _, err := f.c.Client.EventsV1().Events(p.Namespace).Create(f.ctx, ev, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// deleteCRD removes the GPUNode CRD and waits until the apiserver stops
// serving the resource.
func (f *fixture) deleteCRD() {
	f.t.Helper()
	ext, err := apiextensionsclient.NewForConfig(f.c.Config)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := ext.ApiextensionsV1().CustomResourceDefinitions().Delete(f.ctx, "gpunodes.tessera.io", metav1.DeleteOptions{}); err != nil {
		f.t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(f.ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := f.c.GPU.TesseraV1alpha1().GPUNodes().List(ctx, metav1.ListOptions{})
		return err != nil, nil
	})
	if err != nil {
		f.t.Fatalf("the GPUNode resource is still served: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// watch runs `nodes --watch`: it prints the table, then, when a pod is
// bound to a GPU, the row of that GPU again with its new holder, without
// headers, and it stops cleanly when its context ends.
func (f *fixture) watch(kubeconfig string) {
	t := f.t
	ctx, cancel := context.WithCancel(f.ctx)
	var stdout, stderr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"--kubeconfig", kubeconfig, "nodes", "a100", "--watch"}, &stdout, &stderr)
	}()
	waitFor := func(what string, ok func(string) bool) {
		t.Helper()
		err := wait.PollUntilContextTimeout(f.ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return ok(stdout.String()), nil
		})
		if err != nil {
			t.Fatalf("%s; stdout:\n%s\nstderr:\n%s", what, stdout.String(), stderr.String())
		}
	}
	waitFor("no first listing", func(s string) bool { return strings.Contains(s, "NODE") })
	first := stdout.String()
	f.bound("default", "watched", "a100", share(40), assigned("main", localcluster.FakeGPUUUID("a100", 0), 40))
	waitFor("the new holder never showed", func(s string) bool { return strings.Contains(s, "default/watched[main] 40%") })
	update := strings.TrimPrefix(stdout.String(), first)
	if strings.Contains(update, "NODE") || !strings.Contains(update, "40%") {
		t.Errorf("the update repeats the header or lacks the new use:\n%s", update)
	}
	cancel()
	if c := <-code; c != 0 {
		t.Errorf("exit code %d after the watch was stopped; stderr:\n%s", c, stderr.String())
	}
}
