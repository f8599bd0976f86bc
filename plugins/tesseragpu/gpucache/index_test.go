package gpucache

import (
	"context"
	"fmt"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	internalcache "k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/internal/gputest"
)

// TestSlotOfFollowsTheSchedulerSnapshot drives the index through the
// changes the real scheduler cache and snapshot go through, and checks at
// each step that every NodeInfo the framework would hand Filter finds the
// slot its name would, holding the node's current state.
func TestSlotOfFollowsTheSchedulerSnapshot(t *testing.T) {
	// The scheduler cache's background loop reports its size at once, into
	// the scheduler's metrics, which must exist first.
	schedmetrics.Register()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := klog.Background()
	c := testCache(gputest.GPUNode("a", 4, "H100"), gputest.GPUNode("b", 4, "H100"), gputest.GPUNode("c", 4, "H100"))
	sched := internalcache.New(ctx, nil, false, false)
	snap := internalcache.NewEmptySnapshot()
	node := func(name, label string) *v1.Node {
		return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"l": label}}}
	}
	for _, n := range []string{"a", "b", "c", "cpu-only"} {
		sched.AddNode(logger, node(n, "1"))
	}
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
		c.IndexNodes(list)
		check(t, step, c, list)
		return c.byInfo.Load()
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
	if err := sched.AddPod(logger, gputest.Pod("q", gputest.OnNode("b"))); err != nil {
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
	// all of b's GPUs taken, b's slot must show them used.
	for i := 0; i < 4; i++ {
		p := gputest.Pod(fmt.Sprintf("b-%d", i), gputest.OnNode("b"), gputest.Whole("1"),
			gputest.Annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, gputest.UUID("b", i))))
		c.UpsertPod(p)
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
		if used := c.SlotOf(ni).State().Used; !slices.Equal(used, []int{100, 100, 100, 100}) {
			t.Errorf("b's state through the index after b filled up: used %v, want all", used)
		}
	}

	// A node replaced by another: a new list, a new index.
	if err := sched.RemoveNode(logger, node("c", "1")); err != nil {
		t.Fatal(err)
	}
	sched.AddNode(logger, node("d", "1"))
	c.SetGPUNode(gputest.GPUNode("d", 2, "A100"))
	second := cycle("node replaced")
	if second == first {
		t.Fatalf("node replaced: index kept, want it rebuilt")
	}

	// The cache's node map changes between cycles: a GPUNode deleted and
	// created again gives node a a new record, which the index built
	// before does not hold; lookups must not use it until it is rebuilt.
	old := c.record("a")
	c.DeleteGPUNode("a")
	c.SetGPUNode(gputest.GPUNode("a", 8, "H100"))
	if c.record("a") == old {
		t.Fatal("setup: node a kept its record")
	}
	list, _ = snap.NodeInfos().List()
	for _, ni := range list {
		if ni.Node().Name == "a" {
			if r := c.SlotOf(ni); r != c.Slot("a") {
				t.Errorf("after the node map changed, SlotOf(a) is the dropped record's")
			}
		}
	}
	if got := cycle("node map changed"); got == second {
		t.Errorf("node map changed: index kept, want it rebuilt")
	}

	// A pod group cycle clones every NodeInfo (StartMutations), and its
	// end restores the originals.
	before := c.byInfo.Load()
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
	c := testCache(gputest.GPUNode("a", 4, "H100"))
	ni := gputest.NodeInfo("a")
	list := []fwk.NodeInfo{ni, gputest.NodeInfo("cpu-only")}
	c.IndexNodes(list)
	for _, other := range []fwk.NodeInfo{ni.Snapshot(), gputest.NodeInfo("a")} {
		if r := c.SlotOf(other); r != c.Slot("a") {
			t.Errorf("SlotOf(a copy of a) = %p, want %p", r, c.Slot("a"))
		}
	}
	if r := c.SlotOf(list[1]); r != nil {
		t.Errorf("SlotOf(cpu-only) = %p, want nil", r)
	}
	if r := c.SlotOf(framework.NewNodeInfo()); r != nil {
		t.Errorf("SlotOf(a NodeInfo without a node) = %p, want nil", r)
	}
	// A list with a NodeInfo without a node is indexed without it.
	c.IndexNodes([]fwk.NodeInfo{framework.NewNodeInfo(), ni})
	if r := c.SlotOf(ni); r != c.Slot("a") {
		t.Errorf("SlotOf(a) = %p, want %p", r, c.Slot("a"))
	}
}

