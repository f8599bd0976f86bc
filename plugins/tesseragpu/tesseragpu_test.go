package tesseragpu

import (
	"context"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	configscheme "github.com/tessera-gpu/tessera/config/scheme"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/internal/gputest"
)

// The shared builders (see gputest), under the names the tests use.
var (
	now      = gputest.Now
	gpuNode  = gputest.GPUNode
	uuid     = gputest.UUID
	makePod  = gputest.Pod
	limit    = gputest.Limit
	whole    = gputest.Whole
	percent  = gputest.Percent
	annotate = gputest.Annotate
	onNode   = gputest.OnNode
	tolerate = gputest.Tolerate
	nodeInfo = gputest.NodeInfo
	holds    = gputest.Holds
)

type podOpt = gputest.PodOpt

func testPlugin(t testing.TB, strategy config.ScoringStrategyType, nodes ...*v1alpha1.GPUNode) *TesseraGPU {
	t.Helper()
	args := configscheme.DefaultTesseraGPUArgs()
	args.ScoringStrategy.Type = strategy
	if strategy == config.ScoringStrategyFragmentation {
		args.ScoringStrategy.Fragmentation = &config.FragmentationArgs{WindowPods: 5000, Coverage: 95, SeedPods: 100}
	}
	return testPluginArgs(t, args, nodes...)
}

func testPluginArgs(t testing.TB, args *config.TesseraGPUArgs, nodes ...*v1alpha1.GPUNode) *TesseraGPU {
	t.Helper()
	pl := newPlugin(klog.Background(), args, feature.Features{})
	pl.now = func() time.Time { return now }
	pl.store.Now = pl.now
	for _, gn := range nodes {
		pl.store.SetGPUNode(gn)
	}
	return pl
}

// snapshotNode is the NodeInfo of the node as the scheduler's snapshot
// would have it: with every pod the plugin's cache holds there.
func snapshotNode(pl *TesseraGPU, name string) fwk.NodeInfo {
	ni := framework.NewNodeInfo()
	ni.SetNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
	for _, uid := range pl.cache.Slot(name).State().Holders() {
		ni.AddPod(&v1.Pod{ObjectMeta: metav1.ObjectMeta{UID: uid, Name: string(uid), Namespace: "default"}, Spec: v1.PodSpec{NodeName: name}})
	}
	return ni
}

func preFilter(t testing.TB, pl *TesseraGPU, pod *v1.Pod) (fwk.CycleState, *fwk.Status) {
	t.Helper()
	cs := framework.NewCycleState()
	_, st := pl.PreFilter(context.Background(), cs, pod, nil)
	return cs, st
}

func TestPreFilter(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 8, "H100"))
	tests := []struct {
		name     string
		pod      *v1.Pod
		wantCode fwk.Code
		wantMsg  string
	}{
		{name: "no gpu", pod: makePod("p"), wantCode: fwk.Skip},
		{name: "whole", pod: makePod("p", whole("2")), wantCode: fwk.Success},
		{name: "percent", pod: makePod("p", percent("30")), wantCode: fwk.Success},
		{name: "percent 0", pod: makePod("p", percent("0")), wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "must be 1-99"},
		{name: "percent 100", pod: makePod("p", percent("100")), wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "must be 1-99"},
		{name: "percent 150", pod: makePod("p", percent("150")), wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "must be 1-99"},
		{name: "percent fractional", pod: makePod("p", percent("500m")), wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "whole number"},
		{name: "both resources", pod: makePod("p", whole("1"), percent("20")), wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "both"},
		{name: "more than any node", pod: makePod("p", whole("16")), wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "largest gpu node has 8"},
		{name: "bad models", pod: makePod("p", whole("1"), annotate(gpu.ModelsAnnotation, "H100,,A100")), wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "entry 2 is empty"},
		{name: "models without gpu", pod: makePod("p", annotate(gpu.ModelsAnnotation, "H100")), wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "no container asks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, st := preFilter(t, pl, tt.pod)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Errorf("PreFilter = %v %q, want %v containing %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestPreFilterWaitsForSync(t *testing.T) {
	registerMetrics()
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 8, "H100"))
	pl.synced = func() bool { return false }
	before := counter(t, rejections.WithLabelValues(reasonNotSynced))
	if _, st := preFilter(t, pl, makePod("p", whole("1"))); st.Code() != fwk.Unschedulable || st.Message() != reasonNotSynced {
		t.Errorf("PreFilter before sync = %v", st)
	}
	if got := counter(t, rejections.WithLabelValues(reasonNotSynced)); got != before+1 {
		t.Errorf("rejections_total{reason=%q} = %v, want %v", reasonNotSynced, got, before+1)
	}
	// The sync itself may bring no GPUNode or pod event, so watch touches
	// the cache; that alone must retry the pod.
	pl.synced = func() bool { return true }
	if !notifies(pl, pl.cache.Touch) {
		t.Fatal("touch did not notify")
	}
	if got := pl.waiting.stale(pl.cache.Generation()); got["default/p"] == nil {
		t.Errorf("pod rejected before sync not retried after it: %v", got)
	}
}

