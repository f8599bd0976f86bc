//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/deviceplugin/agent"
	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// TestInitContainersAndSidecarsGetGPUs: a pod whose init container, sidecar
// and app container each ask for GPUs runs, and every container sees the
// GPUs of its own entry in the assignment.
func TestInitContainersAndSidecarsGetGPUs(t *testing.T) {
	ns := testNamespace(t)
	p := sleeperPod("steps", gpus(1))
	always := v1.ContainerRestartPolicyAlways
	p.Spec.InitContainers = []v1.Container{
		{Name: "setup", Image: sleeperImage, ImagePullPolicy: v1.PullNever, Args: []string{"-exit"},
			Resources: v1.ResourceRequirements{Limits: gpus(2)}},
		{Name: "sidecar", Image: sleeperImage, ImagePullPolicy: v1.PullNever, RestartPolicy: &always,
			Resources: v1.ResourceRequirements{Limits: percent(25)}},
	}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitRunning(t, ns, p.Name)
	want := assigned(t, got)
	for _, c := range []string{"setup", "sidecar", "main"} {
		if _, ok := want[c]; !ok {
			t.Errorf("the assignment has no entry for container %s: %v", c, want)
			continue
		}
		if env := outputOf(t, ns, p.Name, c).env["NVIDIA_VISIBLE_DEVICES"]; env != want[c].uuids() {
			t.Errorf("container %s: NVIDIA_VISIBLE_DEVICES=%q, assignment %s", c, env, want[c])
		}
	}
	record := kubeletRecord(t, gpuNode)
	for _, c := range []string{"sidecar", "main"} {
		if r := record[ns+"/"+p.Name+"/"+c]; r.String() != want[c].String() {
			t.Errorf("container %s: the kubelet gave %s, the assignment says %s", c, r, want[c])
		}
	}
}

// TestXIDReachesGPUNodeSchedulerAndPod injects a critical XID into the fake
// GPU a running pod holds a share of (through the device plugin's fault
// endpoint): the GPUNode marks it unhealthy; a new share goes to another GPU
// although binpack prefers the used one; and the kubelet names the GPU's
// shares in the running pod's allocatedResourcesStatus (kubelets from 1.36,
// where the ResourceHealthStatus gate is on by default).
func TestXIDReachesGPUNodeSchedulerAndPod(t *testing.T) {
	ns := testNamespace(t)
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), sleeperPod("holder", percent(25)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	holder := waitRunning(t, ns, "holder")
	bad := assigned(t, holder)["main"].uuids()

	plugin := devicePluginPod(t, gpuNode)
	url := fmt.Sprintf("http://%s:9410%s?gpu=%s&xid=79", plugin.Status.PodIP, agent.FaultPath, bad)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("injecting XID 79: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("injecting XID 79: %s", resp.Status)
	}

	err = wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		out, err := cluster.Kubectl(ctx, "get", "gpunode", gpuNode, "-o", "jsonpath={.status.gpus[?(@.uuid=='"+bad+"')].health.healthy}")
		return err == nil && out == "false", nil
	})
	if err != nil {
		t.Fatalf("the GPUNode never marked %s unhealthy: %v", bad, err)
	}

	// binpack puts a share on the fullest GPU that has room: the failed
	// one, were its health ignored.
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), sleeperPod("next", percent(50)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	next := waitRunning(t, ns, "next")
	if got := assigned(t, next)["main"]; got.uuids() == bad {
		t.Errorf("the new share went to the failed GPU %s", bad)
	}

	// The kubelet reports device health in the pod's status only with its
	// ResourceHealthStatus feature gate, on by default from 1.36.
	node, err := cluster.Client.CoreV1().Nodes().Get(t.Context(), gpuNode, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := version.ParseSemantic(node.Status.NodeInfo.KubeletVersion); err != nil || v.LessThan(version.MajorMinor(1, 36)) {
		t.Logf("kubelet %s: ResourceHealthStatus is off by default before 1.36; allocatedResourcesStatus not checked", node.Status.NodeInfo.KubeletVersion)
		return
	}

	err = wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "holder", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cs := range p.Status.ContainerStatuses {
			for _, rs := range cs.AllocatedResourcesStatus {
				for _, r := range rs.Resources {
					uuid, _, ok := handoff.ParsePercentID(string(r.ResourceID))
					if rs.Name == gpu.ResourcePercent && ok && uuid == bad && r.Health == v1.ResourceHealthStatusUnhealthy {
						return true, nil
					}
				}
			}
		}
		return false, nil
	})
	if err != nil {
		p, _ := cluster.Client.CoreV1().Pods(ns).Get(t.Context(), "holder", metav1.GetOptions{})
		var statuses []v1.ContainerStatus
		if p != nil {
			statuses = p.Status.ContainerStatuses
		}
		t.Errorf("the holder's allocatedResourcesStatus never named %s unhealthy: %+v", bad, statuses)
	}
}

