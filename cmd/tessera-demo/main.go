// Command tessera-demo runs Tessera end to end on this machine, with no
// cluster: it starts etcd, kube-apiserver and tessera-scheduler in one
// process, runs tessera-device-plugin in fake mode for a small fleet of GPU
// nodes (mixed models; one GPU hit by an XID, one drained for maintenance),
// submits a mixed batch of pods and prints where
// every GPU share went and why anything is pending. While it holds, kubectl
// can look at the cluster through the kubeconfig it writes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	configv1 "github.com/tessera-gpu/tessera/config/v1"
	"github.com/tessera-gpu/tessera/deviceplugin/agent"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
	"github.com/tessera-gpu/tessera/pkg/report"
	"github.com/tessera-gpu/tessera/pkg/version"
)

func main() {
	dir := flag.String("dir", filepath.Join(os.TempDir(), "tessera-demo"), "directory for etcd data, certificates and the kubeconfig; emptied at start")
	hold := flag.Duration("hold", 2*time.Minute, "how long to keep the cluster up after the report, for kubectl; 0 exits at once")
	strategy := flag.String("strategy", string(configv1.DefaultScoringStrategy), "TesseraGPU scoring strategy: "+strategyNames())
	verbose := flag.Bool("verbose", false, "show control-plane and scheduler logs")
	flag.Parse()
	if !*verbose {
		klog.SetLogger(logr.Discard())
	}
	// Refuse a strategy the scheduler would refuse, before a control plane
	// is started for nothing.
	if !config.ScoringStrategyType(*strategy).IsSupported() {
		fmt.Fprintf(os.Stderr, "tessera-demo: unknown -strategy %q: want one of %s\n", *strategy, strategyNames())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *hold, *strategy, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "tessera-demo:", err)
		os.Exit(1)
	}
}

