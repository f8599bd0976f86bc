package tesseragpu

import (
	"context"
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	internalcache "k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	configscheme "github.com/tessera-gpu/tessera/config/scheme"
	"github.com/tessera-gpu/tessera/pkg/device"
)

// fragPlugin is a plugin under the fragmentation strategy with a fixed
// workload of seed classes.
func fragPlugin(t *testing.T, seed []config.WorkloadClass, nodes ...*v1alpha1.GPUNode) *TesseraGPU {
	t.Helper()
	return fragPluginCoverage(t, 100, seed, nodes...)
}

// fragPluginCoverage is fragPlugin with the given coverage of the seed.
func fragPluginCoverage(t *testing.T, coverage int32, seed []config.WorkloadClass, nodes ...*v1alpha1.GPUNode) *TesseraGPU {
	t.Helper()
	args := configscheme.DefaultTesseraGPUArgs()
	args.ScoringStrategy = config.ScoringStrategy{Type: config.ScoringStrategyFragmentation,
		Fragmentation: &config.FragmentationArgs{WindowPods: 0, Coverage: coverage, SeedPods: 100, Seed: seed}}
	return testPluginArgs(t, args, nodes...)
}

func cpuNodeInfo(name string, cpu string) fwk.NodeInfo {
	ni := framework.NewNodeInfo()
	ni.SetNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: v1.NodeStatus{Allocatable: v1.ResourceList{v1.ResourceCPU: resource.MustParse(cpu)}}})
	return ni
}

// fragScorer is the plugin's scorer, which must be fragmentation's.
func fragScorer(pl *TesseraGPU) *fragmentationScorer { return pl.scorer.(*fragmentationScorer) }

func cpuRequest(n string) podOpt {
	return func(p *v1.Pod) {
		p.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse(n)}
	}
}

func bestNode(t *testing.T, pl *TesseraGPU, pod *v1.Pod, nodes ...fwk.NodeInfo) fwk.NodeScoreList {
	t.Helper()
	ctx := context.Background()
	cs, st := preFilter(t, pl, pod)
	if !st.IsSuccess() && !st.IsSkip() {
		t.Fatal(st)
	}
	if st := pl.PreScore(ctx, cs, pod, nil); !st.IsSuccess() {
		t.Fatalf("PreScore: %v", st)
	}
	var scores fwk.NodeScoreList
	for _, ni := range nodes {
		s, st := pl.Score(ctx, cs, pod, ni)
		if !st.IsSuccess() {
			t.Fatal(st)
		}
		scores = append(scores, fwk.NodeScore{Name: ni.Node().Name, Score: s})
	}
	if st := pl.NormalizeScore(ctx, cs, pod, scores); !st.IsSuccess() {
		t.Fatal(st)
	}
	return scores
}

func TestFragmentationScore(t *testing.T) {
	halves := []config.WorkloadClass{{CPUMilli: 1000, GPUs: 1, GPUPercent: 50, Weight: 1}}
	// Node a's only GPU has 60% free: a 30% pod there would leave 30%,
	// too little for the 50% pods the workload is made of. On b it
	// leaves 70%. Binpack would take a; fragmentation takes b.
	pl := fragPlugin(t, halves, gpuNode("a", 1, "H100"), gpuNode("b", 2, "H100"))
	pl.store.UpsertPod(holds("hold-a-0", "a", 40, 0))
	scores := bestNode(t, pl, makePod("p", percent("30")), cpuNodeInfo("a", "8"), cpuNodeInfo("b", "8"))
	if scores[0].Score >= scores[1].Score || scores[1].Score != fwk.MaxNodeScore {
		t.Errorf("scores %v; want b on top", scores)
	}
}