// check compares, for every NodeInfo of list, SlotOf with the lookup by
// name, and the state it holds with the node's current one.
func check(t *testing.T, step string, c *Cache, list []fwk.NodeInfo) {
	t.Helper()
	for _, ni := range list {
		name := ni.Node().Name
		got, want := c.SlotOf(ni), c.Slot(name)
		if got != want {
			t.Errorf("%s: SlotOf(%s) = %p, want %p", step, name, got, want)
		}
		if r := c.record(name); r != nil && got.State() != r.State() {
			t.Errorf("%s: the slot of %s does not hold its current state", step, name)
		}
	}
}

// TestSlotOfDoesNotAllocate: the lookup Filter and Score make for every
// node of every cycle allocates nothing, through the index or by name.
func TestSlotOfDoesNotAllocate(t *testing.T) {
	c := testCache(gputest.GPUNode("a", 8, "H100"))
	ni := gputest.NodeInfo("a")
	c.IndexNodes([]fwk.NodeInfo{ni})
	if _, ok := c.byInfo.Load().lookup(ni.Node()); !ok {
		t.Fatal("the index does not hold a")
	}
	stranger := gputest.NodeInfo("a")
	for name, x := range map[string]fwk.NodeInfo{"through the index": ni, "by name": stranger} {
		if n := testing.AllocsPerRun(100, func() { c.SlotOf(x) }); n != 0 {
			t.Errorf("SlotOf %s allocates %v times", name, n)
		}
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
		gns = append(gns, gputest.GPUNode(n, 4, "H100"))
		infos = append(infos, gputest.NodeInfo(n))
	}
	c := testCache(gns...)
	// Two lists of the same nodes: switching between them forces a
	// rebuild, which moves every record's slot.
	lists := [][]fwk.NodeInfo{infos, append([]fwk.NodeInfo(nil), infos...)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 400; i++ {
			n := names[i%len(names)]
			pod := gputest.Pod(fmt.Sprintf("p%d", i%8), gputest.OnNode(n), gputest.Whole("1"),
				gputest.Annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, gputest.UUID(n, i%4))))
			if i%3 == 2 {
				c.RemovePod(pod.UID)
				continue
			}
			c.UpsertPod(pod)
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			c.IndexNodes(lists[i%2])
			for _, ni := range infos {
				name := ni.Node().Name
				if got, want := c.SlotOf(ni).state.Load(), c.record(name).State(); got != want {
					t.Errorf("slot of %s holds a state that is not the node's current one", name)
				}
			}
			return
		default:
		}
		c.IndexNodes(lists[i%2])
		for _, ni := range infos {
			c.SlotOf(ni).State()
		}
	}
}

// TestIndexAtScale builds the index over 5,000 nodes, half of them with a
// GPU inventory, and checks that every member finds its own slot (or none,
// for the nodes without one), that objects outside the list are never
// taken for members, and that a list naming one node twice leaves the
// second object to the lookup by name.
func TestIndexAtScale(t *testing.T) {
	c := testCache()
	var list, strangers []fwk.NodeInfo
	for i := range 5000 {
		name := fmt.Sprintf("n%d", i)
		if i%2 == 0 {
			c.SetGPUNode(gputest.GPUNode(name, 1, "H100"))
		}
		list = append(list, gputest.NodeInfo(name))
		strangers = append(strangers, gputest.NodeInfo(name))
	}
	twin := gputest.NodeInfo("n0")
	list = append(list, twin)
	c.IndexNodes(list)
	x := c.byInfo.Load()
	if x == nil || x.gpuNodes != 2500 {
		t.Fatalf("index of %d GPU nodes, want 2500", x.gpuNodes)
	}
	for i, ni := range list[:5000] {
		sl, ok := x.lookup(ni.Node())
		if !ok {
			t.Fatalf("n%d is not in the index", i)
		}
		if want := c.Slot(ni.Node().Name); sl != want {
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
	if got, want := c.SlotOf(twin), c.Slot("n0"); got != want {
		t.Errorf("SlotOf(second n0) = %p, want n0's slot %p", got, want)
	}
}