// strategyNames lists the scoring strategies this build implements.
func strategyNames() string {
	return strings.Join(config.SupportedScoringStrategyNames(), ", ")
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

	fmt.Println("Creating the fleet: 2x DGX H100, 1x DGX A100, 1 mixed A100/A30 node, 1 CPU node ...")
	fmt.Println("Starting tessera-device-plugin in fake mode on each GPU node ...")
	// The agents stop before the control plane does (defers run last first).
	ctx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	agents := map[string]*agent.Agent{}
	var mu sync.Mutex
	for _, n := range fleet() {
		kind := n.kind
		if err := c.AddNode(ctx, localcluster.FakeNode{Name: n.name, GPUs: n.gpus, NoInventory: true}); err != nil {
			return err
		}
		if kind == "" {
			continue
		}
		cfg := agent.Config{
			NodeName: n.name, Kube: c.Client, GPU: c.GPU, Fake: kind,
			// No kubelet runs here: the device-plugin endpoints wait for
			// one, and the agent publishes the inventory.
			DevicePluginDir:    filepath.Join(dir, "kubelet-"+n.name),
			PodResourcesSocket: filepath.Join(dir, "kubelet-"+n.name, "pod-resources.sock"),
			Heartbeat:          10 * time.Second, ReconcileInterval: 5 * time.Second, Health: health.DefaultConfig(),
		}
		if err := os.MkdirAll(cfg.DevicePluginDir, 0o700); err != nil {
			return err
		}
		go func() {
			if err := agent.Run(ctx, cfg, func(a *agent.Agent) {
				mu.Lock()
				agents[cfg.NodeName] = a
				mu.Unlock()
			}); err != nil {
				fmt.Fprintf(os.Stderr, "device plugin on %s: %v\n", cfg.NodeName, err)
			}
		}()
	}
	if err := waitInventories(ctx, c, 4); err != nil {
		return err
	}
	mu.Lock()
	h100b := agents["h100-b"]
	mu.Unlock()
	// GPU 3 of h100-b reports a critical XID; the device plugin marks it
	// unhealthy and taints it. An administrator drains GPU 7 of the same
	// node for maintenance.
	uuids := h100b.Machine().UUIDs()
	if err := h100b.Machine().InjectXID(uuids[3], 79); err != nil {
		return err
	}
	if err := drain(ctx, c, "h100-b", uuids[7]); err != nil {
		return err
	}
	if err := waitUnhealthy(ctx, c, "h100-b", uuids[3]); err != nil {
		return err
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
	snap, err := report.Take(ctx, c.Client, c.GPU, report.Options{SchedulerName: "tessera-scheduler", AllNodes: true})
	if err != nil {
		return err
	}
	fmt.Printf("\nPlacement after %.1fs:\n\n", time.Since(start).Seconds())
	snap.Print(os.Stdout)
	fmt.Printf("\nThe cluster is up. In another shell:\n  export KUBECONFIG=%s\n  kubectl get gpunodes,pods -o wide\n", c.Kubeconfig)
	fmt.Print(pluginHint(c.Kubeconfig))
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

// pluginHint is the kubectl tessera command that shows the table above,
// live, with a PATH line first when the plugin sits next to this binary
// (make demo builds both into bin/) but not on the PATH, where kubectl
// looks for plugins.
func pluginHint(kubeconfig string) string {
	hint := fmt.Sprintf("  kubectl tessera --kubeconfig %s -o wide\n", kubeconfig)
	if _, err := exec.LookPath("kubectl-tessera"); err == nil {
		return hint
	}
	self, err := os.Executable()
	if err != nil {
		return hint
	}
	dir := filepath.Dir(self)
	if _, err := os.Stat(filepath.Join(dir, "kubectl-tessera")); err != nil {
		return hint
	}
	return fmt.Sprintf("  export PATH=%s:$PATH   # for kubectl to find the kubectl-tessera plugin\n", dir) + hint
}

// settle waits until want pods are bound, then half a second more for the
// scheduler to try the rest, or at most 30 seconds.
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

type fakeNode struct {
	name string
	kind string // fakegpu kind; "" for a CPU node
	gpus int
}

func fleet() []fakeNode {
	return []fakeNode{
		{"h100-a", "dgxh100", 8},
		{"h100-b", "dgxh100", 8},
		{"a100", "dgxa100", 8},
		{"mixed", "mixed", 6},
		{"cpu-1", "", 0},
	}
}

// waitInventories waits until n GPUNodes have been published.
func waitInventories(ctx context.Context, c *localcluster.Cluster, n int) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := c.GPU.TesseraV1alpha1().GPUNodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, gn := range list.Items {
			if gn.Status.HeartbeatTime != nil {
				ready++
			}
		}
		return ready >= n, nil
	})
}

// drain puts an administrator's maintenance taint on one GPU.
func drain(ctx context.Context, c *localcluster.Cluster, node, uuid string) error {
	// The device plugin writes the status concurrently; retry on conflict.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		gn, err := c.GPU.TesseraV1alpha1().GPUNodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		gn.Spec.DeviceTaints = append(gn.Spec.DeviceTaints, v1alpha1.GPUDeviceTaint{UUID: uuid,
			DeviceTaint: v1alpha1.DeviceTaint{Key: "tessera.io/maintenance", Value: "planned", Effect: v1.TaintEffectNoSchedule}})
		_, err = c.GPU.TesseraV1alpha1().GPUNodes().Update(ctx, gn, metav1.UpdateOptions{})
		return err
	})
}

// waitUnhealthy waits until the GPUNode shows the GPU unhealthy.
func waitUnhealthy(ctx context.Context, c *localcluster.Cluster, node, uuid string) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		gn, err := c.GPU.TesseraV1alpha1().GPUNodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, g := range gn.Status.GPUs {
			if g.UUID == uuid && !g.Health.Healthy {
				return true, nil
			}
		}
		return false, nil
	})
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
		pod("a100-job", gpus(2), models("NVIDIA A100-SXM4-40GB,NVIDIA A100-PCIE-80GB")),
		pod("a30-video", gpus(1), models("NVIDIA A30-PCIE-24GB")),
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
		pod("a30-big", gpus(4), models("NVIDIA A30-PCIE-24GB")),
	}
}
