// Package bound measures scheduling throughput where the scheduler is the
// only bottleneck: every measured pod exists, pending, before the scheduler
// starts, so neither pod creation nor a load generator sets the pace. A
// real etcd and kube-apiserver serve the cluster in this process; the
// scheduler is tessera-scheduler's own code, run once with Tessera's
// shipped profile and once, as the baseline, with kube-scheduler's default
// profile on the same workload (pods asking nvidia.com/gpu or
// tessera.io/gpu-percent, which the default profile counts as extended
// resources). The rate is measured between the 10th and the 90th
// percentile of the pods' bind times, as seen by a watch, so that start-up
// and the last stragglers do not count.
//
//	go test ./bench/bound -run='^$' -bench=. -benchtime=1x            # the full matrix
//	go test ./bench/bound -run='^$' -bench=. -benchtime=1x -short     # the CI case
//	go test ./bench/bound -run='^$' -bench=. -benchtime=1x -bound.dra   # DRA nodes
//
// With -bound.dra the nodes are DRA nodes instead: Tessera's DRA driver
// publishes each node's GPUs in a ResourceSlice, a DeviceClass maps
// nvidia.com/gpu to them, and the pods ask nvidia.com/gpu, which
// DynamicResources serves through an extended-resource claim it creates
// for each pod (two more API writes per pod, for every profile alike).
// The profiles are then Tessera's (TesseraDynamicResources), Tessera's
// with the in-tree DynamicResources (what Tessera's device choice costs)
// and the default one.
package bound

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/config/examples"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// workload is one case: a cluster of 8-GPU nodes, filled to a share of its
// GPUs before measuring, and pending pods of one kind.
type workload struct {
	nodes int
	// fill is the percent of GPUs held before measuring.
	fill int
	// packed holds the fill as whole nodes (that share of the nodes full,
	// the rest empty) instead of the same share of every node.
	packed bool
	pods   int
	kind   string // whole, share or mixed; dra: whole GPUs on DRA nodes
}

func (w workload) String() string {
	fill := fmt.Sprint(w.fill)
	if w.packed {
		fill += "-packed"
	}
	return fmt.Sprintf("nodes=%d/fill=%s/pods=%d/%s", w.nodes, fill, w.pods, w.kind)
}

// profiles are what is compared: Tessera's shipped profile, and the
// default profile as the baseline. With -bound.system-spread, also
// Tessera's profile with kube-scheduler's system default spread
// constraints, under which no pod can be signed and batching is off: the
// difference is what batching buys.
var profiles = []string{"tessera-scheduler", "default-scheduler"}

var (
	systemSpread  = flag.Bool("bound.system-spread", false, "also run Tessera's profile with PodTopologySpread's System defaults (batching off)")
	fragmentation = flag.Bool("bound.fragmentation", false, "also run Tessera's profile with the fragmentation scoring strategy")
	dra           = flag.Bool("bound.dra", false, "run the DRA workloads: nodes whose GPUs a DRA driver publishes, pods asking a mapped nvidia.com/gpu")
)

// The variants of Tessera's profile; their pods ask for tessera-scheduler.
const (
	tesseraSystemSpread  = "tessera-scheduler+system-spread"
	tesseraFragmentation = "tessera-scheduler+fragmentation"
	// tesseraInTreeDRA is Tessera's profile with the in-tree
	// DynamicResources in place of TesseraDynamicResources.
	tesseraInTreeDRA = "tessera-scheduler+in-tree-dra"
)

// schedulerName is the spec.schedulerName of a profile's pods.
func schedulerName(profile string) string {
	if profile == tesseraSystemSpread || profile == tesseraFragmentation || profile == tesseraInTreeDRA {
		return "tessera-scheduler"
	}
	return profile
}