func TestFilter(t *testing.T) {
	stale := gpuNode("stale", 4, "H100")
	old := metav1.NewTime(now.Add(-time.Hour))
	stale.Status.HeartbeatTime = &old
	sick := gpuNode("sick", 2, "H100")
	for i := range sick.Status.GPUs {
		sick.Status.GPUs[i].Health = v1alpha1.GPUHealth{Healthy: false, Reason: "XID 79"}
	}
	tainted := gpuNode("tainted", 1, "H100")
	tainted.Status.GPUs[0].Taints = []v1alpha1.DeviceTaint{{Key: "tessera.io/xid", Value: "79", Effect: v1.TaintEffectNoSchedule}}
	admin := gpuNode("admin", 1, "H100")
	admin.Spec.DeviceTaints = []v1alpha1.GPUDeviceTaint{{UUID: uuid("admin", 0), DeviceTaint: v1alpha1.DeviceTaint{Key: "maint", Effect: v1.TaintEffectNoSchedule}}}
	empty := gpuNode("empty", 0, "H100")
	dup := gpuNode("dup", 2, "H100")
	dup.Status.GPUs[1].UUID = dup.Status.GPUs[0].UUID

	pl := testPlugin(t, config.ScoringStrategyBinpack,
		gpuNode("h100", 4, "H100"), gpuNode("a100", 4, "A100"), stale, sick, tainted, admin, empty, dup, gpuNode("busy", 4, "H100"), gpuNode("mystery", 4, "H100"), gpuNode("guessed", 4, "H100"))
	for i := 0; i < 4; i++ {
		pl.store.UpsertPod(makePod(fmt.Sprintf("busy-%d", i), onNode("busy"), percent("60"),
			annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":60}]}`, uuid("busy", i)))))
	}
	pl.store.UpsertPod(makePod("corrupt", onNode("mystery"), percent("150"), annotate(assignment.Annotation, "{not json")))
	// Pods the cache counts as what they ask for, not as a full node: one
	// of another scheduler without an annotation, one whose annotation is
	// damaged; and one asking for no GPU with a forged annotation.
	pl.store.UpsertPod(makePod("foreign", onNode("guessed"), whole("2")))
	pl.store.UpsertPod(makePod("damaged", onNode("guessed"), whole("1"), annotate(assignment.Annotation, "{not json")))
	pl.store.UpsertPod(makePod("forged", onNode("h100"), annotate(assignment.Annotation,
		fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, uuid("h100", 0)))))

	tests := []struct {
		name     string
		pod      *v1.Pod
		node     string
		wantCode fwk.Code
		wantMsg  string
	}{
		{name: "fits", pod: makePod("p", whole("4")), node: "h100", wantCode: fwk.Success},
		{name: "more whole than free", pod: makePod("p", whole("4")), node: "tainted", wantCode: fwk.Unschedulable, wantMsg: reasonDeviceTaints},
		{name: "no inventory", pod: makePod("p", whole("1")), node: "nowhere", wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: reasonNoInventory},
		{name: "stale", pod: makePod("p", whole("1")), node: "stale", wantCode: fwk.Unschedulable, wantMsg: reasonStale},
		{name: "unhealthy", pod: makePod("p", percent("10")), node: "sick", wantCode: fwk.Unschedulable, wantMsg: reasonUnhealthy},
		{name: "device taint", pod: makePod("p", whole("1")), node: "tainted", wantCode: fwk.Unschedulable, wantMsg: reasonDeviceTaints},
		{name: "device taint tolerated", pod: makePod("p", whole("1"), tolerate("tessera.io/xid")), node: "tainted", wantCode: fwk.Success},
		{name: "admin device taint", pod: makePod("p", whole("1")), node: "admin", wantCode: fwk.Unschedulable, wantMsg: reasonDeviceTaints},
		{name: "model allowed", pod: makePod("p", whole("1"), annotate(gpu.ModelsAnnotation, "A100, H100")), node: "a100", wantCode: fwk.Success},
		{name: "model refused", pod: makePod("p", whole("1"), annotate(gpu.ModelsAnnotation, "H100")), node: "a100", wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: reasonModel},
		{name: "no gpus", pod: makePod("p", whole("1")), node: "empty", wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: reasonNoGPUs},
		{name: "duplicate uuids skipped", pod: makePod("p", percent("10")), node: "dup", wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: reasonNoGPUs},
		{name: "shares full", pod: makePod("p", percent("50")), node: "busy", wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "shares room", pod: makePod("p", percent("40")), node: "busy", wantCode: fwk.Success},
		{name: "whole on shared", pod: makePod("p", whole("1")), node: "busy", wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "unknown assignment", pod: makePod("p", percent("10")), node: "mystery", wantCode: fwk.Unschedulable, wantMsg: reasonUnknownPods},
		{name: "unrecorded pods count as asked: room", pod: makePod("p", whole("1")), node: "guessed", wantCode: fwk.Success},
		{name: "unrecorded pods count as asked: full", pod: makePod("p", whole("2")), node: "guessed", wantCode: fwk.Unschedulable, wantMsg: reasonCapacity},
		{name: "forged annotation on a pod without gpus", pod: makePod("p", whole("4")), node: "h100", wantCode: fwk.Success},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, st := preFilter(t, pl, tt.pod)
			if !st.IsSuccess() {
				t.Fatalf("PreFilter: %v", st)
			}
			st = pl.Filter(context.Background(), cs, tt.pod, snapshotNode(pl, tt.node))
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Errorf("Filter = %v %q, want %v %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestFilterDoesNotAllocate(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 8, "H100"))
	for _, pod := range []*v1.Pod{makePod("w", whole("2")), makePod("s", percent("30"))} {
		cs, _ := preFilter(t, pl, pod)
		ni := nodeInfo("a")
		if n := testing.AllocsPerRun(100, func() { pl.Filter(context.Background(), cs, pod, ni) }); n != 0 {
			t.Errorf("Filter(%s) allocates %v times", pod.Name, n)
		}
	}
}

func TestScore(t *testing.T) {
	for _, tt := range []struct {
		strategy config.ScoringStrategyType
		want     string
	}{{config.ScoringStrategyBinpack, "busy"}, {config.ScoringStrategySpread, "idle"}} {
		t.Run(string(tt.strategy), func(t *testing.T) {
			pl := testPlugin(t, tt.strategy, gpuNode("busy", 4, "H100"), gpuNode("idle", 4, "H100"))
			pl.store.UpsertPod(makePod("x", onNode("busy"), percent("50"),
				annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":50}]}`, uuid("busy", 0)))))
			pod := makePod("p", percent("30"))
			cs, _ := preFilter(t, pl, pod)
			if st := pl.PreScore(context.Background(), cs, pod, nil); !st.IsSuccess() {
				t.Fatal(st)
			}
			var scores fwk.NodeScoreList
			for _, n := range []string{"busy", "idle"} {
				s, st := pl.Score(context.Background(), cs, pod, nodeInfo(n))
				if !st.IsSuccess() {
					t.Fatal(st)
				}
				scores = append(scores, fwk.NodeScore{Name: n, Score: s})
			}
			pl.NormalizeScore(context.Background(), cs, pod, scores)
			best := scores[0]
			for _, s := range scores {
				if s.Score > best.Score {
					best = s
				}
			}
			if best.Name != tt.want || best.Score != fwk.MaxNodeScore {
				t.Errorf("scores %v; want %s on top with %d", scores, tt.want, fwk.MaxNodeScore)
			}
		})
	}
}

// TestScoreTakesFilterResultOnlyWhenCurrent checks the hand-over from
// Filter to Score (gpucache.Slot.fit): Score must rate the node as it is, not
// as Filter saw it, and never with another cycle's request.
func TestScoreTakesFilterResultOnlyWhenCurrent(t *testing.T) {
	ctx := context.Background()
	for _, strategy := range []config.ScoringStrategyType{config.ScoringStrategyBinpack, config.ScoringStrategyFragmentation} {
		t.Run(string(strategy), func(t *testing.T) {
			pl := testPlugin(t, strategy, gpuNode("a", 4, "H100"))
			// fresh is Score in a cycle of its own that ran no Filter.
			fresh := func(pod *v1.Pod) int64 {
				cs, _ := preFilter(t, pl, pod)
				s, st := pl.Score(ctx, cs, pod, nodeInfo("a"))
				if !st.IsSuccess() {
					t.Fatal(st)
				}
				return s
			}
			share := makePod("share", percent("30"))
			cs, _ := preFilter(t, pl, share)
			if st := pl.Filter(ctx, cs, share, nodeInfo("a")); !st.IsSuccess() {
				t.Fatal(st)
			}
			if s, _ := pl.Score(ctx, cs, share, nodeInfo("a")); s != fresh(share) {
				t.Errorf("Score after Filter = %d, without Filter %d", s, fresh(share))
			}

			// The node changes between Filter and Score.
			cs, _ = preFilter(t, pl, share)
			if st := pl.Filter(ctx, cs, share, nodeInfo("a")); !st.IsSuccess() {
				t.Fatal(st)
			}
			before, _ := pl.Score(ctx, cs, share, nodeInfo("a"))
			pl.store.UpsertPod(makePod("x", onNode("a"), percent("50"),
				annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":50}]}`, uuid("a", 2)))))
			after, _ := pl.Score(ctx, cs, share, nodeInfo("a"))
			if want := fresh(share); after != want {
				t.Errorf("Score after the node changed = %d, want %d", after, want)
			}
			if strategy == config.ScoringStrategyBinpack && after == before {
				t.Errorf("binpack Score %d did not change when a share landed on the node", after)
			}

			// Reserve takes the devices as they are, not as Filter saw them.
			one := makePod("one", whole("1"))
			cs, _ = preFilter(t, pl, one)
			if st := pl.Filter(ctx, cs, one, nodeInfo("a")); !st.IsSuccess() {
				t.Fatal(st)
			}
			filtered, _ := readState(cs)
			fit, ok := pl.cache.Slot("a").Recall(filtered.cycle)
			if !ok {
				t.Fatal("Filter left no memo for Reserve")
			}
			memo := fit.Placement.Whole
			pl.store.UpsertPod(makePod("y", onNode("a"), whole("1"),
				annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, uuid("a", bits.TrailingZeros64(memo))))))
			if st := pl.Reserve(ctx, cs, one, "a"); !st.IsSuccess() {
				t.Fatalf("Reserve after the node changed: %v", st)
			}
			if got := filtered.chosen["main"][0].UUID; got == uuid("a", bits.TrailingZeros64(memo)) {
				t.Errorf("Reserve took %s, which pod y holds since Filter", got)
			}

			// A later cycle that skips Filter does not take this one's result.
			two := makePod("two", whole("2"))
			cs, _ = preFilter(t, pl, share)
			pl.Filter(ctx, cs, share, nodeInfo("a"))
			cs2, _ := preFilter(t, pl, two)
			if s, _ := pl.Score(ctx, cs2, two, nodeInfo("a")); s != fresh(two) {
				t.Errorf("Score of a later cycle = %d, want %d", s, fresh(two))
			}
		})
	}
}

func TestReserveUnreserve(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 2, "H100"))
	ctx := context.Background()
	reserve := func(pod *v1.Pod) (fwk.CycleState, *fwk.Status) {
		cs, st := preFilter(t, pl, pod)
		if !st.IsSuccess() {
			t.Fatal(st)
		}
		return cs, pl.Reserve(ctx, cs, pod, "a")
	}
	p1 := makePod("p1", percent("60"))
	cs1, st := reserve(p1)
	if !st.IsSuccess() {
		t.Fatalf("Reserve p1: %v", st)
	}
	s1, _ := readState(cs1)
	if got := s1.chosen.String(); got != fmt.Sprintf(`{"main":[{"uuid":%q,"percent":60}]}`, uuid("a", 0)) {
		t.Errorf("p1 assignment %s", got)
	}
	// A second 60% share cannot go on the same GPU.
	p2 := makePod("p2", percent("60"))
	cs2, st := reserve(p2)
	s2, _ := readState(cs2)
	if !st.IsSuccess() || s2.chosen["main"][0].UUID != uuid("a", 1) {
		t.Fatalf("Reserve p2: %v %v", st, s2.chosen)
	}
	if st := pl.Filter(ctx, cs2, makePod("p3", whole("1")), snapshotNode(pl, "a")); st.IsSuccess() {
		t.Error("no whole GPU should be free")
	}
	pl.Unreserve(ctx, cs1, p1, "a")
	pl.Unreserve(ctx, cs1, p1, "a") // idempotent
	if used := pl.store.State("a").Used; used[0] != 0 || used[1] != 60 {
		t.Errorf("after Unreserve used = %v, want [0 60]", used)
	}
	// Non-GPU pods pass Reserve untouched.
	if st := pl.Reserve(ctx, framework.NewCycleState(), makePod("cpu"), "a"); !st.IsSuccess() {
		t.Error(st)
	}
}

// TestConcurrentReserveNeverDoubleBooks races many Reserves for one node
// whose capacity fits only some of them.
// TestConcurrentReserveNeverDoubleBooks races Reserves on one node. A
// Reserve whose placement went stale while another assumed may fail (the
// scheduler retries the pod); none may overbook a GPU, and a failed one
// must leave nothing behind, so retrying the losers one by one fills the
// node exactly.
func TestConcurrentReserveNeverDoubleBooks(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 4, "H100"))
	reserve := func(pod *v1.Pod) bool {
		cs := framework.NewCycleState()
		if _, st := pl.PreFilter(context.Background(), cs, pod, nil); !st.IsSuccess() {
			return false
		}
		return pl.Reserve(context.Background(), cs, pod, "a").IsSuccess()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lost []*v1.Pod
	placed := 0
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			pod := makePod(fmt.Sprintf("p%d", i), percent("60"))
			ok := reserve(pod)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				placed++
			} else {
				lost = append(lost, pod)
			}
		}(i)
	}
	wg.Wait()
	if placed > 4 {
		t.Errorf("placed %d pods of 60%% on 4 GPUs at once", placed)
	}
	for _, pod := range lost {
		if reserve(pod) {
			placed++
		}
	}
	if placed != 4 {
		t.Errorf("placed %d pods of 60%% on 4 GPUs after retries, want 4", placed)
	}
	for i, u := range pl.store.State("a").Used {
		if u > 100 {
			t.Errorf("gpu %d at %d%%", i, u)
		}
	}
}

