// Package perf measures scheduling throughput of GPU pods with the
// scheduler_perf harness of k8s.io/kubernetes: the shipped tessera-scheduler
// profile against the in-tree-only default profile, on the same clusters of
// 8-GPU nodes (performance-config.yaml). Run it through `make bench` or
// `make bench-short`; it needs an etcd binary on PATH (`make etcd`).
package perf

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	schedperf "k8s.io/kubernetes/test/integration/scheduler_perf"
	"k8s.io/kubernetes/test/utils/client-go/ktesting"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/config/examples"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
	tesseraplugins "github.com/tessera-gpu/tessera/plugins"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu"
)

// draNodeLabel marks the nodes of templates/gpu-node-dra.yaml.
const draNodeLabel = "bench.tessera.io/dra"

// gpusPerNode matches templates/gpu-node.yaml.
const gpusPerNode = 8

func TestMain(m *testing.M) {
	if err := schedperf.InitTests(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Collect the per-plugin execution-time histograms for our plugins too.
	schedperf.PluginNames = append(schedperf.PluginNames, config.TesseraGPUName, config.TesseraTaintTolerationName, config.TesseraDynamicResourcesName)
	os.Exit(m.Run())
}

// BenchmarkPerfScheduling runs every workload of performance-config.yaml
// whose labels pass -perf-scheduling-label-filter (default "performance";
// -short adds "short").
func BenchmarkPerfScheduling(b *testing.B) {
	schedperf.RunBenchmarkPerfScheduling(b, "performance-config.yaml", "tessera", registry(),
		schedperf.WithPreRunFn(func(ktesting.TContext, *schedperf.Workload) (func(), error) {
			current.set(nil)
			return func() { current.set(nil) }, nil
		}),
		schedperf.WithPrepareFn(func(tCtx ktesting.TContext) error {
			return localcluster.InstallCRD(tCtx, tCtx.RESTConfig())
		}),
		schedperf.WithNodeUpdateFn(publishInventories),
	)
}

// current is the TesseraGPU instance of the running workload's scheduler, if
// its profile enables the plugin. The harness starts one scheduler per
// workload, one workload at a time.
var current pluginRef

type pluginRef struct {
	mu sync.Mutex
	pl fwk.Plugin
}

func (r *pluginRef) set(pl fwk.Plugin) { r.mu.Lock(); r.pl = pl; r.mu.Unlock() }
func (r *pluginRef) get() fwk.Plugin   { r.mu.Lock(); defer r.mu.Unlock(); return r.pl }

// registry is plugins.Registry() with TesseraGPU's factory wrapped to
// remember the instance, so the benchmark can wait until the plugin's own
// GPUNode informer has caught up before pods are created.
func registry() frameworkruntime.Registry {
	r := tesseraplugins.Registry()
	newGPU := r[tesseragpu.Name]
	r[tesseragpu.Name] = func(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
		pl, err := newGPU(ctx, obj, h)
		if err == nil {
			current.set(pl)
		}
		return pl, err
	}
	return r
}

// publishInventories is what each node's device plugin would do: it creates
// the node's GPUNode with a fresh heartbeat. It runs after every createNodes
// op and skips nodes that already have one. In workloads that run TesseraGPU
// it then waits until the plugin accepts a GPU pod on every node, so that
// the measurement does not include the plugin's informer catching up.
func publishInventories(tCtx ktesting.TContext, _ *scheduler.Scheduler, _ *schedperf.Workload, nodes *v1.NodeList) error {
	cfg := rest.CopyConfig(tCtx.RESTConfig())
	cfg.ContentType, cfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	client, err := versioned.NewForConfig(cfg)
	if err != nil {
		return err
	}
	gpuNodes := client.TesseraV1alpha1().GPUNodes()
	// Nodes of a DRA driver have no GPUNode (templates/gpu-node-dra.yaml).
	var plugin v1.NodeList
	for _, n := range nodes.Items {
		if n.Labels[draNodeLabel] == "" {
			plugin.Items = append(plugin.Items, n)
		}
	}
	nodes = &plugin
	errs := make([]error, len(nodes.Items))
	workqueue.ParallelizeUntil(tCtx, 16, len(nodes.Items), func(i int) {
		name := nodes.Items[i].Name
		fn := localcluster.FakeNode{Name: name, GPUs: gpusPerNode, Islands: 2}
		gn, err := gpuNodes.Create(tCtx, &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return
		}
		if err != nil {
			errs[i] = fmt.Errorf("creating GPUNode %s: %w", name, err)
			return
		}
		// Status is a subresource: Create drops it.
		gn.Status = localcluster.FakeInventory(fn)
		if _, err := gpuNodes.UpdateStatus(tCtx, gn, metav1.UpdateOptions{}); err != nil {
			errs[i] = fmt.Errorf("writing GPUNode %s status: %w", name, err)
		}
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	tCtx.Logf("Published %d GPUNode inventories", len(nodes.Items))
	return waitForPlugin(tCtx, nodes)
}

// waitForPlugin polls the running TesseraGPU until its Filter admits a
// one-GPU pod on every node.
func waitForPlugin(tCtx ktesting.TContext, nodes *v1.NodeList) error {
	pl := current.get()
	if pl == nil || len(nodes.Items) == 0 {
		return nil // an in-tree-only profile, or only DRA nodes
	}
	pre, ok1 := pl.(fwk.PreFilterPlugin)
	filter, ok2 := pl.(fwk.FilterPlugin)
	if !ok1 || !ok2 {
		return fmt.Errorf("%T is not a PreFilter and Filter plugin", pl)
	}
	probe := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "perf-probe", Namespace: "default", UID: types.UID("perf-probe")},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{
			Limits: v1.ResourceList{gpu.ResourceGPU: resource.MustParse("1")},
		}}}},
	}
	infos := make([]fwk.NodeInfo, len(nodes.Items))
	for i := range nodes.Items {
		ni := framework.NewNodeInfo()
		ni.SetNode(&nodes.Items[i])
		infos[i] = ni
	}
	start := time.Now()
	var last *fwk.Status
	err := wait.PollUntilContextTimeout(tCtx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		cs := framework.NewCycleState()
		if _, last = pre.PreFilter(ctx, cs, probe, infos); !last.IsSuccess() {
			return false, nil
		}
		for _, ni := range infos {
			if last = filter.Filter(ctx, cs, probe, ni); !last.IsSuccess() {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("TesseraGPU did not admit a GPU pod on all %d nodes: last status %v: %w", len(infos), last, err)
	}
	tCtx.Logf("TesseraGPU sees all %d inventories after %s", len(infos), time.Since(start).Round(time.Millisecond))
	return nil
}

// TestSchedulerConfigIsShipped checks that the benchmark's scheduler
// configuration is the shipped one, apart from the two settings its header
// explains.
func TestSchedulerConfigIsShipped(t *testing.T) {
	raw, err := os.ReadFile("tessera-scheduler.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var bench, shipped map[string]any
	if err := yaml.Unmarshal(raw, &bench); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(examples.TesseraScheduler, &shipped); err != nil {
		t.Fatal(err)
	}
	shipped["leaderElection"].(map[string]any)["leaderElect"] = false
	for _, pc := range shipped["profiles"].([]any)[0].(map[string]any)["pluginConfig"].([]any) {
		if entry := pc.(map[string]any); entry["name"] == config.TesseraGPUName {
			entry["args"].(map[string]any)["inventoryStaleness"] = "1h0m0s"
		}
	}
	if !reflect.DeepEqual(bench, shipped) {
		t.Errorf("bench/perf/tessera-scheduler.yaml has drifted from config/examples/tessera-scheduler.yaml; run `make bench-config`")
	}
	if !slices.Contains(schedperf.PluginNames, config.TesseraGPUName) {
		t.Errorf("TestMain did not add %s to the harness's plugin metrics", config.TesseraGPUName)
	}
}
