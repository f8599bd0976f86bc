package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/deviceplugin/inventory"
	"github.com/tessera-gpu/tessera/manifests"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// asDevicePlugin returns clients that act as tessera-device-plugin's service
// account with a token bound to a pod on node (empty: no node claim).
func (e *env) asDevicePlugin(node string) (kubernetes.Interface, versioned.Interface) {
	e.t.Helper()
	cfg := rest.CopyConfig(e.c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:tessera-system:tessera-device-plugin",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:tessera-system", "system:authenticated"},
	}
	if node != "" {
		cfg.Impersonate.Extra = map[string][]string{"authentication.kubernetes.io/node-name": {node}}
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	gcfg := rest.CopyConfig(cfg)
	gcfg.ContentType, gcfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	gpus, err := versioned.NewForConfig(gcfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return kube, gpus
}

// TestDevicePluginStaysOnItsNode installs the device plugin's RBAC and
// admission policies from manifests/ and checks, as the plugin's service
// account, that a plugin may write its own node's GPUNode and pods and
// nothing of another node's.
func TestDevicePluginStaysOnItsNode(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	for _, m := range [][]byte{manifests.Namespace, manifests.DevicePluginRBAC, manifests.DevicePluginAdmissionPolicy} {
		if err := e.c.Apply(e.ctx, m, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.c.Apply(e.ctx, manifests.DevicePluginDaemonSet, true); err != nil {
		t.Fatalf("DaemonSet dry run: %v", err)
	}
	e.addNode("node-a", localcluster.FakeNode{})
	e.addNode("node-b", localcluster.FakeNode{})
	_, gpusA := e.asDevicePlugin("node-a")
	kubeA, _ := e.asDevicePlugin("node-a")
	_, gpusNone := e.asDevicePlugin("")

	for _, n := range []string{"node-a", "node-b"} {
		p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "on-" + n, Namespace: "default"},
			Spec: v1.PodSpec{NodeName: n, Containers: []v1.Container{{Name: "main", Image: "x"}}}}
		if _, err := e.c.Client.CoreV1().Pods("default").Create(e.ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{"tessera.io/gpu-assignment": `{"main":[{"uuid":"GPU-x","percent":100}]}`}}})
	taint, _ := json.Marshal(map[string]any{"spec": map[string]any{"taints": []map[string]string{{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}}}})

	// The policies take effect once the apiserver has loaded them, and it
	// may load one binding before the next: wait until a dry run of each
	// policy's denial is denied.
	dryRun := []string{metav1.DryRunAll}
	denials := []struct {
		what, want string
		try        func(ctx context.Context) error
	}{
		{"writing another node's GPUNode", "its own node", func(ctx context.Context) error {
			_, err := gpusA.TesseraV1alpha1().GPUNodes().Create(ctx, &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}, metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
		{"patching a pod on another node", "pods on its own node", func(ctx context.Context) error {
			_, err := kubeA.CoreV1().Pods("default").Patch(ctx, "on-node-b", types.MergePatchType, patch, metav1.PatchOptions{DryRun: dryRun})
			return err
		}},
		{"tainting another node", "only change its own node", func(ctx context.Context) error {
			_, err := kubeA.CoreV1().Nodes().Patch(ctx, "node-b", types.MergePatchType, taint, metav1.PatchOptions{DryRun: dryRun})
			return err
		}},
		{"an event from another node", "events from its own node", func(ctx context.Context) error {
			ev := &v1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-", Namespace: "default"},
				InvolvedObject: v1.ObjectReference{Kind: "Pod", Name: "on-node-b", Namespace: "default"},
				Reason:         "Test", Message: "test", Type: v1.EventTypeNormal, Source: v1.EventSource{Host: "node-b"}}
			_, err := kubeA.CoreV1().Events("default").Create(ctx, ev, metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
	}
	for _, d := range denials {
		var err error
		if pollErr := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			err = d.try(ctx)
			return err != nil && strings.Contains(err.Error(), d.want), nil
		}); pollErr != nil {
			t.Fatalf("%s: err = %v, want a denial from the admission policy", d.what, err)
		}
	}

	own, err := gpusA.TesseraV1alpha1().GPUNodes().Create(e.ctx, &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating its own GPUNode: %v", err)
	}
	own.Status = localcluster.FakeInventory(localcluster.FakeNode{Name: "node-a", GPUs: 2})
	if _, err := gpusA.TesseraV1alpha1().GPUNodes().UpdateStatus(e.ctx, own, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("writing its own GPUNode status: %v", err)
	}
	other, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Create(e.ctx, &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other.Status = localcluster.FakeInventory(localcluster.FakeNode{Name: "node-b", GPUs: 2})
	if _, err := gpusA.TesseraV1alpha1().GPUNodes().UpdateStatus(e.ctx, other, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "GPUNode node-b") {
		t.Errorf("node-a's plugin wrote node-b's status: err = %v", err)
	}
	if err := gpusA.TesseraV1alpha1().GPUNodes().Delete(e.ctx, "node-b", metav1.DeleteOptions{}); err == nil {
		t.Error("node-a's plugin deleted node-b's GPUNode")
	}
	own, err = e.c.GPU.TesseraV1alpha1().GPUNodes().Get(e.ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gpusNone.TesseraV1alpha1().GPUNodes().UpdateStatus(e.ctx, own, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "names no node") {
		t.Errorf("a token without a node claim wrote a GPUNode: err = %v", err)
	}

	// Pods: only the metadata of pods on its own node.
	if _, err := kubeA.CoreV1().Pods("default").Patch(e.ctx, "on-node-a", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Errorf("correcting a pod on its own node: %v", err)
	}
	if _, err := kubeA.CoreV1().Pods("default").Patch(e.ctx, "on-node-b", types.MergePatchType, patch, metav1.PatchOptions{}); err == nil || !strings.Contains(err.Error(), "pods on its own node") {
		t.Errorf("node-a's plugin patched a pod on node-b: err = %v", err)
	}
	label, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{"app": "hijacked"}}})
	if _, err := kubeA.CoreV1().Pods("default").Patch(e.ctx, "on-node-a", types.MergePatchType, label, metav1.PatchOptions{}); err == nil || !strings.Contains(err.Error(), "only the tessera.io/gpu-assignment annotation") {
		t.Errorf("node-a's plugin relabelled a pod: err = %v", err)
	}

	// Nodes: only the GPU taint of its own node.
	if _, err := kubeA.CoreV1().Nodes().Patch(e.ctx, "node-a", types.MergePatchType, taint, metav1.PatchOptions{}); err != nil {
		t.Errorf("tainting its own node: %v", err)
	}
	if _, err := kubeA.CoreV1().Nodes().Patch(e.ctx, "node-b", types.MergePatchType, taint, metav1.PatchOptions{}); err == nil || !strings.Contains(err.Error(), "only change its own node") {
		t.Errorf("node-a's plugin tainted node-b: err = %v", err)
	}
	if _, err := kubeA.CoreV1().Nodes().Patch(e.ctx, "node-a", types.MergePatchType, label, metav1.PatchOptions{}); err == nil {
		t.Error("node-a's plugin relabelled its node")
	}
	// The annotation that records who added the taint, and no other.
	for _, a := range []struct {
		key   string
		allow bool
	}{{"tessera.io/node-taint", true}, {"example.com/other", false}} {
		for _, value := range []any{"tessera-device-plugin", nil} { // add, then remove
			p, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{a.key: value}}})
			_, err := kubeA.CoreV1().Nodes().Patch(e.ctx, "node-a", types.MergePatchType, p, metav1.PatchOptions{})
			if a.allow && err != nil {
				t.Errorf("setting annotation %s=%v on its own node: %v", a.key, value, err)
			}
			if !a.allow && value != nil && (err == nil || !strings.Contains(err.Error(), "only the nvidia.com/gpu taint")) {
				t.Errorf("node-a's plugin set annotation %s on its node: err = %v", a.key, err)
			}
		}
	}

	// Nor cordon its own node, or add a finalizer to a pod on it.
	cordon, _ := json.Marshal(map[string]any{"spec": map[string]any{"unschedulable": true}})
	if _, err := kubeA.CoreV1().Nodes().Patch(e.ctx, "node-a", types.MergePatchType, cordon, metav1.PatchOptions{}); err == nil || !strings.Contains(err.Error(), "only the nvidia.com/gpu taint") {
		t.Errorf("node-a's plugin cordoned its node: err = %v", err)
	}
	finalizer, _ := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": []string{"example.com/hold"}}})
	if _, err := kubeA.CoreV1().Pods("default").Patch(e.ctx, "on-node-a", types.MergePatchType, finalizer, metav1.PatchOptions{}); err == nil {
		t.Error("node-a's plugin added a finalizer to a pod")
	}

	// Events: from its own node, about pods and its own GPUNode only.
	event := func(name, host, kind, object string) *v1.Event {
		return &v1.Event{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			InvolvedObject: v1.ObjectReference{Kind: kind, Name: object, Namespace: map[string]string{"Pod": "default"}[kind]},
			Reason:         "Test", Message: "test", Type: v1.EventTypeNormal, Source: v1.EventSource{Component: "tessera-device-plugin", Host: host}}
	}
	for _, ev := range []struct {
		what  string
		ev    *v1.Event
		allow bool
	}{
		{"about its own GPUNode", event("own-gpunode", "node-a", "GPUNode", "node-a"), true},
		{"about a pod", event("pod", "node-a", "Pod", "on-node-a"), true},
		{"about another node's GPUNode", event("other-gpunode", "node-a", "GPUNode", "node-b"), false},
		{"as from another node", event("other-host", "node-b", "Pod", "on-node-b"), false},
		{"about a Node", event("node", "node-a", "Node", "node-a"), false},
	} {
		_, err := kubeA.CoreV1().Events("default").Create(e.ctx, ev.ev, metav1.CreateOptions{})
		if ev.allow && err != nil {
			t.Errorf("event %s: %v", ev.what, err)
		}
		if !ev.allow && err == nil {
			t.Errorf("node-a's plugin recorded an event %s", ev.what)
		}
	}

	// RBAC: the plugin cannot touch what it has no business with.
	if _, err := kubeA.CoreV1().Secrets("default").List(e.ctx, metav1.ListOptions{}); err == nil {
		t.Error("the device plugin's role can list secrets")
	}
}

