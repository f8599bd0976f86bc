//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/deviceplugin/agent"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// TestHelmUpgradeAndUninstall runs last (the files sort it there): helm
// upgrade turns devicePlugin.taintNode on, after which pods that ask for
// no GPU and name no scheduler go to the node without GPUs; helm uninstall
// then leaves what docs/operations.md says it leaves, and removes the taint;
// and installing again as the README says works, the scheduler included
// (the taint once kept it Pending).
func TestHelmUpgradeAndUninstall(t *testing.T) {
	saveTesseraLogs(t)
	ctx := t.Context()
	if _, err := shell(ctx, "helm upgrade tessera manifests/charts/tessera -n tessera-system --reuse-values --set devicePlugin.taintNode=true --wait --timeout 5m"); err != nil {
		t.Fatal(err)
	}
	waitTaint(t, true)

	ns := testNamespace(t)
	for i := range 4 {
		p := sleeperPod(fmt.Sprintf("plain-%d", i), nil)
		p.Spec.SchedulerName = ""
		p.Spec.Containers[0].Resources = v1.ResourceRequirements{}
		if _, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		p := waitRunning(t, ns, fmt.Sprintf("plain-%d", i))
		if p.Spec.NodeName != cpuNode {
			t.Errorf("pod %s without GPUs ran on %s, want %s (the GPU node is tainted)", p.Name, p.Spec.NodeName, cpuNode)
		}
	}

	if _, err := shell(ctx, "helm uninstall tessera -n tessera-system --wait --timeout 5m"); err != nil {
		t.Fatal(err)
	}
	waitTaint(t, false)
	node, err := cluster.Client.CoreV1().Nodes().Get(ctx, gpuNode, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := node.Annotations[agent.NodeTaintAnnotation]; ok {
		t.Errorf("node %s still has %s after uninstall", gpuNode, agent.NodeTaintAnnotation)
	}
	// What operations.md says stays: the CRD and the GPUNodes, and the
	// namespace. The hook Job deleted itself.
	if _, err := cluster.Kubectl(ctx, "get", "crd", "gpunodes.tessera.io"); err != nil {
		t.Errorf("the CRD is gone after uninstall: %v", err)
	}
	if _, err := cluster.Kubectl(ctx, "get", "gpunode", gpuNode); err != nil {
		t.Errorf("GPUNode %s is gone after uninstall: %v", gpuNode, err)
	}
	if _, err := cluster.Client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}); err != nil {
		t.Errorf("namespace %s: %v", namespace, err)
	}
	jobs, err := cluster.Client.BatchV1().Jobs(namespace).List(ctx, metav1.ListOptions{})
	if err != nil || len(jobs.Items) != 0 {
		t.Errorf("jobs left in %s: %v (%v)", namespace, jobs, err)
	}
	if _, err := cluster.Client.AppsV1().Deployments(namespace).Get(ctx, "tessera-scheduler", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("tessera-scheduler Deployment after uninstall: %v", err)
	}

	// Again, as the README says; then a GPU pod is placed.
	if err := install(ctx, t.Logf, false); err != nil {
		t.Fatalf("installing again: %v", err)
	}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, sleeperPod("after", gpus(1)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := waitRunning(t, ns, "after"); p.Spec.NodeName != gpuNode {
		t.Errorf("GPU pod after reinstall ran on %s", p.Spec.NodeName)
	}
}

// waitTaint waits until the GPU node has, or has not, the GPU-node taint.
func waitTaint(t *testing.T, want bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		node, err := cluster.Client.CoreV1().Nodes().Get(ctx, gpuNode, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		has := false
		for _, taint := range node.Spec.Taints {
			has = has || (taint.Key == gpu.NodeTaintKey && taint.Effect == v1.TaintEffectNoSchedule)
		}
		return has == want, nil
	})
	if err != nil {
		t.Fatalf("node %s: GPU-node taint present should be %v: %v", gpuNode, want, err)
	}
}