func TestCacheFromPods(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 2, "H100"))
	c := pl.store
	ann := func(u string, pct int) podOpt {
		return annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":%d}]}`, u, pct))
	}
	bound := makePod("bound", onNode("a"), percent("40"), ann(uuid("a", 0), 40))
	c.UpsertPod(bound)
	c.UpsertPod(bound) // repeated events change nothing
	if u := c.State("a").Used; u[0] != 40 {
		t.Fatalf("used %v", u)
	}
	done := bound.DeepCopy()
	done.Status.Phase = v1.PodSucceeded
	c.UpsertPod(done)
	if u := c.State("a").Used; u[0] != 0 {
		t.Errorf("finished pod still holds %v", u)
	}

	// An assumed pod survives informer events that show it not yet bound.
	pod := makePod("assumed", percent("30"))
	a := assignment.Assignment{"main": {{UUID: uuid("a", 1), Percent: 30}}}
	if err := c.Assume(pod, "a", a); err != nil {
		t.Fatal(err)
	}
	c.UpsertPod(makePod("assumed", percent("30"), ann(uuid("a", 1), 30)))
	if u := c.State("a").Used; u[1] != 30 {
		t.Errorf("assumed pod dropped: %v", u)
	}
	c.UpsertPod(makePod("assumed", percent("30"), ann(uuid("a", 1), 30), onNode("a")))
	c.Forget(pod.UID) // confirmed pods are not forgotten by Unreserve
	if u := c.State("a").Used; u[1] != 30 {
		t.Errorf("confirmed pod dropped: %v", u)
	}
	if _, ok := c.RemovePod(pod.UID); !ok {
		t.Error("removePod found nothing")
	}

	// An assignment that does not match the request is not trusted: the
	// pod counts as what it asks for.
	c.UpsertPod(makePod("mismatch", onNode("a"), whole("2"), ann(uuid("a", 0), 100)))
	if st := c.State("a"); st.Unknown != 0 || st.Used[0] != 100 || st.Used[1] != 100 {
		t.Errorf("mismatched assignment: want the 2 GPUs asked for counted, got %+v", st)
	}
	c.RemovePod("uid-mismatch")
	// A pod of invalid request cannot be accounted: the node counts as
	// full.
	c.UpsertPod(makePod("invalid", onNode("a"), percent("150"), ann(uuid("a", 0), 100)))
	if st := c.State("a"); st.Unknown != 1 {
		t.Errorf("pod of invalid request not counted as unknown: %+v", st)
	}
	c.RemovePod("uid-invalid")
	if st := c.State("a"); st.Unknown != 0 || st.Used[0] != 0 || st.Used[1] != 0 {
		t.Errorf("after removals: %+v", st)
	}
	// Forged annotations on a pod that asks for no GPU hold nothing.
	for _, v := range []string{"{broken", fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100},{"uuid":%q,"percent":100}]}`, uuid("a", 0), uuid("a", 1))} {
		c.UpsertPod(makePod("no-gpu", onNode("a"), annotate(assignment.Annotation, v)))
		if st := c.State("a"); st.Unknown != 0 || st.Used[0] != 0 || st.Used[1] != 0 {
			t.Errorf("pod without GPU request and annotation %s holds %+v", v, st)
		}
	}
	// Entries for containers that ask for nothing are ignored.
	c.UpsertPod(makePod("extra", onNode("a"), percent("10"), annotate(assignment.Annotation,
		fmt.Sprintf(`{"main":[{"uuid":%q,"percent":10}],"ghost":[{"uuid":%q,"percent":100}]}`, uuid("a", 0), uuid("a", 1)))))
	if st := c.State("a"); st.Unknown != 0 || st.Used[0] != 10 || st.Used[1] != 0 {
		t.Errorf("extra container entries counted: %+v", st)
	}
	c.RemovePod("uid-extra")
	// A GPU that vanished from the inventory frees nothing and breaks nothing.
	c.UpsertPod(makePod("ghost", onNode("a"), percent("20"), ann("GPU-gone", 20)))
	if u := c.State("a").Used; u[0] != 0 || u[1] != 0 {
		t.Errorf("ghost GPU counted: %v", u)
	}
}

func TestCacheIgnoresOlderGPUNode(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack)
	newer := gpuNode("a", 4, "H100")
	newer.ResourceVersion = "20"
	older := gpuNode("a", 2, "H100")
	older.ResourceVersion = "10"
	pl.store.SetGPUNode(newer)
	pl.store.SetGPUNode(older)
	if n := pl.store.State("a").Inv.Len(); n != 4 {
		t.Errorf("older GPUNode applied over newer: %d gpus", n)
	}
	if pl.cache.LargestNode() != 4 {
		t.Errorf("largest = %d", pl.cache.LargestNode())
	}
	pl.store.DeleteGPUNode("a")
	if pl.store.State("a") != nil || pl.cache.LargestNode() != 0 {
		t.Error("deleted GPUNode still known")
	}
}

func TestQueueingHints(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 1, "H100"))
	logger := klog.Background()
	pod := makePod("pending", percent("50"))
	preFilter(t, pl, pod) // records the cache generation this attempt saw

	old := gpuNode("a", 1, "H100")
	hb := old.DeepCopy()
	hb.ResourceVersion = "2"
	t2 := metav1.NewTime(now)
	hb.Status.HeartbeatTime = &t2
	if h, _ := pl.afterGPUNodeChange(logger, pod, old, hb); h != fwk.QueueSkip {
		t.Errorf("heartbeat-only update: %v", h)
	}
	grown := gpuNode("a", 2, "H100")
	grown.ResourceVersion = "3"
	if h, _ := pl.afterGPUNodeChange(logger, pod, hb, grown); h != fwk.Queue {
		t.Errorf("new GPU: %v", h)
	}
	if pl.store.State("a").Inv.Len() != 1 {
		t.Error("a hint changed the cache")
	}
	// The cache counts a node stale; any new heartbeat may bring it back,
	// whatever the node's clock stamped on it.
	staleNode := grown.DeepCopy()
	long := metav1.NewTime(now.Add(-time.Hour))
	staleNode.Status.HeartbeatTime = &long
	stalePl := testPlugin(t, config.ScoringStrategyBinpack, staleNode)
	preFilter(t, stalePl, pod)
	beat := staleNode.DeepCopy()
	beat.ResourceVersion = "4"
	later := metav1.NewTime(now.Add(-time.Hour + time.Second))
	beat.Status.HeartbeatTime = &later
	if h, _ := stalePl.afterGPUNodeChange(logger, pod, staleNode, beat); h != fwk.Queue {
		t.Errorf("stale to fresh: %v", h)
	}

	holder := makePod("holder", onNode("a"), percent("60"),
		annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":60}]}`, uuid("a", 0))))
	pl.store.UpsertPod(holder)
	if h, _ := pl.afterPodDelete(logger, pod, holder, nil); h != fwk.Queue {
		t.Errorf("gpu pod deleted: %v", h)
	}
	preFilter(t, pl, pod)
	if h, _ := pl.afterPodDelete(logger, pod, makePod("cpu", onNode("a")), nil); h != fwk.QueueSkip {
		t.Errorf("cpu pod deleted: %v", h)
	}
	if h, _ := pl.afterPodDelete(logger, pod, makePod("foreign", onNode("a"), whole("1")), nil); h != fwk.Queue {
		t.Errorf("gpu pod of another scheduler, without an assignment, deleted: %v", h)
	}
	// Once the cache moves on, a pod judged on the older state is queued
	// even by an event that says nothing new.
	pl.store.RemovePod(holder.UID)
	if h, _ := pl.afterPodDelete(logger, pod, makePod("cpu", onNode("a")), nil); h != fwk.Queue {
		t.Errorf("cache changed since the attempt: %v", h)
	}
	// A pod whose request is invalid is never retried on events.
	bad := makePod("bad", percent("150"))
	preFilter(t, pl, bad)
	if h, _ := pl.afterGPUNodeChange(logger, bad, nil, grown); h != fwk.QueueSkip {
		t.Errorf("invalid pod queued: %v", h)
	}
}

