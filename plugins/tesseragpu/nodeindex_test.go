package tesseragpu

import (
	"context"
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	internalcache "k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/pkg/assignment"
)

// TestSlotOfFollowsTheSchedulerSnapshot drives the index through the
// changes the real scheduler cache and snapshot go through, and checks at
// each step that every NodeInfo the framework would hand Filter finds the
// slot its name would, and that Filter gives the verdict it would by name.
func TestSlotOfFollowsTheSchedulerSnapshot(t *testing.T) {
	// The scheduler cache's background loop reports its size at once, into
	// the scheduler's metrics, which must exist first.
	schedmetrics.Register()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := klog.Background()
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 4, "H100"), gpuNode("b", 4, "H100"), gpuNode("c", 4, "H100"))
	sched := internalcache.New(ctx, nil, false, false)
	snap := internalcache.NewEmptySnapshot()
	node := func(name, label string) *v1.Node {
		return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"l": label}}}
	}
	for _, n := range []string{"a", "b", "c", "cpu-only"} {
		sched.AddNode(logger, node(n, "1"))
	}
	pod := makePod("p", whole("1"))

	// cycle brings the snapshot up to date, unless a mutation session
	// holds it, runs PreFilter on its list, as the framework does, and
	// checks every node of it.
	mutating := false
	cycle := func(step string) *infoIndex {
		t.Helper()
		if !mutating {
			if err := sched.UpdateSnapshot(logger, snap); err != nil {
				t.Fatal(err)
			}
		}
		list, err := snap.NodeInfos().List()
		if err != nil {
			t.Fatal(err)
		}
		cs := framework.NewCycleState()
		if _, st := pl.PreFilter(ctx, cs, pod, list); !st.IsSuccess() {
			t.Fatalf("%s: PreFilter: %v", step, st)
		}
		check(t, step, pl, cs, pod, list)
		return pl.cache.byInfo.Load()
	}

	first := cycle("first cycle")
	if first == nil || first.gpuNodes != 3 {
		t.Fatalf("first cycle: index %+v, want one with the slots of a, b and c", first)
	}
	for _, name := range []string{"a", "b", "c", "cpu-only"} {
		if _, ok := first.lookup(mustGet(t, snap, name).Node()); !ok {
			t.Errorf("first cycle: index does not hold %s", name)
		}
	}

	// A pod bound: the snapshot updates the NodeInfo objects in place and
	// keeps its list, and the index stays.
	if err := sched.AddPod(logger, makePod("q", onNode("b"))); err != nil {
		t.Fatal(err)
	}
	if got := cycle("pod bound"); got != first {
		t.Errorf("pod bound: index rebuilt, want it kept")
	}
	// A node updated: its NodeInfo carries a new Node object, which the
	// index does not hold. The cycle finds a by name (check), and the
	// miss has the next PreFilter build an index that holds it.
	sched.UpdateNode(logger, node("a", "1"), node("a", "2"))
	if got := cycle("node updated"); got != first {
		t.Errorf("node updated: index rebuilt before any lookup missed")
	}
	if !first.missed.Load() {
		t.Errorf("node updated: the lookup of a's new Node object did not miss")
	}
	first = cycle("after node update")
	if first.missed.Load() {
		t.Errorf("after node update: the rebuilt index misses")
	}
	if _, ok := first.lookup(mustGet(t, snap, "a").Node()); !ok {
		t.Errorf("after node update: the index does not hold a's new Node object")
	}

	// States published after the index was built reach its slots: with
	// all of b's GPUs taken, Filter must reject b through the index.
	for i := 0; i < 4; i++ {
		p := makePod(fmt.Sprintf("b-%d", i), onNode("b"), whole("1"),
			annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, uuid("b", i))))
		pl.cache.upsertPod(p)
		if err := sched.AddPod(logger, p); err != nil {
			t.Fatal(err)
		}
	}
	if got := cycle("b full"); got != first {
		t.Errorf("b full: index rebuilt, want it kept")
	}
	list, _ := snap.NodeInfos().List()
	for _, ni := range list {
		if ni.Node().Name != "b" {
			continue
		}
		cs, _ := preFilter(t, pl, pod)
		if st := pl.Filter(ctx, cs, pod, ni); st.Code() != fwk.Unschedulable {
			t.Errorf("Filter(b) after b filled up = %v, want Unschedulable", st)
		}
	}

	// A node replaced by another: a new list, a new index.
	if err := sched.RemoveNode(logger, node("c", "1")); err != nil {
		t.Fatal(err)
	}
	sched.AddNode(logger, node("d", "1"))
	pl.cache.setGPUNode(gpuNode("d", 2, "A100"))
	second := cycle("node replaced")
	if second == first {
		t.Fatalf("node replaced: index kept, want it rebuilt")
	}

	// The cache's node map changes between cycles: a GPUNode deleted and
	// created again gives node a a new record, which the index built
	// before does not hold; lookups must not use it until it is rebuilt.
	old := pl.cache.record("a")
	pl.cache.deleteGPUNode("a")
	pl.cache.setGPUNode(gpuNode("a", 8, "H100"))
	if pl.cache.record("a") == old {
		t.Fatal("setup: node a kept its record")
	}
	list, _ = snap.NodeInfos().List()
	for _, ni := range list {
		if ni.Node().Name == "a" {
			if r := pl.cache.slotOf(ni); r != pl.cache.slot("a") {
				t.Errorf("after the node map changed, slotOf(a) is the dropped record's")
			}
		}
	}
	if got := cycle("node map changed"); got == second {
		t.Errorf("node map changed: index kept, want it rebuilt")
	}

	// A pod group cycle clones every NodeInfo (StartMutations), and its
	// end restores the originals.
	before := pl.cache.byInfo.Load()
	if err := snap.StartMutations(); err != nil {
		t.Fatal(err)
	}
	mutating = true
	during := cycle("mutation session")
	if during == before {
		t.Errorf("mutation session: index kept, want it rebuilt for the clones")
	}
	if err := snap.EndMutations(); err != nil {
		t.Fatal(err)
	}
	mutating = false
	if got := cycle("mutation session ended"); got == during {
		t.Errorf("mutation session ended: index kept, want it rebuilt for the originals")
	}
}

