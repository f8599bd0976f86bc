package gpucache

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/internal/gputest"
)

// recount is the inventory summary worked out from scratch, by walking
// every node's current state: what the cache's running tally must equal.
func recount(c *Cache) Summary {
	sum := Summary{Models: map[string]*ModelSummary{}}
	for _, r := range *c.nodes.Load() {
		sum.count(r.State(), r.stale.Load(), 1)
	}
	return sum
}

// TestTallyFollowsEveryChange drives the cache through every kind of change
// that republishes a node (inventories added, changed, gone stale, deleted
// and back; pods bound, assumed, forgotten, rewritten, finished, and of
// unknown assignment) and checks after each that the tally the metrics
// report equals a recount over all nodes.
func TestTallyFollowsEveryChange(t *testing.T) {
	c := testCache()
	clock := gputest.Now
	c.Now = func() time.Time { return clock }
	check := func(step string) {
		t.Helper()
		got, want := c.Summary(), recount(c)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: tally %s, recount %s", step, show(got), show(want))
		}
	}
	bound := func(name, node string, gpu int, pct int) {
		pod := gputest.Pod(name, gputest.OnNode(node), gputest.Percent(fmt.Sprint(pct)),
			gputest.Annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":%d}]}`, gputest.UUID(node, gpu), pct)))
		if pct == 100 {
			pod = gputest.Pod(name, gputest.OnNode(node), gputest.Whole("1"),
				gputest.Annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, gputest.UUID(node, gpu))))
		}
		c.UpsertPod(pod)
	}

	check("empty")
	c.SetGPUNode(gputest.GPUNode("a", 4, "H100"))
	c.SetGPUNode(gputest.GPUNode("b", 2, "A100"))
	check("two inventories")
	bound("p1", "a", 0, 100)
	bound("p2", "a", 1, 40)
	bound("p3", "b", 0, 30)
	check("pods bound")
	bound("p2", "a", 2, 40) // rewritten: GPU 1 stays held for the grace
	check("assignment rewritten")
	clock = clock.Add(time.Minute)
	c.release("uid-p2")
	check("grace over")
	c.UpsertPod(gputest.Pod("odd", gputest.OnNode("b"), gputest.Whole("1"), gputest.Annotate(assignment.Annotation, "{not json")))
	check("pod of unknown assignment")
	c.RemovePod("uid-odd")
	check("unknown pod gone")

	pod := gputest.Pod("r", gputest.Whole("1"))
	if err := c.Assume(pod, "b", assignment.Assignment{"main": {{UUID: gputest.UUID("b", 1), Percent: 100}}}); err != nil {
		t.Fatal(err)
	}
	check("assumed")
	c.Forget(pod.UID)
	check("forgotten")

	sick := gputest.GPUNode("a", 4, "H100")
	sick.ResourceVersion = "2"
	sick.Status.GPUs[3].Health.Healthy = false
	c.SetGPUNode(sick)
	check("device unhealthy")
	mixed := gputest.GPUNode("b", 2, "A100")
	mixed.ResourceVersion = "2"
	mixed.Status.GPUs[1].Model = "L4"
	c.SetGPUNode(mixed)
	check("model changed")

	// The heartbeat of a goes stale (the timer's check) and comes back.
	clock = clock.Add(time.Hour)
	c.checkStale("a")
	if got := c.Summary(); got.Stale != 1 {
		t.Fatalf("stale nodes %d, want 1", got.Stale)
	}
	check("stale")
	fresh := gputest.GPUNode("a", 4, "H100")
	fresh.ResourceVersion = "3"
	hb := metav1.NewTime(clock)
	fresh.Status.HeartbeatTime = &hb
	c.SetGPUNode(fresh)
	check("fresh again")

	c.DeleteGPUNode("a") // p1 and p2 keep the record
	check("inventory deleted under pods")
	fresh.ResourceVersion = "4"
	c.SetGPUNode(fresh)
	check("inventory back")
	c.UpsertPod(gputest.Pod("p1", gputest.OnNode("a"), gputest.Whole("1")))
	c.RemovePod("uid-p2")
	c.RemovePod("uid-p3")
	check("pods gone")
	c.DeleteGPUNode("a")
	c.DeleteGPUNode("b")
	check("all deleted")
	if got := c.Summary(); len(got.Models) != 0 || got.Fresh+got.Stale+got.Held != 0 {
		t.Errorf("empty cache reports %s", show(got))
	}
}

func show(s Summary) string {
	out := fmt.Sprintf("nodes fresh %d stale %d held %d;", s.Fresh, s.Stale, s.Held)
	for m, ms := range s.Models {
		out += fmt.Sprintf(" %s %v %d units;", m, ms.GPUs, ms.Units)
	}
	return out
}

// BenchmarkInventoryScrape compares what one scrape of the inventory
// metrics costs on 5,000 nodes of 8 GPUs: a copy of the running tally
// (what the collector does) against the walk over every node that the
// collector made before (recount).
func BenchmarkInventoryScrape(b *testing.B) {
	c := testCache()
	for i := range 5000 {
		name := fmt.Sprintf("n%d", i)
		c.SetGPUNode(gputest.GPUNode(name, 8, []string{"H100", "A100"}[i%2]))
		c.UpsertPod(gputest.Pod(name+"-p", gputest.OnNode(name), gputest.Whole("1"),
			gputest.Annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, gputest.UUID(name, i%8)))))
	}
	b.Run("tally", func(b *testing.B) {
		for b.Loop() {
			_ = c.Summary()
		}
	})
	b.Run("recount", func(b *testing.B) {
		for b.Loop() {
			_ = recount(c)
		}
	})
}
