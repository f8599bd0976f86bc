//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	toolswatch "k8s.io/client-go/tools/watch"

	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// testNamespace creates a namespace for one test, and deletes it after,
// waiting until it is gone: the tests share one GPU node, and a test that
// fills it (TestBurstOnOneNode) needs the GPUs the test before it used.
func testNamespace(t *testing.T) string {
	t.Helper()
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	ns, err := cluster.Client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := cluster.Client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
			return
		}
		err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			_, err := cluster.Client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("namespace %s was not gone 2 minutes after its deletion: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// sleeperPod is a pod of tessera-scheduler whose container "main" runs the
// sleeper with limits of res.
func sleeperPod(name string, res v1.ResourceList, files ...string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PodSpec{
			SchedulerName:                 "tessera-scheduler",
			RestartPolicy:                 v1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []v1.Container{{
				Name:            "main",
				Image:           sleeperImage,
				ImagePullPolicy: v1.PullNever,
				Args:            files,
				Resources:       v1.ResourceRequirements{Limits: res},
			}},
		},
	}
}

func gpus(n int64) v1.ResourceList {
	return v1.ResourceList{gpu.ResourceGPU: *resource.NewQuantity(n, resource.DecimalSI)}
}

func percent(n int64) v1.ResourceList {
	return v1.ResourceList{gpu.ResourcePercent: *resource.NewQuantity(n, resource.DecimalSI)}
}

// waitRunning waits until the pod runs and returns it, failing with its
// status and events when it cannot run.
func waitRunning(t *testing.T, ns, name string) *v1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	lw := cache.NewListWatchFromClient(cluster.Client.CoreV1().RESTClient(), "pods", ns, fields.OneTermEqualSelector("metadata.name", name))
	ev, err := toolswatch.UntilWithSync(ctx, lw, &v1.Pod{}, nil, func(e watch.Event) (bool, error) {
		p, ok := e.Object.(*v1.Pod)
		if !ok {
			return false, nil
		}
		switch p.Status.Phase {
		case v1.PodRunning:
			return true, nil
		case v1.PodFailed, v1.PodSucceeded:
			return false, fmt.Errorf("pod %s/%s ended %s: %s", ns, name, p.Status.Phase, p.Status.Message)
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s did not run: %v\n%s", ns, name, err, describe(ns, name))
	}
	return ev.Object.(*v1.Pod)
}

// describe returns the pod's status and events, for failure messages.
func describe(ns, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := cluster.Kubectl(ctx, "describe", "pod", "-n", ns, name)
	if err != nil {
		return err.Error()
	}
	return out
}

// containerOutput parses the sleeper's log of a container: its
// environment and the files it printed.
type containerOutput struct {
	env   map[string]string
	files map[string]string
}

func outputOf(t *testing.T, ns, pod, container string) containerOutput {
	t.Helper()
	var raw []byte
	// The container has started; its first lines may not be in the log
	// the instant it runs, so read until the environment is there.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		var err error
		raw, err = cluster.Client.CoreV1().Pods(ns).GetLogs(pod, &v1.PodLogOptions{Container: container}).DoRaw(ctx)
		if err == nil && strings.Contains(string(raw), "env PATH=") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("log of %s/%s[%s]: %v (%q)", ns, pod, container, err, raw)
		case <-time.After(200 * time.Millisecond):
		}
	}
	out := containerOutput{env: map[string]string{}, files: map[string]string{}}
	for _, line := range strings.Split(string(raw), "\n") {
		if kv, ok := strings.CutPrefix(line, "env "); ok {
			k, v, _ := strings.Cut(kv, "=")
			out.env[k] = v
		} else if rest, ok := strings.CutPrefix(line, "file "); ok {
			path, content, _ := strings.Cut(rest, " ")
			out.files[path] = strings.ReplaceAll(content, `\n`, "\n")
		}
	}
	return out
}

// share is how much of which GPUs a container has: UUID to percent.
type share map[string]int