func workloads(short bool) []workload {
	if *dra {
		if short {
			return []workload{{nodes: 100, pods: 400, kind: "dra"}}
		}
		return []workload{{nodes: 500, pods: 2000, kind: "dra"}, {nodes: 1000, pods: 4000, kind: "dra"}}
	}
	if short {
		return []workload{{nodes: 100, pods: 400, kind: "whole"}}
	}
	var out []workload
	for _, nodes := range []int{1000, 5000} {
		for _, fill := range []int{0, 50, 90} {
			free := nodes * 8 * (100 - fill) / 100
			pods := min(6000, free*3/4)
			for _, kind := range []string{"whole", "share", "mixed"} {
				out = append(out, workload{nodes: nodes, fill: fill, pods: pods, kind: kind})
			}
		}
		// A cluster whose GPUs are held by whole nodes: the pods fit on a
		// tenth of the nodes, and the others must be ruled out.
		for _, kind := range []string{"whole", "share"} {
			out = append(out, workload{nodes: nodes, fill: 90, packed: true, pods: min(6000, nodes*8/10*3/4), kind: kind})
		}
	}
	return out
}

func BenchmarkSchedulerBound(b *testing.B) {
	ps := profiles
	if *dra {
		ps = []string{"tessera-scheduler", tesseraInTreeDRA, "default-scheduler"}
	}
	if *systemSpread {
		ps = append(ps, tesseraSystemSpread)
	}
	if *fragmentation {
		ps = append(ps, tesseraFragmentation)
	}
	for _, w := range workloads(testing.Short()) {
		for _, profile := range ps {
			b.Run(w.String()+"/"+profile, func(b *testing.B) {
				for range b.N {
					rate := run(b, w, profile)
					b.ReportMetric(rate, "pods/s")
				}
			})
		}
	}
}

// run builds the cluster, starts the scheduler and returns its rate.
func run(b *testing.B, w workload, profile string) float64 {
	b.StopTimer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := b.TempDir()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, TB: b})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	start := time.Now()
	if w.kind == "dra" {
		if err := c.AddTesseraDeviceClass(ctx, string(gpu.ResourceGPU)); err != nil {
			b.Fatal(err)
		}
		parallel(b, w.nodes, func(i int) error {
			return c.AddTesseraDRANode(ctx, nodeName(i), draGPUs(nodeName(i)))
		})
	} else {
		parallel(b, w.nodes, func(i int) error {
			return c.AddNode(ctx, localcluster.FakeNode{Name: nodeName(i), GPUs: 8, NoTaint: true})
		})
	}
	// Fill: on each node, one pod of another scheduler holds the first
	// GPUs, recorded as Tessera records them, so both profiles count them.
	// Packed, the first nodes are held whole and the others not at all.
	held, filled := 8*w.fill/100, w.nodes
	if w.packed {
		held, filled = 8, w.nodes*w.fill/100
	}
	if held > 0 {
		parallel(b, filled, func(i int) error {
			a := assignment.Assignment{}
			for g := 0; g < held; g++ {
				a["main"] = append(a["main"], assignment.Device{UUID: localcluster.FakeGPUUUID(nodeName(i), g), Percent: 100})
			}
			p := pod(fmt.Sprintf("fill-%05d", i), "other-scheduler", gpu.ResourceGPU, int64(held))
			p.Spec.NodeName = nodeName(i)
			p.Annotations = map[string]string{assignment.Annotation: a.String()}
			_, err := c.Client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
			return err
		})
	}
	parallel(b, w.pods, func(i int) error {
		res, qty := gpu.ResourceGPU, int64(1)
		if w.kind == "share" || (w.kind == "mixed" && i%2 == 1) {
			res, qty = gpu.ResourcePercent, 25
		}
		_, err := c.Client.CoreV1().Pods("default").Create(ctx, pod(fmt.Sprintf("p-%05d", i), schedulerName(profile), res, qty), metav1.CreateOptions{})
		return err
	})

	b.Logf("cluster of %d nodes and %d pending pods built in %v", w.nodes, w.pods, time.Since(start).Round(time.Millisecond))
	// Bind times as a watch sees them.
	var mu sync.Mutex
	bound := map[string]time.Time{}
	factory := informers.NewSharedInformerFactory(c.Client, 0)
	inf := factory.Core().V1().Pods().Informer()
	record := func(obj any) {
		p, ok := obj.(*v1.Pod)
		if !ok || p.Spec.SchedulerName != schedulerName(profile) || p.Spec.NodeName == "" {
			return
		}
		mu.Lock()
		if _, seen := bound[p.Name]; !seen {
			bound[p.Name] = time.Now()
		}
		mu.Unlock()
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: record, UpdateFunc: func(_, o any) { record(o) }}); err != nil {
		b.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	cfg := filepath.Join(dir, "scheduler.yaml")
	if err := os.WriteFile(cfg, config(b, c.Kubeconfig, profile), 0o600); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	s, err := localcluster.RunScheduler(ctx, []string{"--config=" + cfg, "--secure-port=0"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Minute, true, func(context.Context) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(bound) == w.pods, nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatalf("%d of %d pods bound", len(bound), w.pods)
	}
	times := make([]time.Time, 0, len(bound))
	for _, t := range bound {
		times = append(times, t)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	lo, hi := times[len(times)/10], times[len(times)*9/10]
	span := hi.Sub(lo).Seconds()
	if span <= 0 {
		return 0
	}
	return float64(len(times)*8/10) / span
}

func nodeName(i int) string { return fmt.Sprintf("gpu-%05d", i) }

// draGPUs are a DRA node's eight GPUs in two NVLink islands of four.
func draGPUs(node string) []drainventory.PublishedGPU {
	gpus := make([]drainventory.PublishedGPU, 8)
	for i := range gpus {
		gpus[i] = drainventory.PublishedGPU{Name: fmt.Sprintf("gpu-%d", i), UUID: localcluster.FakeGPUUUID(node, i), Index: i,
			Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 80 << 10, NUMANode: i / 4, Island: i / 4}
	}
	return gpus
}

func pod(name, scheduler string, res v1.ResourceName, qty int64) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.PodSpec{SchedulerName: scheduler, Containers: []v1.Container{{Name: "main", Image: "x",
			Resources: v1.ResourceRequirements{
				Limits: v1.ResourceList{res: *resource.NewQuantity(qty, resource.DecimalSI)},
				Requests: v1.ResourceList{res: *resource.NewQuantity(qty, resource.DecimalSI),
					v1.ResourceCPU: resource.MustParse("100m"), v1.ResourceMemory: resource.MustParse("256Mi")},
			}}}},
	}
}