// TestPublisherLosesNoUpdateOnConflict races the GPUNode publisher against
// another writer of the same status: every change the publisher is told of
// must end up written, whatever conflicts it meets.
func TestPublisherLosesNoUpdateOnConflict(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("node-a", localcluster.FakeNode{})
	var mu sync.Mutex
	version := 0
	pub := e.runPublisher(t, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("v%d", version)
	})

	// Another writer keeps overwriting the status. The final Trigger must
	// come after its last write: a write that lands after the publisher's
	// last one is a change nobody told the publisher of, and only the next
	// heartbeat (an hour away here) would undo it.
	stop := make(chan struct{})
	intruderDone := make(chan struct{})
	var writes atomic.Int64
	go func() {
		defer close(intruderDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			gn, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(e.ctx, "node-a", metav1.GetOptions{})
			if err != nil {
				continue
			}
			gn.Status.DriverVersion = "intruder"
			if _, err := e.c.GPU.TesseraV1alpha1().GPUNodes().UpdateStatus(e.ctx, gn, metav1.UpdateOptions{}); err == nil {
				writes.Add(1)
			}
		}
	}()
	for i := 1; i <= 20; i++ {
		mu.Lock()
		version = i
		mu.Unlock()
		pub.Trigger()
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	<-intruderDone
	pub.Trigger()
	err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		gn, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(ctx, "node-a", metav1.GetOptions{})
		return err == nil && gn.Status.DriverVersion == "v20", nil
	})
	if err != nil {
		t.Fatalf("the last change (v20) never landed")
	}
	gn, _ := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(e.ctx, "node-a", metav1.GetOptions{})
	if len(gn.OwnerReferences) != 1 || gn.OwnerReferences[0].Kind != "Node" {
		t.Errorf("GPUNode is not owned by its Node: %v", gn.OwnerReferences)
	}
	t.Logf("the other writer landed %d writes", writes.Load())
}