// TestWaitingPodsActivatedOnChange checks that a pod whose last attempt saw
// an older cache is handed to the activator once the cache changes, even
// when no scheduler event follows (the cache lagged behind the event).
func TestWaitingPodsActivatedOnChange(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 1, "H100"))
	holder := makePod("holder", onNode("a"), percent("70"),
		annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":70}]}`, uuid("a", 0))))
	pl.store.UpsertPod(holder)
	pod := makePod("waiter", percent("50"))
	cs, _ := preFilter(t, pl, pod)
	if st := pl.Filter(context.Background(), cs, pod, snapshotNode(pl, "a")); st.IsSuccess() {
		t.Fatal("waiter should not fit yet")
	}
	if got := pl.waiting.stale(pl.cache.Generation()); len(got) != 0 {
		t.Fatalf("nothing changed, yet %v are stale", got)
	}
	if !notifies(pl, func() { pl.store.RemovePod(holder.UID) }) {
		t.Fatal("freeing a share did not notify")
	}
	got := pl.waiting.stale(pl.cache.Generation())
	if got["default/waiter"] == nil {
		t.Fatalf("waiter not activated: %v", got)
	}
	if again := pl.waiting.stale(pl.cache.Generation()); len(again) != 0 {
		t.Errorf("activated twice: %v", again)
	}
}