// config is the scheduler configuration: the shipped one for Tessera's
// profile, kube-scheduler's defaults for the baseline; both with leader
// election off and the client rate limits of a production install.
func config(b *testing.B, kubeconfig, profile string) []byte {
	cfg := map[string]any{"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration"}
	if schedulerName(profile) == "tessera-scheduler" {
		if err := yaml.Unmarshal(examples.TesseraScheduler, &cfg); err != nil {
			b.Fatal(err)
		}
	}
	if profile == tesseraInTreeDRA {
		// Without the multiPoint entry the default set's DynamicResources
		// is back and TesseraDynamicResources is not enabled.
		prof := cfg["profiles"].([]any)[0].(map[string]any)
		delete(prof["plugins"].(map[string]any), "multiPoint")
	}
	if profile == tesseraSystemSpread || profile == tesseraFragmentation {
		prof := cfg["profiles"].([]any)[0].(map[string]any)
		pcs := prof["pluginConfig"].([]any)
		for _, pc := range pcs {
			entry := pc.(map[string]any)
			switch {
			case profile == tesseraSystemSpread && entry["name"] == "PodTopologySpread":
				entry["args"] = map[string]any{"defaultingType": "System"}
			case profile == tesseraFragmentation && entry["name"] == "TesseraGPU":
				entry["args"].(map[string]any)["scoringStrategy"] = map[string]any{"type": "fragmentation"}
			}
		}
	}
	cfg["leaderElection"] = map[string]any{"leaderElect": false}
	cfg["clientConnection"] = map[string]any{"kubeconfig": kubeconfig, "qps": 500, "burst": 1000}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// parallel runs f(0..n-1) on a few workers and fails the benchmark on the
// first error.
func parallel(b *testing.B, n int, f func(int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}