// TestPublisherNextWriteWaitsForANewWrite holds a GPUNode write in flight
// while a caller asks for the next write: the write already under way read
// the GPUNode before the call, so it must not release the caller; the
// write begun after it must. Health events wait this way, so that they
// name the GPUNode that carries the change.
func TestPublisherNextWriteWaitsForANewWrite(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("node-a", localcluster.FakeNode{})
	var mu sync.Mutex
	var gate chan struct{} // when set, the next status computation waits on it
	entered := make(chan struct{}, 1)
	version := 0
	pub := e.runPublisher(t, func() string {
		mu.Lock()
		g := gate
		gate = nil
		version++
		v := version
		mu.Unlock()
		if g != nil {
			entered <- struct{}{}
			<-g
		}
		return fmt.Sprintf("v%d", v)
	})
	gn, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(e.ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pub.UID() != gn.UID {
		t.Errorf("UID() = %q after the first write, want %q", pub.UID(), gn.UID)
	}

	// Hold the second write between its read and its write.
	release := make(chan struct{})
	mu.Lock()
	gate = release
	mu.Unlock()
	pub.Trigger()
	<-entered
	next := pub.NextWrite()
	close(release)
	waitDriver := func(want string) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(e.ctx, 20*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
			gn, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(ctx, "node-a", metav1.GetOptions{})
			return err == nil && gn.Status.DriverVersion == want, nil
		}); err != nil {
			t.Fatalf("the GPUNode never showed %s", want)
		}
	}
	waitDriver("v2")
	select {
	case <-next:
		t.Fatal("a write begun before NextWrite released it")
	case <-time.After(200 * time.Millisecond):
	}

	// The next write does.
	pub.Trigger()
	select {
	case <-next:
	case <-time.After(20 * time.Second):
		t.Fatal("the write begun after NextWrite did not release it")
	}
	waitDriver("v3")
}

// runPublisher runs a GPUNode publisher for node-a until the test ends, with
// a heartbeat too far off to matter; driver gives the DriverVersion of each
// status it writes, and is called once per write attempt. It returns once
// the first write has landed.
func (e *env) runPublisher(t *testing.T, driver func() string) *inventory.Publisher {
	t.Helper()
	pub := inventory.NewPublisher("node-a", e.c.GPU, e.c.Client, time.Hour, func(now time.Time) v1alpha1.GPUNodeStatus {
		st := localcluster.FakeInventory(localcluster.FakeNode{Name: "node-a", GPUs: 2, Heartbeat: now})
		st.DriverVersion = driver()
		return st
	})
	ctx, cancel := context.WithCancel(e.ctx)
	t.Cleanup(cancel)
	go pub.Run(ctx)
	<-pub.Published()
	return pub
}
