package main

import (
	"context"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	kschedv1 "k8s.io/kube-scheduler/config/v1"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	kubeschedulerscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"
	internalcache "k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/names"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/config"
	configscheme "github.com/tessera-gpu/tessera/config/scheme"
	configv1 "github.com/tessera-gpu/tessera/config/v1"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	tesseraplugins "github.com/tessera-gpu/tessera/plugins"
)

// A strategy is one placement policy of the comparison: which plugin
// scores nodes, and the TesseraGPU args (its Reserve picks the GPUs in
// every policy).
type strategy struct {
	name string
	// scorer is the score plugin; empty means none (ties everywhere, so
	// the scheduler's random tie-break decides).
	scorer string
	args   func(pods []tracePod) *config.TesseraGPUArgs
	about  string
}

func tesseraArgs(t config.ScoringStrategyType) *config.TesseraGPUArgs {
	a := configscheme.DefaultTesseraGPUArgs()
	a.ScoringStrategy.Type = t
	// The inventories are written once, before the replays; no node should
	// turn stale during a long run.
	a.InventoryStaleness = metav1.Duration{Duration: 1000 * time.Hour}
	return a
}

// onlineFragmentation is the fragmentation strategy as the scheduler ships
// it: no seed, the workload learnt from the pods as they arrive.
func onlineFragmentation([]tracePod) *config.TesseraGPUArgs {
	a := tesseraArgs(config.ScoringStrategyFragmentation)
	a.ScoringStrategy.Fragmentation = shippedFragmentation()
	return a
}

// shippedFragmentation is the fragmentation strategy's settings as the
// scheduler defaults them.
func shippedFragmentation() *config.FragmentationArgs {
	v := &configv1.TesseraGPUArgs{ScoringStrategy: &configv1.ScoringStrategy{Type: configv1.ScoringStrategyFragmentation}}
	configv1.SetDefaults_TesseraGPUArgs(v)
	var a config.TesseraGPUArgs
	// The conversion has no error paths.
	_ = configv1.Convert_v1_TesseraGPUArgs_To_config_TesseraGPUArgs(v, &a, nil)
	return a.ScoringStrategy.Fragmentation
}

// onlineFGD is the shipped strategy without CPU starvation: the published
// fragmentation measure with the workload learnt online.
func onlineFGD([]tracePod) *config.TesseraGPUArgs {
	a := tesseraArgs(config.ScoringStrategyFragmentation)
	a.ScoringStrategy.Fragmentation = shippedFragmentation()
	a.ScoringStrategy.Fragmentation.CPUStarvation = 0
	return a
}

// oracleFragmentation gives the strategy the published experiments'
// advance knowledge: the shapes of the whole pod list, fixed. It scores
// fragmentation as published (no CPU starvation), to check the replay
// against the paper's FGD.
func oracleFragmentation(pods []tracePod) *config.TesseraGPUArgs {
	a := tesseraArgs(config.ScoringStrategyFragmentation)
	f := &config.FragmentationArgs{WindowPods: 0, Coverage: 100}
	for _, s := range oracleClasses(pods, 0.95) {
		c := config.WorkloadClass{CPUMilli: s.key.cpu, GPUs: int32(s.key.gpus), GPUPercent: int32(s.key.milli / 10), Weight: int32(s.n)}
		if s.key.spec != "" {
			for _, m := range strings.Split(s.key.spec, "|") {
				if m != "" && !slices.Contains(c.Models, m) {
					c.Models = append(c.Models, m)
				}
			}
		}
		f.Seed = append(f.Seed, c)
	}
	a.ScoringStrategy.Fragmentation = f
	return a
}

var strategies = []strategy{
	{name: "random", args: func([]tracePod) *config.TesseraGPUArgs { return tesseraArgs(config.ScoringStrategyBinpack) },
		about: "no score plugin: a uniformly random feasible node; GPUs by tightest fit"},
	{name: "binpack", scorer: config.TesseraGPUName, args: func([]tracePod) *config.TesseraGPUArgs { return tesseraArgs(config.ScoringStrategyBinpack) },
		about: "TesseraGPU, scoringStrategy binpack"},
	{name: "spread", scorer: config.TesseraGPUName, args: func([]tracePod) *config.TesseraGPUArgs { return tesseraArgs(config.ScoringStrategySpread) },
		about: "TesseraGPU, scoringStrategy spread"},
	{name: "bestfit", scorer: bestFitName, args: func([]tracePod) *config.TesseraGPUArgs { return tesseraArgs(config.ScoringStrategyBinpack) },
		about: "least CPU and GPU left on the node after placement (the paper's BestFit); GPUs by tightest fit"},
	{name: "dotprod", scorer: dotProdName, args: func([]tracePod) *config.TesseraGPUArgs { return tesseraArgs(config.ScoringStrategyBinpack) },
		about: "smallest dot product of the node's free and the pod's requested CPU and GPU (the paper's DotProd); GPUs by tightest fit"},
	{name: "fragmentation", scorer: config.TesseraGPUName, args: onlineFragmentation,
		about: "TesseraGPU, scoringStrategy fragmentation, workload estimated online (the shipped defaults)"},
	{name: "fragmentation-fgd", scorer: config.TesseraGPUName, args: onlineFGD,
		about: "TesseraGPU, scoringStrategy fragmentation with cpuStarvation 0 (the published measure), workload estimated online"},
	{name: "fragmentation-oracle", scorer: config.TesseraGPUName, args: oracleFragmentation,
		about: "TesseraGPU, scoringStrategy fragmentation with cpuStarvation 0, fixed seed = the trace's own pod shapes (the paper's setting)"},
}

