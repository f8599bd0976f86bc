// Command tessera-demo runs Tessera end to end on this machine, with no
// cluster: it starts etcd, kube-apiserver and tessera-scheduler in one
// process, creates a small fleet of fake GPU nodes (mixed models, one GPU
// under a maintenance taint), submits a mixed batch of pods and prints where
// every GPU share went and why anything is pending. While it holds, kubectl
// can look at the cluster through the kubeconfig it writes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
	"github.com/tessera-gpu/tessera/pkg/report"
	"github.com/tessera-gpu/tessera/pkg/version"
)

func main() {
	dir := flag.String("dir", filepath.Join(os.TempDir(), "tessera-demo"), "directory for etcd data, certificates and the kubeconfig; emptied at start")
	hold := flag.Duration("hold", 2*time.Minute, "how long to keep the cluster up after the report, for kubectl; 0 exits at once")
	strategy := flag.String("strategy", "binpack", "TesseraGPU scoring strategy: binpack or spread")
	verbose := flag.Bool("verbose", false, "show control-plane and scheduler logs")
	flag.Parse()
	if !*verbose {
		klog.SetLogger(logr.Discard())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *hold, *strategy, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "tessera-demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, hold time.Duration, strategy string, verbose bool) error {
	fmt.Println(version.String("tessera-demo"))
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	logf := func(string, ...any) {}
	if verbose {
		logf = func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }
	}
	start := time.Now()
	fmt.Println("Starting etcd and kube-apiserver ...")
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Logf: logf})
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("Starting tessera-scheduler (strategy %s) ...\n", strategy)
	sched, err := c.StartScheduler(ctx, dir, localcluster.SchedulerOptions{GPUArgs: map[string]any{"scoringStrategy": map[string]any{"type": strategy}}})
	if err != nil {
		return err
	}
	defer sched.Stop()

	fmt.Println("Creating the fleet: 2x 8-GPU H100, 1x 4-GPU A100, 1x 2-GPU L4, 1 CPU node ...")
	for _, n := range fleet() {
		if err := c.AddNode(ctx, n); err != nil {
			return err
		}
	}
	fmt.Println("Submitting pods ...")
	pods := batch()
	for _, p := range pods {
		if _, err := c.Client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating pod %s: %w", p.Name, err)
		}
	}
	// Let the scheduler place what it can and record why the rest waits.
	settle(ctx, c, len(pods)-3)
	snap, err := report.Take(ctx, c.Client, c.GPU, "tessera-scheduler")
	if err != nil {
		return err
	}
	fmt.Printf("\nPlacement after %.1fs:\n\n", time.Since(start).Seconds())
	snap.Print(os.Stdout)
	fmt.Printf("\nThe cluster is up. In another shell:\n  export KUBECONFIG=%s\n  kubectl get gpunodes,pods -o wide\n", c.Kubeconfig)
	if hold <= 0 {
		return nil
	}
	fmt.Printf("Holding for %s; press Ctrl-C to stop sooner.\n", hold)
	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	return nil
}

// settle waits until want pods are bound and every pending pod has a
// FailedScheduling event, or 30 seconds pass.
func settle(ctx context.Context, c *localcluster.Cluster, want int) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err == nil {
			bound := 0
			for _, p := range pods.Items {
				if p.Spec.NodeName != "" {
					bound++
				}
			}
			if bound >= want {
				time.Sleep(500 * time.Millisecond)
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func fleet() []localcluster.FakeNode {
	return []localcluster.FakeNode{
		{Name: "h100-a", GPUs: 8, Model: "NVIDIA H100 80GB HBM3", Islands: 2},
		{Name: "h100-b", GPUs: 8, Model: "NVIDIA H100 80GB HBM3", Islands: 2, Mutate: func(gn *v1alpha1.GPUNode) {
			// An administrator drains GPU 7 for maintenance.
			gn.Spec.DeviceTaints = []v1alpha1.GPUDeviceTaint{{UUID: gn.Status.GPUs[7].UUID,
				DeviceTaint: v1alpha1.DeviceTaint{Key: "tessera.io/maintenance", Value: "planned", Effect: v1.TaintEffectNoSchedule}}}
		}},
		{Name: "a100", GPUs: 4, Model: "NVIDIA A100-SXM4-80GB", Islands: 1},
		{Name: "l4", GPUs: 2, Model: "NVIDIA L4", MemoryMiB: 23034, Islands: -1},
		{Name: "cpu-1"},
	}
}

type podOpt func(*v1.Pod)

func pod(name string, opts ...podOpt) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.PodSpec{
			SchedulerName: "tessera-scheduler",
			Containers: []v1.Container{{Name: "main", Image: "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
				Resources: v1.ResourceRequirements{Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("1")}}}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func limit(r v1.ResourceName, n int64) podOpt {
	return func(p *v1.Pod) {
		c := &p.Spec.Containers[0]
		if c.Resources.Limits == nil {
			c.Resources.Limits = v1.ResourceList{}
		}
		c.Resources.Limits[r] = *resource.NewQuantity(n, resource.DecimalSI)
	}
}
func gpus(n int64) podOpt  { return limit(gpu.ResourceGPU, n) }
func share(n int64) podOpt { return limit(gpu.ResourcePercent, n) }
func models(m string) podOpt {
	return func(p *v1.Pod) { p.Annotations = map[string]string{gpu.ModelsAnnotation: m} }
}
func tolerates(key string) podOpt {
	return func(p *v1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, v1.Toleration{Key: key, Operator: v1.TolerationOpExists})
	}
}

// batch is the demo workload. The last three cannot be placed.
func batch() []*v1.Pod {
	return []*v1.Pod{
		pod("train-llm", gpus(8), models("NVIDIA H100 80GB HBM3")),
		pod("finetune", gpus(4), models("NVIDIA H100 80GB HBM3")),
		pod("a100-job", gpus(2), models("NVIDIA A100-SXM4-80GB")),
		pod("video-l4", gpus(1), models("NVIDIA L4")),
		pod("infer-1", share(30)),
		pod("infer-2", share(30)),
		pod("infer-3", share(50)),
		pod("infer-4", share(20)),
		pod("notebook-1", share(10)),
		pod("notebook-2", share(10)),
		pod("notebook-3", share(60)),
		pod("burn-in", gpus(1), tolerates("tessera.io/maintenance")),
		pod("web", func(p *v1.Pod) {}),
		pod("too-big", gpus(16)),
		pod("bad-share", share(150)),
		pod("l4-big", gpus(4), models("NVIDIA L4")),
	}
}