// devicePluginPod returns the running tessera-device-plugin pod of a node.
func devicePluginPod(t *testing.T, node string) *v1.Pod {
	t.Helper()
	var found *v1.Pod
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{
			LabelSelector: "app.kubernetes.io/name=tessera-device-plugin", FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return false, nil
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.DeletionTimestamp == nil && p.Status.Phase == v1.PodRunning && p.Status.PodIP != "" {
				found = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no running device plugin pod on %s: %v", node, err)
	}
	return found
}

// TestRestartsLoseNothing: pods of two Deployments are created while the
// device plugin pod is deleted, then the kubelet is restarted, then the
// scheduler pod is deleted. Through all of it every replica ends up running
// (a bare pod the kubelet admits while the plugin is away fails for good,
// as docs/operations.md says; a controller's is replaced), no GPU is given
// more than 100 %, the kubelet's record keeps equalling the annotations,
// and a pod created after the scheduler's restart is placed.
func TestRestartsLoseNothing(t *testing.T) {
	saveTesseraLogs(t)
	t.Cleanup(func() { saveTesseraLogs(t) })
	ns := testNamespace(t)
	whole := sleeperDeployment(t, ns, "whole", 3, gpus(1))
	shares := sleeperDeployment(t, ns, "shares", 8, percent(25))

	plugin := devicePluginPod(t, gpuNode)
	if err := cluster.Client.CoreV1().Pods(namespace).Delete(t.Context(), plugin.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReplicasRunning(t, ns, map[string]int{whole: 3, shares: 8})
	checkNoDoubleBooking(t, ns)

	var n int
	for i, node := range cluster.Nodes {
		if node.Name == gpuNode {
			n = i
		}
	}
	// The kubelet stamps heartbeats to the second: one posted in the
	// second of the restart is the new kubelet's. Compared with the exact
	// time, a kubelet that came back within that second (containerd 2 and
	// a warm cache restart it in well under one) would never seem to
	// report, since an unchanged status is posted again only every 5
	// minutes. The waits below do not rely on it being the new kubelet's.
	restarted := time.Now().Truncate(time.Second)
	if err := cluster.Nodes[n].StopKubelet(); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Nodes[n].StartKubelet(); err != nil {
		t.Fatal(err)
	}
	// The kubelet deletes the device-plugin sockets when it starts; the
	// plugin registers again and the node offers its GPUs again.
	err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		node, err := cluster.Client.CoreV1().Nodes().Get(ctx, gpuNode, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		// Ready as reported by the new kubelet, the plugin registered
		// again (capacity counts every GPU, allocatable only those free
		// in that mode), and the PodResources API answering.
		q := node.Status.Capacity[gpu.ResourceGPU]
		ready := false
		for _, c := range node.Status.Conditions {
			ready = ready || (c.Type == v1.NodeReady && c.Status == v1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(restarted))
		}
		if !ready || q.Value() != 8 {
			return false, nil
		}
		_, err = readKubeletRecord(ctx, gpuNode)
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("node %s never came back Ready with its 8 GPUs registered after the kubelet restart: %v", gpuNode, err)
	}
	waitReplicasRunning(t, ns, map[string]int{whole: 3, shares: 8})
	checkNoDoubleBooking(t, ns)

	sched, err := cluster.Client.CoreV1().Pods(namespace).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=tessera-scheduler"})
	if err != nil || len(sched.Items) == 0 {
		t.Fatalf("no tessera-scheduler pod: %v", err)
	}
	for _, p := range sched.Items {
		if err := cluster.Client.CoreV1().Pods(namespace).Delete(t.Context(), p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	scale, err := cluster.Client.AppsV1().Deployments(ns).Get(t.Context(), whole, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = new(int32(4))
	if _, err := cluster.Client.AppsV1().Deployments(ns).Update(t.Context(), scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReplicasRunning(t, ns, map[string]int{whole: 4, shares: 8})
	checkNoDoubleBooking(t, ns)
}

// sleeperDeployment creates a Deployment of sleeper pods of
// tessera-scheduler and returns its name.
func sleeperDeployment(t *testing.T, ns, name string, replicas int32, res v1.ResourceList) string {
	t.Helper()
	p := sleeperPod(name, res)
	p.Spec.RestartPolicy = v1.RestartPolicyAlways
	p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": gpuNode}
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: p.Spec},
		},
	}
	if _, err := cluster.Client.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

// waitReplicasRunning waits until each app label has that many running,
// ready pods, and logs the pods that failed on the way.
func waitReplicasRunning(t *testing.T, ns string, want map[string]int) {
	t.Helper()
	var last map[string]int
	failed := map[string]string{}
	err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		last = map[string]int{}
		for _, p := range list.Items {
			switch {
			case p.Status.Phase == v1.PodFailed:
				failed[p.Name] = p.Status.Reason + ": " + p.Status.Message
			case p.Status.Phase == v1.PodRunning && p.DeletionTimestamp == nil:
				last[p.Labels["app"]]++
			}
		}
		for app, n := range want {
			if last[app] != n {
				return false, nil
			}
		}
		return true, nil
	})
	for name, why := range failed {
		t.Logf("pod %s failed (its ReplicaSet replaced it): %s", name, why)
	}
	if err != nil {
		t.Fatalf("running replicas %v, want %v: %v", last, want, err)
	}
}

// checkNoDoubleBooking checks the whole node: no GPU given more than
// 100 % by the kubelet, and for the namespace's running pods the kubelet's
// record equals the annotation.
func checkNoDoubleBooking(t *testing.T, ns string) {
	t.Helper()
	_, record := settledRecord(t, ns)
	used := map[string]int{}
	for _, s := range record {
		for u, pct := range s {
			used[u] += pct
		}
	}
	for u, pct := range used {
		if pct > 100 {
			t.Errorf("the kubelet has given %d %% of GPU %s", pct, u)
		}
	}
}