// notifies runs act and reports whether it woke the activation loop.
func notifies(pl *TesseraGPU, act func()) bool {
	select { // drain earlier notifications
	case <-pl.waiting.kick:
	default:
	}
	act()
	select {
	case <-pl.waiting.kick:
		return true
	default:
		return false
	}
}

func TestMetrics(t *testing.T) {
	registerMetrics()
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("m", 2, "H100"))
	pod := makePod("p", percent("40"))
	cs, _ := preFilter(t, pl, pod)
	if st := pl.Reserve(context.Background(), cs, pod, "m"); !st.IsSuccess() {
		t.Fatal(st)
	}
	preFilter(t, pl, makePod("bad", percent("150")))
	ctx, cancel := context.WithCancel(context.Background())
	ic := &inventoryCollector{}
	ic.track(ctx, pl.store)
	want := `
# HELP tessera_scheduler_gpu_nodes [ALPHA] Nodes with a GPU inventory, by whether it is trusted: fresh, stale (heartbeat older than inventoryStaleness), or held (pods hold GPUs the cache cannot pin, so none is offered).
# TYPE tessera_scheduler_gpu_nodes gauge
tessera_scheduler_gpu_nodes{inventory="fresh"} 1
tessera_scheduler_gpu_nodes{inventory="held"} 0
tessera_scheduler_gpu_nodes{inventory="stale"} 0
# HELP tessera_scheduler_gpus [ALPHA] GPUs by model and state: free (nothing held), partial (shares held), full, unhealthy.
# TYPE tessera_scheduler_gpus gauge
tessera_scheduler_gpus{model="H100",state="free"} 1
tessera_scheduler_gpus{model="H100",state="full"} 0
tessera_scheduler_gpus{model="H100",state="partial"} 1
tessera_scheduler_gpus{model="H100",state="unhealthy"} 0
# HELP tessera_scheduler_gpus_allocated [ALPHA] GPUs' worth of capacity held by pods, by model, as the scheduler accounts it (a 40% share counts 0.4).
# TYPE tessera_scheduler_gpus_allocated gauge
tessera_scheduler_gpus_allocated{model="H100"} 0.4
# HELP tessera_scheduler_gpus_fragmented [ALPHA] GPUs' worth of free capacity on healthy, partly used GPUs, by model: capacity that shares can use but whole-GPU requests cannot.
# TYPE tessera_scheduler_gpus_fragmented gauge
tessera_scheduler_gpus_fragmented{model="H100"} 0.6
`
	if err := testutil.CustomCollectAndCompare(ic, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// A stopped plugin's cache is no longer reported.
	cancel()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ic.mu.Lock()
		n := len(ic.caches)
		ic.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the collector still reports the cache of a stopped plugin")
		}
	}
	if got := counter(t, placements.WithLabelValues("binpack", "share")); got < 1 {
		t.Errorf("placements_total = %v", got)
	}
	if got := counter(t, rejections.WithLabelValues("invalid gpu request")); got < 1 {
		t.Errorf("rejections_total = %v", got)
	}
}

func gauge(t *testing.T, m metrics.GaugeMetric) float64 {
	t.Helper()
	v, err := testutil.GetGaugeMetricValue(m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func counter(t *testing.T, m metrics.CounterMetric) float64 {
	t.Helper()
	v, err := testutil.GetCounterMetricValue(m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