func TestFragmentationReserveChoosesGPU(t *testing.T) {
	halves := []config.WorkloadClass{{CPUMilli: 1000, GPUs: 1, GPUPercent: 50, Weight: 1}}
	pl := fragPlugin(t, halves, gpuNode("c", 2, "H100"))
	pl.store.UpsertPod(holds("hold-c-0", "c", 40, 0))
	pl.handle = snapshotHandle{snapshot: internalcache.NewSnapshot(nil, []*v1.Node{cpuNodeInfo("c", "8").Node()})}
	pod := makePod("p", percent("30"))
	cs, st := preFilter(t, pl, pod)
	if !st.IsSuccess() {
		t.Fatal(st)
	}
	if st := pl.Reserve(context.Background(), cs, pod, "c"); !st.IsSuccess() {
		t.Fatal(st)
	}
	// Binpack would take GPU 0 (tightest fit) and strand 30%; GPU 1 keeps
	// both GPUs able to take a 50% pod.
	s, _ := readState(cs)
	if got := s.chosen["main"][0].UUID; got != uuid("c", 1) {
		t.Errorf("reserved %s, want %s", got, uuid("c", 1))
	}
}

func TestFragmentationScoresCPUOnlyPods(t *testing.T) {
	halves := []config.WorkloadClass{{CPUMilli: 4000, GPUs: 1, GPUPercent: 50, Weight: 1}}
	pl := fragPlugin(t, halves, gpuNode("gpu", 1, "H100"))
	// 6 of 8 CPUs on the GPU node would leave too little CPU for any GPU
	// pod of the workload; the CPU-only node loses nothing.
	scores := bestNode(t, pl, makePod("web", cpuRequest("6")), cpuNodeInfo("gpu", "8"), cpuNodeInfo("cpu", "8"))
	if scores[0].Score >= scores[1].Score || scores[1].Score != fwk.MaxNodeScore {
		t.Errorf("scores %v; want the CPU node on top", scores)
	}
	// Reserve leaves pods without GPUs alone.
	cs, _ := preFilter(t, pl, makePod("web2", cpuRequest("1")))
	if st := pl.Reserve(context.Background(), cs, makePod("web2"), "gpu"); !st.IsSuccess() {
		t.Error(st)
	}
}

func TestFragmentationCPUStarvation(t *testing.T) {
	// Pods take 8 cores per GPU. A pod asking 24 cores for one GPU leaves
	// the tight node (8 cores per GPU) 8 cores for its 3 idle GPUs, which
	// strands 2 of them; the roomy node has CPU for all.
	anyModel := config.WorkloadClass{CPUMilli: 8000, GPUs: 1, GPUPercent: 100, Weight: 20}
	onlyT4 := func(w int32) config.WorkloadClass {
		return config.WorkloadClass{CPUMilli: 8000, GPUs: 1, GPUPercent: 100, Models: []string{"T4"}, Weight: w}
	}
	hungry := makePod("hungry", whole("1"), cpuRequest("24"))
	nodes := []fwk.NodeInfo{cpuNodeInfo("tight", "32"), cpuNodeInfo("roomy", "128")}
	for _, tc := range []struct {
		name       string
		seed       []config.WorkloadClass
		starvation int32
		roomyModel string
		want       string
	}{
		{"starvation sends the hungry pod where CPU is plentiful", []config.WorkloadClass{anyModel}, 100, "H100", "roomy"},
		// One T4-only pod in 21 puts no pressure on the T4s. For those
		// pods the tight node's H100s are fragments, so the published
		// measure (starvation off) would rather use one of them; the
		// two GPUs the hungry pod strands there outweigh that.
		{"off, the published measure", []config.WorkloadClass{anyModel, onlyT4(1)}, 0, "T4", "tight"},
		{"a model without pressure still offers its CPU", []config.WorkloadClass{anyModel, onlyT4(1)}, 100, "T4", "roomy"},
		// One in three does: the roomy node's T4s are what those pods
		// need, so the hungry pod is charged its extra CPU there instead.
		{"a node under model pressure offers no CPU relief", []config.WorkloadClass{anyModel, onlyT4(10)}, 100, "T4", "tight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := configscheme.DefaultTesseraGPUArgs()
			args.ScoringStrategy = config.ScoringStrategy{Type: config.ScoringStrategyFragmentation,
				Fragmentation: &config.FragmentationArgs{WindowPods: 0, Coverage: 100, SeedPods: 100, Seed: tc.seed, CPUStarvation: tc.starvation}}
			pl := testPluginArgs(t, args, gpuNode("tight", 4, "H100"), gpuNode("roomy", 4, tc.roomyModel))
			scores := bestNode(t, pl, hungry, nodes...)
			if tc.want == "tight" && scores[0].Score <= scores[1].Score || tc.want == "roomy" && scores[1].Score <= scores[0].Score {
				t.Errorf("scores %v; want %s on top", scores, tc.want)
			}
		})
	}
}