func (s share) String() string {
	var parts []string
	for u, p := range s {
		parts = append(parts, fmt.Sprintf("%s:%d", u, p))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// uuids returns the GPUs of a share, sorted, comma-separated: what
// NVIDIA_VISIBLE_DEVICES must say.
func (s share) uuids() string {
	var out []string
	for u := range s {
		out = append(out, u)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// assigned returns the pod's tessera.io/gpu-assignment by container.
func assigned(t *testing.T, p *v1.Pod) map[string]share {
	t.Helper()
	a, err := assignment.Parse(p.Annotations[assignment.Annotation])
	if err != nil {
		t.Fatalf("pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	out := map[string]share{}
	for c, devs := range a {
		out[c] = share{}
		for _, d := range devs {
			out[c][d.UUID] += d.Percent
		}
	}
	return out
}

// kubeletRecord reads the node's kubelet through its PodResources API:
// namespace/pod/container to the GPUs it was given.
func kubeletRecord(t *testing.T, node string) map[string]share {
	t.Helper()
	out, err := readKubeletRecord(t.Context(), node)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readKubeletRecord is kubeletRecord returning its error.
func readKubeletRecord(ctx context.Context, node string) (map[string]share, error) {
	dir := ""
	for _, cn := range cluster.Nodes {
		if cn.Name == node {
			dir = cn.Dir
		}
	}
	if dir == "" {
		return nil, fmt.Errorf("no node %s", node)
	}
	// The node's /var/lib/kubelet is its directory's kubelet/ (a bind
	// mount in the node's own mount namespace).
	devs, err := handoff.PodResources{Socket: filepath.Join(dir, "kubelet", "pod-resources", "kubelet.sock")}.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("node %s: PodResources: %w", node, err)
	}
	out := map[string]share{}
	for _, d := range devs {
		key := d.Namespace + "/" + d.Pod + "/" + d.Container
		if out[key] == nil {
			out[key] = share{}
		}
		for _, id := range d.IDs {
			if d.Resource == handoff.Percent {
				uuid, _, ok := handoff.ParsePercentID(id)
				if !ok {
					return nil, fmt.Errorf("node %s: %s has device %q, not a percent slot", node, key, id)
				}
				out[key][uuid]++
			} else {
				out[key][id] += 100
			}
		}
	}
	return out, nil
}

// settledRecord waits until the kubelet's record of every running pod of ns
// equals the pod's assignment annotation, and returns those pods and the
// record. Both catch up on their own: the device plugin rewrites an
// annotation to what the kubelet did where the kubelet admitted pods of one
// shape in another order than expected, and a restarted kubelet lists a
// running pod again only once it has admitted it anew. It fails the test,
// naming the differences, after a minute.
func settledRecord(t *testing.T, ns string) ([]*v1.Pod, map[string]share) {
	t.Helper()
	var (
		running  []*v1.Pod
		record   map[string]share
		mismatch []string
	)
	err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		if record, err = readKubeletRecord(ctx, gpuNode); err != nil {
			return false, nil
		}
		running, mismatch = running[:0], mismatch[:0]
		for i := range list.Items {
			p := &list.Items[i]
			if p.Status.Phase != v1.PodRunning || p.DeletionTimestamp != nil {
				continue
			}
			running = append(running, p)
			want := assigned(t, p)["main"]
			if got := record[ns+"/"+p.Name+"/main"]; got.String() != want.String() {
				mismatch = append(mismatch, fmt.Sprintf("%s: the kubelet gave %s, the assignment says %s", p.Name, got, want))
			}
		}
		return len(mismatch) == 0, nil
	})
	if err != nil {
		t.Errorf("the kubelet's record never matched the annotations: %v\n%s", err, strings.Join(mismatch, "\n"))
	}
	return running, record
}

// saveTesseraLogs writes the logs of Tessera's pods to the run's log
// directory (make e2e keeps it in _output/e2e/logs), named by the test
// about to replace them: the kubelet removes a pod's logs with the pod.
func saveTesseraLogs(t *testing.T) {
	t.Helper()
	// Not t.Context(): this also runs in cleanups, after it ends.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods, err := cluster.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("listing %s to keep its logs: %v", namespace, err)
		return
	}
	dir := filepath.Join(*workDir, "logs", "tessera")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("keeping logs: %v", err)
		return
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			data, err := cluster.Client.CoreV1().Pods(namespace).GetLogs(p.Name, &v1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
			if err != nil {
				continue
			}
			name := fmt.Sprintf("%s_%s_%s.log", t.Name(), p.Name, c.Name)
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Logf("keeping logs: %v", err)
			}
		}
	}
}
