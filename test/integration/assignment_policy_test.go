package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tessera-gpu/tessera/manifests"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// as returns a client that acts as user in groups.
func (e *env) as(user string, groups ...string) kubernetes.Interface {
	e.t.Helper()
	cfg := rest.CopyConfig(e.c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return kube
}

// TestOnlyTesseraWritesAssignments installs the shipped RBAC and admission
// policies and writes tessera.io/gpu-assignment as each identity that might:
// a tenant and a cluster administrator are denied on create, update and in a
// Binding; tessera-scheduler's Binding and the device plugin of the pod's
// own node are allowed; another node's device plugin is denied. The
// scheduler cannot patch pods at all under the shipped profile.
func TestOnlyTesseraWritesAssignments(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	for _, m := range [][]byte{manifests.Namespace, manifests.SchedulerRBAC, manifests.DevicePluginRBAC,
		manifests.AssignmentAdmissionPolicy, manifests.DevicePluginAdmissionPolicy} {
		if err := e.c.Apply(e.ctx, m, false); err != nil {
			t.Fatal(err)
		}
	}
	e.addNode("node-a", localcluster.FakeNode{GPUs: 2})
	e.addNode("node-b", localcluster.FakeNode{GPUs: 2})
	// A tenant who may write pods in the namespace, as application teams
	// may. (The built-in edit role is aggregated by the controller
	// manager, which does not run here.)
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "tenant", Namespace: "default"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "create", "update", "patch"}}}}
	if _, err := e.c.Client.RbacV1().Roles("default").Create(e.ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "tenant", Namespace: "default"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "tenant"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "tenant"}}}
	if _, err := e.c.Client.RbacV1().RoleBindings("default").Create(e.ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tenant := e.as("tenant")
	schedUser, schedGroups := serviceAccountUser("tessera-system", "tessera-scheduler")
	sched := e.as(schedUser, schedGroups...)
	pluginA, _ := e.asDevicePlugin("node-a")
	pluginB, _ := e.asDevicePlugin("node-b")

	value := `{"main":[{"uuid":"` + gpuUUID("node-a", 0) + `","percent":100}]}`
	annotate := func(v string) []byte {
		p, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{assignment.Annotation: v}}})
		return p
	}
	pod := func(name string, annotated bool) *v1.Pod {
		p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			// No scheduler serves this name: the test binds the pods.
			Spec: v1.PodSpec{SchedulerName: "nobody", Containers: []v1.Container{{Name: "main", Image: "x",
				Resources: v1.ResourceRequirements{Limits: v1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}}}}}}
		if annotated {
			p.Annotations = map[string]string{assignment.Annotation: value}
		}
		return p
	}
	bind := func(kube kubernetes.Interface, name, node string, annotated bool) error {
		b := &v1.Binding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Target: v1.ObjectReference{Kind: "Node", Name: node}}
		if annotated {
			b.Annotations = map[string]string{assignment.Annotation: value}
		}
		return kube.CoreV1().Pods("default").Bind(e.ctx, b, metav1.CreateOptions{})
	}
	const denied = "only tessera-scheduler"

	// The policy takes effect once the apiserver has loaded it.
	if err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := tenant.CoreV1().Pods("default").Create(ctx, pod("probe", true), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil && strings.Contains(err.Error(), denied), nil
	}); err != nil {
		_, last := tenant.CoreV1().Pods("default").Create(e.ctx, pod("probe", true), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		t.Fatalf("the assignment policy never denied a tenant's annotated pod: %v; last: %v", err, last)
	}

	// A tenant, and an administrator, cannot create a pod with the
	// annotation.
	for who, kube := range map[string]kubernetes.Interface{"tenant": tenant, "administrator": e.c.Client} {
		if _, err := kube.CoreV1().Pods("default").Create(e.ctx, pod("forged-"+who, true), metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), denied) {
			t.Errorf("%s created a pod with %s: err = %v", who, assignment.Annotation, err)
		}
	}
	// Nor add it later, to an unbound pod or in a Binding.
	if _, err := tenant.CoreV1().Pods("default").Create(e.ctx, pod("plain", false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tenant.CoreV1().Pods("default").Patch(e.ctx, "plain", types.MergePatchType, annotate(value), metav1.PatchOptions{}); err == nil || !strings.Contains(err.Error(), denied) {
		t.Errorf("tenant annotated a pod: err = %v", err)
	}
	if err := bind(e.c.Client, "plain", "node-a", true); err == nil || !strings.Contains(err.Error(), denied) {
		t.Errorf("an administrator's Binding carried the annotation: err = %v", err)
	}

	// tessera-scheduler binds with it.
	if err := bind(sched, "plain", "node-a", true); err != nil {
		t.Fatalf("tessera-scheduler's Binding: %v", err)
	}
	got, err := e.c.Client.CoreV1().Pods("default").Get(e.ctx, "plain", metav1.GetOptions{})
	if err != nil || got.Annotations[assignment.Annotation] != value || got.Spec.NodeName != "node-a" {
		t.Fatalf("bound pod: %v, node %q, annotation %q", err, got.Spec.NodeName, got.Annotations[assignment.Annotation])
	}
	// The tenant may still change the rest of its pod.
	label, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{"team": "ml"}}})
	if _, err := tenant.CoreV1().Pods("default").Patch(e.ctx, "plain", types.MergePatchType, label, metav1.PatchOptions{}); err != nil {
		t.Errorf("tenant could not label its own pod: %v", err)
	}
	// But not the assignment, nor remove it.
	if _, err := tenant.CoreV1().Pods("default").Patch(e.ctx, "plain", types.MergePatchType, annotate(`{"main":[]}`), metav1.PatchOptions{}); err == nil || !strings.Contains(err.Error(), denied) {
		t.Errorf("tenant rewrote the assignment: err = %v", err)
	}
	remove := []byte(`{"metadata":{"annotations":{"` + assignment.Annotation + `":null}}}`)
	if _, err := tenant.CoreV1().Pods("default").Patch(e.ctx, "plain", types.MergePatchType, remove, metav1.PatchOptions{}); err == nil || !strings.Contains(err.Error(), denied) {
		t.Errorf("tenant removed the assignment: err = %v", err)
	}

	// The device plugin of the pod's node corrects it; another node's
	// plugin may not.
	corrected := `{"main":[{"uuid":"` + gpuUUID("node-a", 1) + `","percent":100}]}`
	if _, err := pluginA.CoreV1().Pods("default").Patch(e.ctx, "plain", types.MergePatchType, annotate(corrected), metav1.PatchOptions{}); err != nil {
		t.Errorf("node-a's device plugin could not correct its pod: %v", err)
	}
	if _, err := pluginB.CoreV1().Pods("default").Patch(e.ctx, "plain", types.MergePatchType, annotate(value), metav1.PatchOptions{}); err == nil {
		t.Error("node-b's device plugin rewrote the assignment of a pod on node-a")
	}

	// The scheduler's role under the shipped profile: no pod patches
	// anywhere, as for kube-scheduler.
	for _, ns := range []string{"default", "kube-system"} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: schedUser, Groups: schedGroups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "patch", Resource: "pods"}}}
		res, err := e.c.Client.AuthorizationV1().SubjectAccessReviews().Create(e.ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.Allowed {
			t.Errorf("tessera-scheduler may patch pods in %s", ns)
		}
	}
}