func TestWorkloadEstimator(t *testing.T) {
	shape := func(units int) device.WorkloadClass {
		return device.WorkloadClass{CPUMilli: 1000, Count: 1, Units: units}
	}
	e := newWorkloadEstimator(&config.FragmentationArgs{WindowPods: 100, Coverage: 90, SeedPods: 10,
		Seed: []config.WorkloadClass{{CPUMilli: 500, GPUs: 8, GPUPercent: 100, Weight: 1}}})
	if e.workload().Len() != 1 {
		t.Fatalf("seed workload has %d classes, want 1", e.workload().Len())
	}
	for i := 0; i < 1000; i++ {
		e.observe(types.UID(fmt.Sprint("a", i)), shape(20))
	}
	// The same pod retried many times counts once.
	for i := 0; i < 1000; i++ {
		e.observe("retried", shape(70))
	}
	for i := 0; i < 1000; i++ {
		e.observe(types.UID(fmt.Sprint("b", i)), shape(50))
	}
	// After ten windows of 50% pods, the 20% pods, the retried pod and the
	// seed have faded below the 10% that coverage leaves out.
	w := e.workload()
	if w.Len() != 1 || e.classes.Load() != 1 {
		t.Fatalf("estimate has %d classes, want 1", w.Len())
	}
	inv := device.NewInventory("n", now, []device.DeviceSpec{{ID: "g", Model: "m", Healthy: true}})
	// 40 free units are a fragment only for 50% pods.
	if f := w.Fragmentation(inv, []int{60}, 8000); f != 40 {
		t.Errorf("fragmentation %v under the estimate, want 40 (50%% pods only)", f)
	}
}

// TestPressureHeldAcrossCycles checks that the plugin hands each cycle's
// pressure to the next: a model that came under pressure keeps it while
// its share stays above pressureLeave, where a plugin that never saw it
// above pressureEnter leaves it in its small-node place.
func TestPressureHeldAcrossCycles(t *testing.T) {
	anyGPU := device.WorkloadClass{CPUMilli: 1000, Count: 1, Units: device.FullUnits}
	t4Only := device.WorkloadClass{CPUMilli: 1000, Count: 1, Units: device.FullUnits, Models: []string{"T4"}}
	nodes := []*v1alpha1.GPUNode{gpuNode("p100", 2, "P100"), gpuNode("g2", 8, "G2"), gpuNode("t4", 2, "T4")}
	newPl := func() *TesseraGPU {
		args := configscheme.DefaultTesseraGPUArgs()
		// A window far longer than the test's pods: every pod weighs the same.
		args.ScoringStrategy = config.ScoringStrategy{Type: config.ScoringStrategyFragmentation,
			Fragmentation: &config.FragmentationArgs{WindowPods: 1000000, Coverage: 100, SeedPods: 100}}
		return testPluginArgs(t, args, nodes...)
	}
	// observe adds pods of a shape and publishes the estimate at once,
	// rather than at the estimator's own cadence.
	observe := func(pl *TesseraGPU, prefix string, n int, c device.WorkloadClass) {
		for i := range n {
			fragScorer(pl).workload.observe(types.UID(fmt.Sprint(prefix, i)), c)
		}
		fragScorer(pl).workload.mu.Lock()
		fragScorer(pl).workload.rebuildLocked()
		fragScorer(pl).workload.mu.Unlock()
	}
	t4Size := func(t *testing.T, pl *TesseraGPU) int {
		t.Helper()
		pod := makePod("cycle", whole("1"))
		cs, _ := preFilter(t, pl, pod)
		if st := pl.PreScore(context.Background(), cs, pod, nil); !st.IsSuccess() {
			t.Fatal(st)
		}
		return device.MaxDevicesPerNode - int(fragScorer(pl).tieOrder(pl.store.State("t4").Inv)>>24)
	}
	// With 12 GPUs in all and 2 of them T4s, T4-only pods that are a share
	// f of the GPU demand claim 6f of the average. Each step adds pods to
	// one plugin and runs a cycle, whose own pod counts too.
	held, fresh := newPl(), newPl()
	for i, step := range []struct {
		pl          *TesseraGPU
		t4, any     int
		want        int
		description string
	}{
		{held, 12, 116, 8, "12 in 128 pods, 0.56: under pressure"},
		{held, 0, 128, 8, "12 in 257 pods, 0.28 after 0.56: pressure held"},
		{fresh, 12, 244, 2, "12 in 257 pods, 0.28 from the start: no pressure"},
		{held, 0, 128, 2, "12 in 385 pods, 0.19: below pressureLeave, pressure ends"},
	} {
		observe(step.pl, fmt.Sprint("t4-", i, "-"), step.t4, t4Only)
		observe(step.pl, fmt.Sprint("any-", i, "-"), step.any, anyGPU)
		if got := t4Size(t, step.pl); got != step.want {
			t.Errorf("%s: t4 ranks as a node of %d gpus, want %d", step.description, got, step.want)
		}
	}
}