func strategyByName(name string) (strategy, error) {
	var valid []string
	for _, s := range strategies {
		if s.name == name {
			return s, nil
		}
		valid = append(valid, s.name)
	}
	return strategy{}, fmt.Errorf("unknown strategy %q; valid strategies: %s", name, strings.Join(valid, ", "))
}

// cluster is the trace's nodes as Kubernetes sees them.
type cluster struct {
	nodes    []*v1.Node
	capacity int64 // milli-GPU
	// kube is the in-process apiserver holding the GPUNodes.
	kubeConfig *rest.Config
	// mode is how the nodes serve their GPUs (modeDevicePlugin, ...).
	mode string
}

const gpuModelLabel = "tessera.io/trace-gpu-model"

// nodeObject is the trace node as a Node; on a DRA node no device plugin
// makes GPUs allocatable.
func nodeObject(n traceNode, dra bool) *v1.Node {
	alloc := v1.ResourceList{
		v1.ResourceCPU:    *resource.NewMilliQuantity(n.cpuMilli, resource.DecimalSI),
		v1.ResourceMemory: *resource.NewQuantity(n.memMiB<<20, resource.BinarySI),
		v1.ResourcePods:   resource.MustParse("1001"),
	}
	if n.gpus > 0 && !dra {
		alloc[gpu.ResourceGPU] = *resource.NewQuantity(int64(n.gpus), resource.DecimalSI)
		alloc[gpu.ResourcePercent] = *resource.NewQuantity(int64(n.gpus*100), resource.DecimalSI)
	}
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{gpuModelLabel: n.model}},
		Status:     v1.NodeStatus{Capacity: alloc, Allocatable: alloc},
	}
}

// podObject turns a trace row into the pod a user would submit.
func podObject(p *tracePod, i int) *v1.Pod {
	c := v1.Container{Name: "main", Resources: v1.ResourceRequirements{
		Requests: v1.ResourceList{
			v1.ResourceCPU:    *resource.NewMilliQuantity(p.cpuMilli, resource.DecimalSI),
			v1.ResourceMemory: *resource.NewQuantity(p.memMiB<<20, resource.BinarySI),
		},
	}}
	switch {
	case p.numGPU == 0:
	case p.gpuMilli == 1000:
		c.Resources.Limits = v1.ResourceList{gpu.ResourceGPU: *resource.NewQuantity(int64(p.numGPU), resource.DecimalSI)}
	default:
		c.Resources.Limits = v1.ResourceList{gpu.ResourcePercent: *resource.NewQuantity(int64(p.gpuMilli/10), resource.DecimalSI)}
	}
	for k, v := range c.Resources.Limits {
		c.Resources.Requests[k] = v
	}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", p.name, i), Namespace: "trace", UID: types.UID("trace-" + strconv.Itoa(i))},
		Spec:       v1.PodSpec{SchedulerName: "tessera-scheduler", Containers: []v1.Container{c}},
	}
	if len(p.models) > 0 {
		pod.Annotations = map[string]string{gpu.ModelsAnnotation: strings.Join(p.models, ",")}
	}
	return pod
}

// result is one replay's outcome.
type result struct {
	trace, strategy string
	seed            int64
	// unallocated[k] is the mean unallocated GPU % over the pod events at
	// which the arrived GPU demand rounds to k % of capacity; NaN where
	// no event fell.
	sum          [maxArrivedPct + 1]float64
	count        [maxArrivedPct + 1]int
	pods, failed int
	// placed is the node of each arrival, "" where it failed; it is kept
	// in memory only, to check that a seed replays the same placements.
	placed  []string
	elapsed time.Duration
	// date is when the run was made.
	date time.Time
}

const maxArrivedPct = 130

