// Command tessera-device-plugin is Tessera's node agent, run as a DaemonSet
// on GPU nodes. It discovers the GPUs through NVML (or a fake machine with
// --fake), serves them to the kubelet as nvidia.com/gpu and
// tessera.io/gpu-percent, watches their health, publishes the node's GPUNode
// inventory, and makes the kubelet give each container the GPUs that
// tessera-scheduler chose.
package main

import (
	"context"
	"fmt"
	v1 "k8s.io/api/core/v1"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/tessera-gpu/tessera/deviceplugin/agent"
	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
	"github.com/tessera-gpu/tessera/pkg/version"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tessera-device-plugin:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := pflag.NewFlagSet("tessera-device-plugin", pflag.ContinueOnError)
	hc := health.DefaultConfig()
	cfg := agent.Config{}
	var kubeconfig string
	var ignored, taintEffect string
	showVersion := fs.Bool("version", false, "print the version and exit")
	removeTaints := fs.Bool("remove-node-taints", false, "remove the nvidia.com/gpu taint from every node where --taint-node added it, then exit (the chart runs this when it is uninstalled)")
	fs.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (env NODE_NAME; set it from the downward API)")
	fs.StringVar(&kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file; empty uses the in-cluster service account")
	fs.StringVar(&cfg.Fake, "fake", os.Getenv("TESSERA_FAKE_GPUS"), "serve a fake machine instead of NVML: one of "+strings.Join(fakegpu.Kinds(), ", ")+" (env TESSERA_FAKE_GPUS)")
	fs.StringVar(&cfg.NVMLLibrary, "nvml-library", "", "path of libnvidia-ml.so.1; empty searches the usual places")
	fs.StringVar(&cfg.DevicePluginDir, "device-plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin directory")
	fs.StringVar(&cfg.PodResourcesSocket, "pod-resources-socket", "/var/lib/kubelet/pod-resources/kubelet.sock", "the kubelet's PodResources API socket")
	fs.BoolVar(&cfg.TaintNode, "taint-node", false, "add the taint nvidia.com/gpu=present:NoSchedule to this node")
	fs.StringVar(&cfg.MetricsAddress, "metrics-bind-address", ":9410", "address of the /metrics and /healthz endpoint; 0 disables it")
	fs.BoolVar(&cfg.CDI, "cdi", false, "return CDI device names (nvidia.com/gpu=<uuid>) from Allocate; the container runtime must resolve them (nvidia-ctk cdi generate on GPU nodes; with --fake the plugin writes the spec into --cdi-spec-dir)")
	fs.StringVar(&cfg.CDISpecDir, "cdi-spec-dir", "/var/run/cdi", "with --cdi and --fake, the directory the fake GPUs' CDI spec is written to (one the container runtime scans)")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", 30*time.Second, "how often the GPUNode heartbeat is refreshed; keep it well under the scheduler's inventoryStaleness")
	fs.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", 5*time.Second, "how often the kubelet's allocations are compared with the pods' assignments")
	fs.StringVar(&ignored, "health-ignored-xids", joinXIDs(hc.IgnoredXIDs), "XIDs that do not make a GPU unhealthy (application errors), comma-separated")
	fs.DurationVar(&hc.RecoveryQuiet, "health-recovery-quiet", hc.RecoveryQuiet, "an unhealthy GPU that answers and has no critical event for this long is healthy again; 0 keeps it unhealthy until restart")
	fs.DurationVar(&hc.ProbeInterval, "health-probe-interval", hc.ProbeInterval, "how often every GPU is queried to check that it still answers")
	fs.DurationVar(&hc.WaitFailureLimit, "health-wait-failure-limit", hc.WaitFailureLimit, "how long NVML event waits may fail before every GPU is marked unhealthy")
	fs.StringVar(&taintEffect, "health-taint-effect", string(v1.TaintEffectNoSchedule), "effect of the device taint an unhealthy GPU gets (tessera.io/xid, tessera.io/ecc, tessera.io/gpu-lost): NoSchedule keeps new pods off it; NoExecute also evicts the pods on it that do not tolerate the taint")
	klogFlags := goFlagSet()
	fs.AddGoFlagSet(klogFlags)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println(version.String("tessera-device-plugin"))
		return nil
	}
	var err error
	if hc.IgnoredXIDs, err = parseXIDs(ignored); err != nil {
		return err
	}
	cfg.Health = hc
	switch e := v1.TaintEffect(taintEffect); e {
	case v1.TaintEffectNoSchedule, v1.TaintEffectNoExecute:
		cfg.HealthTaintEffect = e
	default:
		return fmt.Errorf("--health-taint-effect must be NoSchedule or NoExecute, got %q", taintEffect)
	}
	if *removeTaints {
		return removeNodeTaints(kubeconfig)
	}
	if cfg.NodeName == "" {
		return fmt.Errorf("--node-name (or NODE_NAME) is required")
	}
	for name, d := range map[string]time.Duration{"--heartbeat": cfg.Heartbeat, "--reconcile-interval": cfg.ReconcileInterval,
		"--health-probe-interval": hc.ProbeInterval, "--health-wait-failure-limit": hc.WaitFailureLimit} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive, got %v", name, d)
		}
	}
	if hc.RecoveryQuiet < 0 {
		return fmt.Errorf("--health-recovery-quiet must be 0 (never) or positive, got %v", hc.RecoveryQuiet)
	}
	restCfg, err := clientConfig(kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "tessera-device-plugin/" + cfg.NodeName
	if cfg.Kube, err = kubernetes.NewForConfig(restCfg); err != nil {
		return err
	}
	gpuCfg := rest.CopyConfig(restCfg)
	gpuCfg.ContentType, gpuCfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	if cfg.GPU, err = versioned.NewForConfig(gpuCfg); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := klog.Background()
	logger.Info("Starting", "version", version.String("tessera-device-plugin"), "node", cfg.NodeName)
	return agent.Run(klog.NewContext(ctx, logger), cfg, nil)
}

// removeNodeTaints is the one-shot mode of --remove-node-taints.
func removeNodeTaints(kubeconfig string) error {
	restCfg, err := clientConfig(kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "tessera-device-plugin/remove-node-taints"
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	n, err := agent.RemoveNodeTaints(klog.NewContext(ctx, klog.Background()), kube)
	if err != nil {
		return err
	}
	fmt.Printf("removed the GPU-node taint Tessera added from %d node(s)\n", n)
	return nil
}

func clientConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig and not running in a cluster: %w", err)
	}
	return cfg, nil
}

func joinXIDs(xids []uint64) string {
	s := make([]string, len(xids))
	for i, x := range xids {
		s[i] = strconv.FormatUint(x, 10)
	}
	return strings.Join(s, ",")
}

func parseXIDs(s string) ([]uint64, error) {
	var out []uint64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		x, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--health-ignored-xids: %q is not an XID number", f)
		}
		out = append(out, x)
	}
	return out, nil
}
