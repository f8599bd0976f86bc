package gpucache

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/internal/gputest"
)

// TestNodesWithRoomFollowsChurn binds, rewrites and removes pods at
// random, adds and deletes inventories, and checks after every step that
// NodesWithRoom names exactly the nodes whose state has room, for gputest.Whole,
// share and mixed requests, and that its limit is honoured.
func TestNodesWithRoomFollowsChurn(t *testing.T) {
	const nodes, gpus = 12, 4
	var gns []string
	c := testCache()
	for i := range nodes {
		name := fmt.Sprintf("n%d", i)
		gns = append(gns, name)
		c.SetGPUNode(gputest.GPUNode(name, gpus, "H100"))
	}
	c.SetGPUNode(gputest.GPUNode("small", 1, "T4"))
	gns = append(gns, "small")
	rng := rand.New(rand.NewPCG(1, 2))
	requests := [][2]int{{0, 1}, {1, 0}, {2, 0}, {4, 0}, {0, 30}, {0, 99}, {1, 50}, {5, 0}}
	check := func(step string) {
		t.Helper()
		for _, rq := range requests {
			want := sets.New[string]()
			for _, n := range gns {
				if c.Slot(n).State().HasRoom(rq[0], rq[1]) {
					want.Insert(n)
				}
			}
			got, ok := c.NodesWithRoom(rq[0], rq[1], len(gns))
			if !ok {
				t.Fatalf("%s: NodesWithRoom%v refused under a limit of every node", step, rq)
			}
			if diff := cmp.Diff(sets.List(want), sets.List(got)); diff != "" {
				t.Fatalf("%s: NodesWithRoom%v (-want +got):\n%s", step, rq, diff)
			}
			if want.Len() > 0 {
				if _, ok := c.NodesWithRoom(rq[0], rq[1], want.Len()-1); ok {
					t.Fatalf("%s: NodesWithRoom%v answered under a limit below its %d nodes", step, rq, want.Len())
				}
			}
		}
	}
	check("empty")
	for step := range 400 {
		node := gns[rng.IntN(len(gns))]
		pod := fmt.Sprintf("p%d", rng.IntN(40))
		switch op := rng.IntN(10); {
		case op < 5:
			pct := []int{100, 30, 50, 70}[rng.IntN(4)]
			opt := gputest.Percent(fmt.Sprint(pct))
			if pct == 100 {
				opt = gputest.Whole("1")
			}
			g := rng.IntN(gpus)
			if node == "small" {
				g = 0
			}
			c.UpsertPod(gputest.Pod(pod, gputest.OnNode(node), opt,
				gputest.Annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":%d}]}`, gputest.UUID(node, g), pct))))
		case op < 8:
			c.RemovePod(gputest.Pod(pod).UID)
		case op < 9:
			a := assignment.Assignment{"main": {{UUID: gputest.UUID(node, 0), Percent: 100}}}
			p := gputest.Pod(pod, gputest.Whole("1"))
			if c.Assume(p, node, a) == nil && rng.IntN(2) == 0 {
				c.Forget(p.UID)
			}
		default:
			gn := gputest.GPUNode(node, gpus, "H100")
			if node == "small" {
				gn = gputest.GPUNode(node, 1, "T4")
			}
			gn.ResourceVersion = fmt.Sprint(step + 2)
			if rng.IntN(2) == 0 {
				c.DeleteGPUNode(node)
			} else {
				c.SetGPUNode(gn)
			}
		}
		check(fmt.Sprintf("step %d", step))
	}
}

// TestLowestHolderPriority follows the pods holding GPUs through binding,
// assuming, forgetting, rewriting and removal.
func TestLowestHolderPriority(t *testing.T) {
	c := testCache(gputest.GPUNode("a", 4, "H100"))
	prio := func(p int32) gputest.PodOpt { return func(pod *v1.Pod) { pod.Spec.Priority = &p } }
	on := func(name string, gpu int, p int32) *v1.Pod {
		return gputest.Pod(name, gputest.OnNode("a"), gputest.Whole("1"), prio(p),
			gputest.Annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, gputest.UUID("a", gpu))))
	}
	want := func(step string, p int32, any bool) {
		t.Helper()
		if got, ok := c.LowestHolderPriority(); got != p || ok != any {
			t.Errorf("%s: LowestHolderPriority = %d, %t; want %d, %t", step, got, ok, p, any)
		}
	}
	want("empty", 0, false)
	c.UpsertPod(on("high", 0, 100))
	want("one pod", 100, true)
	c.UpsertPod(on("low", 1, -5))
	want("a lower one", -5, true)
	c.UpsertPod(on("low", 2, -5)) // rewritten: counted once
	c.RemovePod("uid-low")
	want("the lower one gone", 100, true)
	assumed := gputest.Pod("mid", gputest.Whole("1"), prio(7))
	if err := c.Assume(assumed, "a", assignment.Assignment{"main": {{UUID: gputest.UUID("a", 3), Percent: 100}}}); err != nil {
		t.Fatal(err)
	}
	want("assumed", 7, true)
	c.Forget(assumed.UID)
	want("forgotten", 100, true)
	c.UpsertPod(gputest.Pod("cpu", gputest.OnNode("a"), prio(-100)))
	want("a pod without GPUs does not count", 100, true)
	c.RemovePod("uid-high")
	want("none", 0, false)
}