// TestEstimatePressureSeesRareShapes checks that coverage prunes only the
// shapes Score rates against: model pressure still sees every shape.
func TestEstimatePressureSeesRareShapes(t *testing.T) {
	e := newWorkloadEstimator(&config.FragmentationArgs{WindowPods: 1000, Coverage: 70, SeedPods: 10})
	for i := range 400 {
		c := device.WorkloadClass{CPUMilli: 1000, Count: 1, Units: device.FullUnits}
		if i%4 == 3 {
			// Ten T4-only shapes, one per CPU size, 2.5% of the pods each.
			c.CPUMilli, c.Models = int64(2000+100*(i/4%10)), []string{"T4"}
		}
		e.observe(types.UID(fmt.Sprint("p", i)), c)
	}
	est := e.snapshot()
	if est.scored.Len() != 1 || e.classes.Load() != 1 {
		t.Fatalf("scored shapes: %d (metric %d), want only the common one", est.scored.Len(), e.classes.Load())
	}
	if len(est.all) != 11 {
		t.Fatalf("shapes for pressure: %d, want all 11", len(est.all))
	}
	capacity := map[string]int{"T4": 2, "G2": 8}
	t4 := device.NewInventory("t4", now, []device.DeviceSpec{{ID: "g", Model: "T4", Healthy: true}})
	if device.Pressure(est.all[:1], capacity, pressureEnter, pressureLeave, nil).Claimed(t4) {
		t.Error("the scored shape alone puts T4 under pressure; the test no longer covers pruning")
	}
	if !device.Pressure(est.all, capacity, pressureEnter, pressureLeave, nil).Claimed(t4) {
		t.Error("a quarter of the pods need T4, yet T4 is not under pressure")
	}
}

func TestFixedSeedIgnoresPods(t *testing.T) {
	e := newWorkloadEstimator(&config.FragmentationArgs{WindowPods: 0, Coverage: 100,
		Seed: []config.WorkloadClass{{CPUMilli: 500, GPUs: 1, GPUPercent: 50, Weight: 1}}})
	before := e.workload()
	e.observe("x", device.WorkloadClass{Count: 1, Units: 10})
	if e.workload() != before {
		t.Error("a fixed seed changed after a pod was seen")
	}
}

// snapshotHandle is the part of the framework handle Reserve reads under
// the fragmentation strategy: the scheduler's real snapshot of nodes.
type snapshotHandle struct {
	fwk.Handle
	snapshot *internalcache.Snapshot
}

func (h snapshotHandle) SnapshotSharedLister() fwk.SharedLister { return h.snapshot }

