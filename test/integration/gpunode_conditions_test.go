package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/manifests"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// waitCondition waits until the GPUNode's condition typ has status (and
// reason, when given), as `kubectl wait --for=condition=...` would, and
// returns it.
func (e *env) waitCondition(node, typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	e.t.Helper()
	var got *metav1.Condition
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		gn, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = meta.FindStatusCondition(gn.Status.Conditions, typ)
		return got != nil && got.Status == status && (reason == "" || got.Reason == reason) && got.ObservedGeneration == gn.Generation, nil
	})
	if err != nil {
		e.t.Fatalf("GPUNode %s: condition %s is %+v, want %s %s", node, typ, got, status, reason)
	}
	return *got
}

// TestGPUNodeConditionsFollowHeartbeat runs the real device plugin and the
// real scheduler: the plugin's heartbeats make InventoryFresh and
// AllGPUsHealthy True; once the plugin stops, the scheduler turns
// InventoryFresh False; a restarted plugin turns it True again.
func TestGPUNodeConditionsFollowHeartbeat(t *testing.T) {
	const staleness = 3 * time.Second
	e := newEnv(t, localcluster.SchedulerOptions{GPUArgs: map[string]any{"inventoryStaleness": staleness.String()}})
	const node = "gpu-0"
	e.addNode(node, localcluster.FakeNode{GPUs: 8, NoInventory: true})
	k := startKubelet(t, shortTempDir(t))
	stop := e.startAgentBeating(node, "dgxh100", k, staleness/6)
	e.waitCondition(node, v1alpha1.ConditionInventoryFresh, metav1.ConditionTrue, v1alpha1.ReasonHeartbeat)
	healthy := e.waitCondition(node, v1alpha1.ConditionAllGPUsHealthy, metav1.ConditionTrue, v1alpha1.ReasonAllHealthy)
	if healthy.Message != "all 8 GPUs are healthy" {
		t.Errorf("AllGPUsHealthy message %q", healthy.Message)
	}

	stop()
	gone := e.waitCondition(node, v1alpha1.ConditionInventoryFresh, metav1.ConditionFalse, v1alpha1.ReasonHeartbeatStale)
	if !strings.Contains(gone.Message, "no heartbeat for 3s") {
		t.Errorf("InventoryFresh message %q", gone.Message)
	}
	// The scheduler says nothing about health: that stays the plugin's last
	// word.
	e.waitCondition(node, v1alpha1.ConditionAllGPUsHealthy, metav1.ConditionTrue, v1alpha1.ReasonAllHealthy)

	stop = e.startAgentBeating(node, "dgxh100", k, staleness/6)
	defer stop()
	back := e.waitCondition(node, v1alpha1.ConditionInventoryFresh, metav1.ConditionTrue, v1alpha1.ReasonHeartbeat)
	if back.LastTransitionTime.Before(&gone.LastTransitionTime) {
		t.Errorf("InventoryFresh came back at %v, before it went at %v", back.LastTransitionTime, gone.LastTransitionTime)
	}
	e.waitEvent(node, "GPUInventoryFresh: heartbeat is current again")
}

// TestSchedulerMarksOnlyStaleness installs the scheduler's RBAC and its
// GPUNode policy and writes GPUNode status as tessera-scheduler: setting
// InventoryFresh to False (what markStale applies) is allowed; changing the
// inventory, the heartbeat, another condition, or setting InventoryFresh to
// True is denied.
func TestSchedulerMarksOnlyStaleness(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	for _, m := range [][]byte{manifests.Namespace, manifests.SchedulerRBAC, manifests.SchedulerGPUNodePolicy} {
		if err := e.c.Apply(e.ctx, m, false); err != nil {
			t.Fatal(err)
		}
	}
	e.addNode("node-a", localcluster.FakeNode{GPUs: 2})
	user, groups := serviceAccountUser("tessera-system", "tessera-scheduler")
	cfg := rest.CopyConfig(e.c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	cfg.ContentType, cfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	sched, err := versioned.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(conds ...metav1.Condition) error {
		body, _ := json.Marshal(map[string]any{"apiVersion": "tessera.io/v1alpha1", "kind": "GPUNode",
			"metadata": map[string]any{"name": "node-a"}, "status": map[string]any{"conditions": conds}})
		force := true
		_, err := sched.TesseraV1alpha1().GPUNodes().Patch(e.ctx, "node-a", types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "tessera-scheduler", Force: &force}, "status")
		return err
	}
	merge := func(patch string) error {
		_, err := sched.TesseraV1alpha1().GPUNodes().Patch(e.ctx, "node-a", types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
		return err
	}
	cond := func(typ string, status metav1.ConditionStatus) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: "Test", Message: "test", LastTransitionTime: metav1.Now()}
	}
	// The policy takes effect once the API server has loaded it.
	err = wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return apierrors.IsInvalid(merge(`{"status":{"gpuCount":7}}`)) || apierrors.IsForbidden(merge(`{"status":{"gpuCount":7}}`)), nil
	})
	if err != nil {
		t.Fatal("the scheduler may still rewrite status.gpuCount")
	}
	if err := apply(cond(v1alpha1.ConditionInventoryFresh, metav1.ConditionFalse)); err != nil {
		t.Fatalf("setting InventoryFresh False: %v", err)
	}
	for what, err := range map[string]error{
		"InventoryFresh True":  apply(cond(v1alpha1.ConditionInventoryFresh, metav1.ConditionTrue)),
		"AllGPUsHealthy False": apply(cond(v1alpha1.ConditionInventoryFresh, metav1.ConditionFalse), cond(v1alpha1.ConditionAllGPUsHealthy, metav1.ConditionFalse)),
		"the GPUs":             merge(`{"status":{"gpus":[]}}`),
		"the heartbeat":        merge(`{"status":{"heartbeatTime":"2030-01-01T00:00:00Z"}}`),
		"the driver version":   merge(`{"status":{"driverVersion":"1.0"}}`),
	} {
		if err == nil || !strings.Contains(err.Error(), "tessera-scheduler may") {
			t.Errorf("changing %s as tessera-scheduler: err = %v, want a denial by the policy", what, err)
		}
	}
	if _, err := sched.TesseraV1alpha1().GPUNodes().Update(e.ctx, &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("updating a GPUNode's spec as tessera-scheduler: err = %v, want forbidden by RBAC", err)
	}
}
