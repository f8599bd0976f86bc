package gpucache

import (
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/internal/gputest"
)

// testCache is a cache with the default staleness bound, whose clock
// stands at gputest.Now, holding the inventories given.
func testCache(nodes ...*v1alpha1.GPUNode) *Cache {
	c := New(klog.Background(), 2*time.Minute)
	c.Now = func() time.Time { return gputest.Now }
	for _, gn := range nodes {
		c.SetGPUNode(gn)
	}
	return c
}

// TestNodeMapSurvivesChurn adds and removes nodes until the name arena has
// been compacted several times, and checks after every step that each node
// present is found under its name, with its own inventory, and that no
// removed node is.
func TestNodeMapSurvivesChurn(t *testing.T) {
	c := New(logr.Discard(), 0)
	name := func(i int) string { return fmt.Sprintf("gpu-node-%06d.rack-%03d.example.com", i, i%97) }
	present := map[int]bool{}
	check := func(step string) {
		t.Helper()
		m := *c.nodes.Load()
		if len(m) != len(present) {
			t.Fatalf("%s: %d nodes in the map, want %d", step, len(m), len(present))
		}
		for i := range present {
			n := name(i)
			r := c.record(n)
			if r == nil {
				t.Fatalf("%s: node %s not found", step, n)
			}
			if r.name != n || r.State().Inv == nil || r.State().Inv.Node != n {
				t.Fatalf("%s: lookup of %s gave the record of %s", step, n, r.name)
			}
		}
		if c.names.live < 0 || c.names.dead < 0 {
			t.Fatalf("%s: arena counts live %d, dead %d", step, c.names.live, c.names.dead)
		}
	}
	compactions := 0
	next := 0
	for round := range 6 {
		for range 300 {
			c.SetGPUNode(gputest.GPUNode(name(next), 2, "A100"))
			present[next] = true
			next++
		}
		check(fmt.Sprintf("round %d, after adding", round))
		// Remove all but every tenth node, so that dead names pile up in
		// blocks that still hold live ones.
		for i := range present {
			if i%10 != 0 {
				deadBefore := c.names.dead
				c.DeleteGPUNode(name(i))
				delete(present, i)
				if c.names.dead < deadBefore {
					compactions++
				}
			}
		}
		check(fmt.Sprintf("round %d, after removing", round))
	}
	if compactions == 0 {
		t.Fatalf("the arena was never compacted (live %d, dead %d bytes)", c.names.live, c.names.dead)
	}
	// A node removed and added again is found again.
	c.DeleteGPUNode(name(0))
	delete(present, 0)
	c.SetGPUNode(gputest.GPUNode(name(0), 2, "A100"))
	present[0] = true
	check("after re-adding node 0")
}
