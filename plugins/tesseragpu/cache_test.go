package tesseragpu

import (
	"fmt"
	"github.com/google/go-cmp/cmp"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
)

// TestNodeMapSurvivesChurn adds and removes nodes until the name arena has
// been compacted several times, and checks after every step that each node
// present is found under its name, with its own inventory, and that no
// removed node is.
func TestNodeMapSurvivesChurn(t *testing.T) {
	c := newCache(logr.Discard(), 0)
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
			if r.name != n || r.current().inv == nil || r.current().inv.Node != n {
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
			c.setGPUNode(gpuNode(name(next), 2, "A100"))
			present[next] = true
			next++
		}
		check(fmt.Sprintf("round %d, after adding", round))
		// Remove all but every tenth node, so that dead names pile up in
		// blocks that still hold live ones.
		for i := range present {
			if i%10 != 0 {
				deadBefore := c.names.dead
				c.deleteGPUNode(name(i))
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
	c.deleteGPUNode(name(0))
	delete(present, 0)
	c.setGPUNode(gpuNode(name(0), 2, "A100"))
	present[0] = true
	check("after re-adding node 0")
}

// TestInformerTrimsManagedFields: the GPUNode informer's transform leaves
// the object whole except for its managedFields, of which it keeps only the
// time of the latest write, not counting the scheduler's own.
func TestInformerTrimsManagedFields(t *testing.T) {
	gn := gpuNode("a", 2, "A100")
	early, late, latest := metav1.NewTime(now.Add(-time.Hour)), metav1.NewTime(now), metav1.NewTime(now.Add(time.Hour))
	gn.ManagedFields = []metav1.ManagedFieldsEntry{
		{Manager: "tessera-device-plugin", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", Time: &late,
			FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:status":{}}`)}},
		{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, Time: &early},
		// The scheduler's own InventoryFresh=False is no sign of life.
		{Manager: fieldManager, Operation: metav1.ManagedFieldsOperationApply, Subresource: "status", Time: &latest},
	}
	out, err := trimManagedFields(gn)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*v1alpha1.GPUNode)
	if diff := cmp.Diff([]metav1.ManagedFieldsEntry{{Time: &late}}, got.ManagedFields); diff != "" {
		t.Errorf("managedFields (-want +got):\n%s", diff)
	}
	if got.Name != "a" || len(got.Status.GPUs) != 2 {
		t.Errorf("the transform changed more than managedFields: %+v", got)
	}
	none := gpuNode("b", 1, "A100")
	none.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "x"}}
	if out, _ := trimManagedFields(none); out.(*v1alpha1.GPUNode).ManagedFields != nil {
		t.Errorf("entries without a time kept: %v", out.(*v1alpha1.GPUNode).ManagedFields)
	}
	// Objects that are not Kubernetes objects pass through.
	if out, err := trimManagedFields("x"); err != nil || out != "x" {
		t.Errorf("trimManagedFields(\"x\") = %v, %v", out, err)
	}
}