func TestRankScores(t *testing.T) {
	scores := fwk.NodeScoreList{{Name: "a", Score: 5 << 32}, {Name: "b", Score: 9 << 32}, {Name: "c", Score: 5 << 32}, {Name: "d", Score: 7<<32 | 3}}
	rankScores(scores)
	want := []int64{98, 100, 98, 99}
	for i, s := range scores {
		if s.Score != want[i] {
			t.Errorf("%s: rank score %d, want %d", s.Name, s.Score, want[i])
		}
	}
	many := make(fwk.NodeScoreList, 300)
	for i := range many {
		many[i] = fwk.NodeScore{Name: fmt.Sprint(i), Score: int64(i)}
	}
	rankScores(many)
	if many[299].Score != fwk.MaxNodeScore || many[0].Score != fwk.MinNodeScore {
		t.Errorf("ranks beyond %d distinct scores: best %d, worst %d", fwk.MaxNodeScore, many[299].Score, many[0].Score)
	}
}

// TestPressuredModelsLoseSmallFirst checks the tie order under model
// pressure: T4 nodes keep their small-node place until the workload has
// T4-only pods, then rank with the largest nodes; the P100 nodes beside
// them keep theirs. Pressure follows the cluster: it appears in the first
// cycle after the model does.
func TestPressuredModelsLoseSmallFirst(t *testing.T) {
	anyGPU := config.WorkloadClass{CPUMilli: 1000, GPUs: 1, GPUPercent: 100, Weight: 3}
	t4Only := config.WorkloadClass{CPUMilli: 1000, GPUs: 1, GPUPercent: 100, Models: []string{"T4"}, Weight: 1}
	size := func(pl *TesseraGPU, node string) int {
		return device.MaxDevicesPerNode - int(fragScorer(pl).tieOrder(pl.store.State(node).Inv)>>24)
	}
	pod := makePod("p", whole("1"))
	cycle := func(t *testing.T, pl *TesseraGPU) {
		t.Helper()
		cs, _ := preFilter(t, pl, pod)
		if st := pl.PreScore(context.Background(), cs, pod, nil); !st.IsSuccess() {
			t.Fatal(st)
		}
	}
	// T4-only pods of ten CPU sizes: together a quarter of the workload,
	// each shape too rare for a coverage of 75% to keep it for scoring.
	rareT4 := []config.WorkloadClass{{CPUMilli: 1000, GPUs: 1, GPUPercent: 100, Weight: 31}}
	for i := range 10 {
		rareT4 = append(rareT4, config.WorkloadClass{CPUMilli: int64(2000 + 100*i), GPUs: 1, GPUPercent: 100, Models: []string{"T4"}, Weight: 1})
	}
	for _, tt := range []struct {
		name     string
		seed     []config.WorkloadClass
		coverage int32
		wantT4   int
	}{
		{"no restricted pods", []config.WorkloadClass{anyGPU}, 100, 2},
		{"T4-only pods", []config.WorkloadClass{anyGPU, t4Only}, 100, 8},
		{"T4-only pods in shapes too rare to score", rareT4, 75, 8},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pl := fragPluginCoverage(t, tt.coverage, tt.seed, gpuNode("p100", 2, "P100"), gpuNode("g2", 8, "G2"))
			if tt.coverage < 100 && fragScorer(pl).workload.workload().Len() != 1 {
				t.Fatalf("coverage %d%% scores %d shapes, want only the common one", tt.coverage, fragScorer(pl).workload.workload().Len())
			}
			cycle(t, pl)
			// No T4 yet: the T4-only pods can run nowhere and claim nothing.
			pl.store.SetGPUNode(gpuNode("t4", 2, "T4"))
			if got := size(pl, "t4"); got != 2 {
				t.Errorf("before the next cycle t4 ranks as a node of %d gpus, want 2", got)
			}
			cycle(t, pl)
			if got := size(pl, "t4"); got != tt.wantT4 {
				t.Errorf("t4 ranks as a node of %d gpus, want %d", got, tt.wantT4)
			}
			if got := size(pl, "p100"); got != 2 {
				t.Errorf("p100 ranks as a node of %d gpus, want 2", got)
			}
			if got := size(pl, "g2"); got != 8 {
				t.Errorf("g2 ranks as a node of %d gpus, want 8", got)
			}
		})
	}
}
