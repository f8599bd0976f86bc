package gpucache

import (
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/internal/gputest"
)

// TestCacheRewriteKeepsDeletedVersion checks that a pod whose assignment is
// rewritten on a node whose GPUNode was deleted keeps the node's record, and
// with it the deleted version: a late event for an older GPUNode must not
// bring the inventory back.
func TestCacheRewriteKeepsDeletedVersion(t *testing.T) {
	c := testCache()
	gn := gputest.GPUNode("a", 2, "H100")
	gn.ResourceVersion = "20"
	c.SetGPUNode(gn)
	ann := func(gpu int) gputest.PodOpt {
		return gputest.Annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, gputest.UUID("a", gpu)))
	}
	c.UpsertPod(gputest.Pod("p", gputest.OnNode("a"), gputest.Whole("1"), ann(0)))
	c.DeleteGPUNode("a")
	before := (*c.nodes.Load())["a"]
	c.UpsertPod(gputest.Pod("p", gputest.OnNode("a"), gputest.Whole("1"), ann(1)))
	if r := (*c.nodes.Load())["a"]; r != before {
		t.Fatal("rewriting the only pod's assignment replaced the node record")
	}
	late := gputest.GPUNode("a", 2, "H100")
	late.ResourceVersion = "10"
	c.SetGPUNode(late)
	if st := c.State("a"); st.Inv != nil {
		t.Errorf("a late event for an older GPUNode brought the inventory back (%d gpus)", st.Inv.Len())
	}
	if p := c.pods["uid-p"]; p == nil || len(p.Use) != 1 || p.Use[gputest.UUID("a", 1)] != 100 {
		t.Errorf("rewritten pod record %+v", p)
	}
	newer := gputest.GPUNode("a", 2, "H100")
	newer.ResourceVersion = "30"
	c.SetGPUNode(newer)
	if st := c.State("a"); st.Inv == nil || st.Used[1] != 100 {
		t.Errorf("newer GPUNode not applied with the pod's use: %+v", st)
	}
}

// TestRewrittenAssignmentHoldsOldDevices checks the grace period: when two
// pods' assignments are rewritten one at a time (an exchange recorded by the
// device plugin), no GPU looks free in between.
func TestRewrittenAssignmentHoldsOldDevices(t *testing.T) {
	c := testCache(gputest.GPUNode("a", 2, "H100"))
	on := func(name string, gpu int) *v1.Pod {
		return gputest.Pod(name, gputest.OnNode("a"), gputest.Whole("1"),
			gputest.Annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, gputest.UUID("a", gpu))))
	}
	c.UpsertPod(on("x", 0))
	c.UpsertPod(on("y", 1))
	c.UpsertPod(on("x", 1)) // x's rewrite lands first
	if u := c.State("a").Used; u[0] != 100 {
		t.Fatalf("GPU 0 looks free mid-exchange: %v", u)
	}
	c.UpsertPod(on("y", 0))
	if u := c.State("a").Used; u[0] < 100 || u[1] < 100 {
		t.Fatalf("used %v", u)
	}
	c.Now = func() time.Time { return gputest.Now.Add(time.Minute) }
	c.release("uid-x")
	c.release("uid-y")
	if u := c.State("a").Used; u[0] != 100 || u[1] != 100 {
		t.Errorf("after the grace period used = %v, want 100 each", u)
	}
}