// TestSlotOfFallsBackToTheName covers NodeInfo objects the index never
// holds: clones with nominated pods, and objects of tests and tools.
func TestSlotOfFallsBackToTheName(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 4, "H100"))
	ni := nodeInfo("a")
	list := []fwk.NodeInfo{ni, nodeInfo("cpu-only")}
	pl.cache.indexInfos(list)
	for _, other := range []fwk.NodeInfo{ni.Snapshot(), nodeInfo("a")} {
		if r := pl.cache.slotOf(other); r != pl.cache.slot("a") {
			t.Errorf("slotOf(a copy of a) = %p, want %p", r, pl.cache.slot("a"))
		}
	}
	if r := pl.cache.slotOf(list[1]); r != nil {
		t.Errorf("slotOf(cpu-only) = %p, want nil", r)
	}
	if r := pl.cache.slotOf(framework.NewNodeInfo()); r != nil {
		t.Errorf("slotOf(a NodeInfo without a node) = %p, want nil", r)
	}
	// A list with a NodeInfo without a node is indexed without it.
	pl.cache.indexInfos([]fwk.NodeInfo{framework.NewNodeInfo(), ni})
	if r := pl.cache.slotOf(ni); r != pl.cache.slot("a") {
		t.Errorf("slotOf(a) = %p, want %p", r, pl.cache.slot("a"))
	}
}

// check compares, for every NodeInfo of list, slotOf with the lookup by
// name, and Filter with Filter on a NodeInfo the index does not hold.
func check(t *testing.T, step string, pl *TesseraGPU, cs fwk.CycleState, pod *v1.Pod, list []fwk.NodeInfo) {
	t.Helper()
	for _, ni := range list {
		name := ni.Node().Name
		if got, want := pl.cache.slotOf(ni), pl.cache.slot(name); got != want {
			t.Errorf("%s: slotOf(%s) = %p, want %p", step, name, got, want)
		}
		got := pl.Filter(context.Background(), cs, pod, ni)
		// The reference is a NodeInfo of a Node object the index cannot
		// hold, which marks the index as missed; the mark is put back so
		// that the steps see only the misses of the snapshot's objects.
		x := pl.cache.byInfo.Load()
		missed := x.missed.Load()
		want := pl.Filter(context.Background(), cs, pod, snapshotNode(pl, name))
		x.missed.Store(missed)
		if got.Code() != want.Code() || got.Message() != want.Message() {
			t.Errorf("%s: Filter(%s) = %v, want %v", step, name, got, want)
		}
	}
}