// unallocatedAt reads the curve as the published analysis does: the mean
// over the events at k %, else within one point.
func (r *result) unallocatedAt(k int) (float64, bool) {
	for _, d := range []int{0, -1, 1} {
		if j := k + d; j >= 0 && j <= maxArrivedPct && r.count[j] > 0 {
			return r.sum[j] / float64(r.count[j]), true
		}
	}
	return 0, false
}

// replay places the arrivals one by one through a fresh scheduling
// framework: the in-tree NodeResourcesFit and the Tessera plugins with the
// strategy's args, a real snapshot of the nodes, and the GPUNode
// inventories served by a real apiserver. Failed pods are final and no pod
// leaves, as in the published protocol.
func replay(ctx context.Context, cl *cluster, st strategy, allPods, order []tracePod, seed int64, progress func(done int)) (*result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client, err := kubernetes.NewForConfig(cl.kubeConfig)
	if err != nil {
		return nil, err
	}
	informerFactory := informers.NewSharedInformerFactory(client, 0)
	snapshot := internalcache.NewSnapshot(nil, cl.nodes)
	registry := plugins.NewInTreeRegistry()
	if err := registry.Merge(tesseraplugins.Registry()); err != nil {
		return nil, err
	}
	if err := registry.Merge(baselineRegistry()); err != nil {
		return nil, err
	}
	profile, err := replayProfile(st, st.args(allPods))
	if err != nil {
		return nil, err
	}
	opts := []frameworkruntime.Option{}
	var dra fwk.SharedDRAManager
	run := draRuns.Add(1)
	if isDRA(cl.mode) {
		if dra, err = draManager(ctx, client, informerFactory); err != nil {
			return nil, err
		}
		opts = append(opts, frameworkruntime.WithSharedDRAManager(dra))
		if err := draPlugin(profile, cl.mode); err != nil {
			return nil, err
		}
	}
	fw, err := frameworkruntime.NewFramework(ctx, registry, profile, append(opts,
		frameworkruntime.WithKubeConfig(cl.kubeConfig),
		frameworkruntime.WithClientSet(client),
		frameworkruntime.WithInformerFactory(informerFactory),
		frameworkruntime.WithSnapshotSharedLister(snapshot),
		frameworkruntime.WithEventRecorder(&events.FakeRecorder{}),
		frameworkruntime.WithParallelism(runtime.GOMAXPROCS(0)),
		frameworkruntime.WithPodActivator(noQueue{}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("building the framework for %s: %w", st.name, err)
	}
	informerFactory.Start(ctx.Done())
	informerFactory.WaitForCacheSync(ctx.Done())
	if err := waitSynced(ctx, fw); err != nil {
		return nil, err
	}

	infos, err := snapshot.NodeInfos().List()
	if err != nil {
		return nil, err
	}
	// The snapshot lists its nodes in map order, a new one each run; the
	// random tie-break below must see them in a fixed order for a seed to
	// replay the same placements.
	infos = slices.Clone(infos)
	slices.SortFunc(infos, func(a, b fwk.NodeInfo) int { return strings.Compare(a.Node().Name, b.Node().Name) })
	rng := rand.New(rand.NewSource(seed))
	res := &result{strategy: st.name, seed: seed, pods: len(order), placed: make([]string, len(order))}
	var arrived, allocated int64
	feasible := make([]bool, len(infos))
	start := time.Now()
	for i := range order {
		p := &order[i]
		pod := podObject(p, i)
		if dra != nil {
			if err := draPod(ctx, client, dra, run, p, pod); err != nil {
				return nil, err
			}
		}
		node, ok := schedule(ctx, fw, pod, infos, feasible, rng)
		arrived += p.demand()
		if ok {
			res.placed[i] = node.Node().Name
			allocated += p.demand()
			pod.Spec.NodeName = node.Node().Name
			node.(*framework.NodeInfo).AddPod(pod)
		} else {
			res.failed++
		}
		k := int(float64(arrived)*100/float64(cl.capacity) + 0.5)
		if k <= maxArrivedPct {
			res.sum[k] += 100 - float64(allocated)*100/float64(cl.capacity)
			res.count[k]++
		}
		if progress != nil {
			progress(i + 1)
		}
	}
	res.elapsed = time.Since(start)
	res.date = start
	return res, nil
}

// noQueue stands for the scheduling queue: the replay has none, since
// failed pods are final.
type noQueue struct{}

func (noQueue) Activate(klog.Logger, map[string]*v1.Pod) {}

// schedule runs one scheduling cycle: PreFilter, Filter on every node,
// PreScore and Score on every feasible node, the scheduler's random choice
// among the best, and Reserve.
func schedule(ctx context.Context, fw framework.Framework, pod *v1.Pod, infos []fwk.NodeInfo, feasible []bool, rng *rand.Rand) (fwk.NodeInfo, bool) {
	state := framework.NewCycleState()
	if _, st, _ := fw.RunPreFilterPlugins(ctx, state, pod); !st.IsSuccess() {
		return nil, false
	}
	var n atomic.Int64
	fw.Parallelizer().Until(ctx, len(infos), func(i int) {
		feasible[i] = fw.RunFilterPlugins(ctx, state, pod, infos[i]).IsSuccess()
		if feasible[i] {
			n.Add(1)
		}
	}, "Filter")
	if n.Load() == 0 {
		return nil, false
	}
	candidates := make([]fwk.NodeInfo, 0, n.Load())
	for i, ok := range feasible {
		if ok {
			candidates = append(candidates, infos[i])
		}
	}
	chosen := candidates[0]
	if len(candidates) > 1 {
		if st := fw.RunPreScorePlugins(ctx, state, pod, candidates); !st.IsSuccess() && !st.IsSkip() {
			return nil, false
		}
		scores, st := fw.RunScorePlugins(ctx, state, pod, candidates)
		if !st.IsSuccess() {
			return nil, false
		}
		// Uniform among the top scores, as kube-scheduler's selectHost.
		best, ties := int64(-1), 0
		for i, s := range scores {
			switch {
			case s.TotalScore > best:
				best, ties, chosen = s.TotalScore, 1, candidates[i]
			case s.TotalScore == best:
				ties++
				if rng.Intn(ties) == 0 {
					chosen = candidates[i]
				}
			}
		}
	}
	if st := fw.RunReservePluginsReserve(ctx, state, pod, chosen.Node().Name); !st.IsSuccess() {
		fw.RunReservePluginsUnreserve(ctx, state, pod, chosen.Node().Name)
		return nil, false
	}
	return chosen, true
}

// waitSynced waits until the GPU plugin's informers have the inventories:
// until PreFilter stops saying so for a probe pod.
func waitSynced(ctx context.Context, fw framework.Framework) error {
	probe := podObject(&tracePod{name: "probe", numGPU: 1, gpuMilli: 1000}, -1)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, st, _ := fw.RunPreFilterPlugins(ctx, framework.NewCycleState(), probe)
		if st.IsSuccess() || !strings.Contains(st.Message(), "not yet synced") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the GPU plugin did not sync its inventory: %s", st.Message())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replayProfile is the scheduler profile of a replay: the in-tree fit
// filter for CPU and memory, the Tessera GPU plugin for GPUs, one score
// plugin, every node scored.
func replayProfile(st strategy, gpuArgs *config.TesseraGPUArgs) (*schedconfig.KubeSchedulerProfile, error) {
	fitV1 := &kschedv1.NodeResourcesFitArgs{}
	kubeschedulerscheme.Scheme.Default(fitV1)
	fitArgs := &schedconfig.NodeResourcesFitArgs{}
	if err := kubeschedulerscheme.Scheme.Convert(fitV1, fitArgs, nil); err != nil {
		return nil, err
	}
	set := func(names ...string) schedconfig.PluginSet {
		var ps schedconfig.PluginSet
		for _, n := range names {
			ps.Enabled = append(ps.Enabled, schedconfig.Plugin{Name: n, Weight: 1})
		}
		return ps
	}
	p := &schedconfig.KubeSchedulerProfile{
		SchedulerName:            "tessera-scheduler",
		PercentageOfNodesToScore: ptr.To[int32](100),
		Plugins: &schedconfig.Plugins{
			// Queue sort and bind are required of every profile; the replay
			// orders pods itself and binds nothing.
			QueueSort: set(names.PrioritySort),
			Bind:      set(names.DefaultBinder),
			PreFilter: set(names.NodeResourcesFit, config.TesseraGPUName),
			// The GPU filter runs first: once the cluster fills, it turns
			// most nodes away in a few loads, while NodeResourcesFit spends
			// microseconds per node validating the extended-resource names
			// (most of a replay's time when it ran first). The order does
			// not change which nodes are feasible, so results are the same.
			Filter:  set(config.TesseraGPUName, names.NodeResourcesFit),
			Reserve: set(config.TesseraGPUName),
		},
		PluginConfig: []schedconfig.PluginConfig{
			{Name: names.NodeResourcesFit, Args: fitArgs},
			{Name: config.TesseraGPUName, Args: gpuArgs},
		},
	}
	if st.scorer != "" {
		p.Plugins.Score = set(st.scorer)
	}
	if st.scorer == config.TesseraGPUName {
		p.Plugins.PreScore = set(st.scorer)
	}
	return p, nil
}
