//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/report"
)

// TestPodsSeeTheGPUsTheyWereAssigned: whole, multi-GPU and fractional pods
// run, each container's NVIDIA_VISIBLE_DEVICES names the GPUs of its
// tessera.io/gpu-assignment, and the kubelet's own record (PodResources)
// gives each container those GPUs, in those shares.
func TestPodsSeeTheGPUsTheyWereAssigned(t *testing.T) {
	ns := testNamespace(t)
	pods := map[string]v1.ResourceList{"whole": gpus(1), "multi": gpus(4), "fractional": percent(25)}
	for name, res := range pods {
		if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), sleeperPod(name, res), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for name := range pods {
		p := waitRunning(t, ns, name)
		if p.Spec.NodeName != gpuNode {
			t.Errorf("%s ran on %s, want %s", name, p.Spec.NodeName, gpuNode)
		}
		want := assigned(t, p)["main"]
		out := outputOf(t, ns, name, "main")
		if got := out.env["NVIDIA_VISIBLE_DEVICES"]; got != want.uuids() {
			t.Errorf("%s: NVIDIA_VISIBLE_DEVICES=%q, assignment %s", name, got, want)
		}
		if name == "fractional" && out.env["TESSERA_GPU_PERCENT"] != "25" {
			t.Errorf("%s: TESSERA_GPU_PERCENT=%q, want 25", name, out.env["TESSERA_GPU_PERCENT"])
		}
		if got := kubeletRecord(t, gpuNode)[ns+"/"+name+"/main"]; got.String() != want.String() {
			t.Errorf("%s: the kubelet gave %s, the assignment says %s", name, got, want)
		}
	}
	// kubectl tessera shows what the kubelet recorded.
	record := kubeletRecord(t, gpuNode)
	view := kubectlTesseraView(t, gpuNode)
	for key, got := range view {
		if strings.HasPrefix(key, ns+"/") && got.String() != record[key].String() {
			t.Errorf("kubectl tessera shows %s holding %s, the kubelet gave it %s", key, got, record[key])
		}
	}
	for name := range pods {
		if _, ok := view[ns+"/"+name+"/main"]; !ok {
			t.Errorf("kubectl tessera does not show %s/%s", ns, name)
		}
	}
}

// kubectlTesseraView runs `kubectl tessera nodes NODE -o json` and returns
// who holds what on the node, as the kubelet record is keyed.
func kubectlTesseraView(t *testing.T, node string) map[string]share {
	t.Helper()
	out, err := shell(t.Context(), "kubectl tessera nodes "+node+" -o json")
	if err != nil {
		t.Fatal(err)
	}
	var snap report.Snapshot
	if err := json.Unmarshal([]byte(out), &snap); err != nil {
		t.Fatalf("kubectl tessera -o json: %v\n%s", err, out)
	}
	view := map[string]share{}
	for _, n := range snap.Nodes {
		for _, g := range n.GPUs {
			for _, h := range g.Holders {
				key := h.Namespace + "/" + h.Pod + "/" + h.Container
				if view[key] == nil {
					view[key] = share{}
				}
				view[key][g.UUID] += h.Percent
			}
		}
	}
	return view
}

// TestDownwardAPIExample runs manifests/examples/downward-api.yaml, with
// the sleeper in place of busybox: the assignment reaches the container as
// a variable and as a file, both equal to the annotation.
func TestDownwardAPIExample(t *testing.T) {
	ns := testNamespace(t)
	data, err := os.ReadFile(filepath.Join(*repo, "manifests/examples/downward-api.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p v1.Pod
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatal(err)
	}
	c := &p.Spec.Containers[0]
	c.Image, c.ImagePullPolicy = sleeperImage, v1.PullNever
	c.Command, c.Args = nil, []string{"/etc/tessera/gpu-assignment"}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), &p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitRunning(t, ns, p.Name)
	want := got.Annotations[assignment.Annotation]
	out := outputOf(t, ns, p.Name, c.Name)
	if out.env["TESSERA_GPU_ASSIGNMENT"] != want {
		t.Errorf("TESSERA_GPU_ASSIGNMENT=%q, annotation %q", out.env["TESSERA_GPU_ASSIGNMENT"], want)
	}
	if f := out.files["/etc/tessera/gpu-assignment"]; f != want {
		t.Errorf("/etc/tessera/gpu-assignment=%q, annotation %q", f, want)
	}
}