// TestFilterDoesNotAllocateThroughTheIndex is TestFilterDoesNotAllocate
// for a NodeInfo that the index holds, the common case in the scheduler.
func TestFilterDoesNotAllocateThroughTheIndex(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("a", 8, "H100"))
	ni := nodeInfo("a")
	pod := makePod("w", whole("2"))
	cs := framework.NewCycleState()
	if _, st := pl.PreFilter(context.Background(), cs, pod, []fwk.NodeInfo{ni}); !st.IsSuccess() {
		t.Fatalf("PreFilter: %v", st)
	}
	if pl.cache.byInfo.Load() == nil {
		t.Fatal("PreFilter built no index")
	}
	if n := testing.AllocsPerRun(100, func() { pl.Filter(context.Background(), cs, pod, ni) }); n != 0 {
		t.Errorf("Filter allocates %v times", n)
	}
}

func mustGet(t *testing.T, snap *internalcache.Snapshot, name string) fwk.NodeInfo {
	t.Helper()
	ni, err := snap.NodeInfos().Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return ni
}

// TestIndexRebuildsWhileStatesChange rebuilds the index over and over
// while the informer side publishes states, as happens when nodes come and
// go while pods bind, and checks that no published state is lost: at the
// end every slot the index hands out holds its node's current state. Run
// it with -race as well.
func TestIndexRebuildsWhileStatesChange(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	var gns []*v1alpha1.GPUNode
	var infos []fwk.NodeInfo
	for _, n := range names {
		gns = append(gns, gpuNode(n, 4, "H100"))
		infos = append(infos, nodeInfo(n))
	}
	pl := testPlugin(t, config.ScoringStrategyBinpack, gns...)
	// Two lists of the same nodes: switching between them forces a
	// rebuild, which moves every record's slot.
	lists := [][]fwk.NodeInfo{infos, append([]fwk.NodeInfo(nil), infos...)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 400; i++ {
			n := names[i%len(names)]
			pod := makePod(fmt.Sprintf("p%d", i%8), onNode(n), whole("1"),
				annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, uuid(n, i%4))))
			if i%3 == 2 {
				pl.cache.removePod(pod.UID)
				continue
			}
			pl.cache.upsertPod(pod)
		}
	}()
	pod := makePod("w", whole("1"))
	for i := 0; ; i++ {
		select {
		case <-done:
			pl.cache.indexInfos(lists[i%2])
			for _, ni := range infos {
				name := ni.Node().Name
				if got, want := pl.cache.slotOf(ni).state.Load(), pl.cache.record(name).current(); got != want {
					t.Errorf("slot of %s holds a state that is not the node's current one", name)
				}
			}
			return
		default:
		}
		cs := framework.NewCycleState()
		if _, st := pl.PreFilter(context.Background(), cs, pod, lists[i%2]); !st.IsSuccess() {
			t.Fatalf("PreFilter: %v", st)
		}
		for _, ni := range infos {
			pl.Filter(context.Background(), cs, pod, ni)
		}
	}
}

// TestIndexAtScale builds the index over 5,000 nodes, half of them with a
// GPU inventory, and checks that every member finds its own slot (or none,
// for the nodes without one), that objects outside the list are never
// taken for members, and that a list naming one node twice leaves the
// second object to the lookup by name.
func TestIndexAtScale(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack)
	var list, strangers []fwk.NodeInfo
	for i := range 5000 {
		name := fmt.Sprintf("n%d", i)
		if i%2 == 0 {
			pl.cache.setGPUNode(gpuNode(name, 1, "H100"))
		}
		list = append(list, nodeInfo(name))
		strangers = append(strangers, nodeInfo(name))
	}
	twin := nodeInfo("n0")
	list = append(list, twin)
	pl.cache.indexInfos(list)
	x := pl.cache.byInfo.Load()
	if x == nil || x.gpuNodes != 2500 {
		t.Fatalf("index of %d GPU nodes, want 2500", x.gpuNodes)
	}
	for i, ni := range list[:5000] {
		sl, ok := x.lookup(ni.Node())
		if !ok {
			t.Fatalf("n%d is not in the index", i)
		}
		if want := pl.cache.slot(ni.Node().Name); sl != want {
			t.Fatalf("n%d: slot %p, want %p", i, sl, want)
		}
		if i%2 == 0 && sl != &x.slots[i] {
			t.Fatalf("n%d: slot is not at its list position", i)
		}
	}
	for i, ni := range strangers {
		if _, ok := x.lookup(ni.Node()); ok {
			t.Fatalf("a copy of n%d is taken for the indexed object", i)
		}
	}
	if _, ok := x.lookup(twin.Node()); ok {
		t.Error("the second object of n0 is in the index")
	}
	if got, want := pl.cache.slotOf(twin), pl.cache.slot("n0"); got != want {
		t.Errorf("slotOf(second n0) = %p, want n0's slot %p", got, want)
	}
}