// TestBurstOnOneNode creates 64 pods at once, whole GPUs and shares that
// fill the node's 8 GPUs exactly: every pod runs, no GPU is given more than
// 100 %, and the kubelet's record equals the annotations. It reports how
// long pods took from creation to Running.
func TestBurstOnOneNode(t *testing.T) {
	// The pods fill the node exactly: every GPU must be healthy (an XID
	// injected by TestXIDReachesGPUNodeSchedulerAndPod, which runs later,
	// lasts minutes) and free (testNamespace waits for earlier tests'
	// pods to go).
	if out, err := cluster.Kubectl(t.Context(), "get", "gpunode", gpuNode, "-o", "jsonpath={.status.healthyCount}"); err != nil || out != "8" {
		t.Fatalf("the burst needs all 8 GPUs of %s healthy; healthy: %q (%v)", gpuNode, out, err)
	}
	ns := testNamespace(t)
	// 4 whole GPUs, 20 pods of 10 % and 40 of 5 %: 800 % in all.
	var specs []*v1.Pod
	for i := range 64 {
		var res v1.ResourceList
		switch {
		case i%16 == 0:
			res = gpus(1)
		case i%16 <= 5:
			res = percent(10)
		default:
			res = percent(5)
		}
		p := sleeperPod(fmt.Sprintf("burst-%02d", i), res)
		p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": gpuNode}
		specs = append(specs, p)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(specs))
	for _, p := range specs {
		wg.Go(func() {
			if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var running []*v1.Pod
	err := wait.PollUntilContextTimeout(t.Context(), time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		running = running[:0]
		for i := range list.Items {
			p := &list.Items[i]
			if p.Status.Phase == v1.PodFailed {
				return false, fmt.Errorf("pod %s failed: %s %s", p.Name, p.Status.Reason, p.Status.Message)
			}
			if p.Status.Phase == v1.PodRunning {
				running = append(running, p)
			}
		}
		return len(running) == len(specs), nil
	})
	if err != nil {
		out, _ := shell(context.Background(), "kubectl tessera nodes "+gpuNode)
		pending, _ := shell(context.Background(), "kubectl tessera pending -n "+ns)
		t.Fatalf("%d of %d pods running: %v\n%s\n%s", len(running), len(specs), err, out, pending)
	}

	settled := time.Now()
	running, _ = settledRecord(t, ns)
	t.Logf("annotations equal the kubelet's record %v after every pod ran", time.Since(settled).Round(100*time.Millisecond))

	used := map[string]int{}
	var latencies []time.Duration
	for _, p := range running {
		for u, pct := range assigned(t, p)["main"] {
			used[u] += pct
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running != nil {
				latencies = append(latencies, cs.State.Running.StartedAt.Sub(p.CreationTimestamp.Time))
			}
		}
	}
	for u, pct := range used {
		if pct > 100 {
			t.Errorf("GPU %s given %d %%", u, pct)
		}
	}
	if diff := cmp.Diff(8, len(used)); diff != "" {
		t.Errorf("GPUs used (-want +got):\n%s", diff)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	if len(latencies) > 0 {
		p := func(q float64) time.Duration { return latencies[int(q*float64(len(latencies)-1))] }
		t.Logf("burst of %d pods: created to Running p50 %v, p99 %v, max %v (second resolution)", len(latencies), p(0.5), p(0.99), latencies[len(latencies)-1])
	}
}
