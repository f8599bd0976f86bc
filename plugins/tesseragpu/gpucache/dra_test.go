package gpucache

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/internal/gputest"
)

// draInventory is a DRA node's inventory of n H100s, with IDs as
// drainventory gives them.
func draInventory(node string, n int) *device.Inventory {
	var specs []device.DeviceSpec
	for i := range n {
		specs = append(specs, device.DeviceSpec{ID: fmt.Sprintf("gpu.nvidia.com/%s/gpu-%d", node, i), Model: "H100", NUMANode: -1, Healthy: true})
	}
	return device.NewInventory(node, time.Time{}, specs)
}

// TestSetDRA: a DRA node's use is what its claims hold, whatever pods are
// bound there; a GPUNode takes precedence over the node's slices, which
// come back when it goes; a node with neither is forgotten.
func TestSetDRA(t *testing.T) {
	c := testCache()
	used := func(node string) []int {
		t.Helper()
		st := c.State(node)
		if st == nil || st.Inv == nil {
			return nil
		}
		return append([]int(nil), st.Used...)
	}

	c.SetDRA("n", draInventory("n", 4), []drainventory.Held{{ID: "gpu.nvidia.com/n/gpu-2", Units: 100}, {ID: "gpu.nvidia.com/other/gpu-0", Units: 100}})
	if st := c.State("n"); st == nil || !st.DRA {
		t.Fatalf("state %+v, want a DRA state", st)
	}
	if diff := cmp.Diff([]int{0, 0, 100, 0}, used("n")); diff != "" {
		t.Errorf("used (-want +got):\n%s", diff)
	}
	if c.LargestNode() != 4 {
		t.Errorf("LargestNode = %d, want 4", c.LargestNode())
	}
	// A pod bound there with nvidia.com/gpu and no assignment holds its
	// GPU through its claim: it is not guessed on top.
	c.UpsertPod(gputest.Pod("mapped", gputest.Whole("1"), gputest.OnNode("n")))
	if diff := cmp.Diff([]int{0, 0, 100, 0}, used("n")); diff != "" {
		t.Errorf("used with a pod bound (-want +got):\n%s", diff)
	}
	c.SetDRA("n", draInventory("n", 4), []drainventory.Held{{ID: "gpu.nvidia.com/n/gpu-2", Units: 100}, {ID: "gpu.nvidia.com/n/gpu-0", Units: 60}, {ID: "gpu.nvidia.com/n/gpu-0", Units: 60}})
	if diff := cmp.Diff([]int{100, 0, 100, 0}, used("n")); diff != "" {
		t.Errorf("used after a second claim (-want +got):\n%s", diff)
	}

	// The device plugin's GPUNode wins, and the pod counts as it asks.
	c.SetGPUNode(gputest.GPUNode("n", 2, "H100"))
	if st := c.State("n"); st.DRA || st.Inv.Len() != 2 {
		t.Errorf("with a GPUNode: DRA %v, %d devices", st.DRA, st.Inv.Len())
	}
	if diff := cmp.Diff([]int{100, 0}, used("n")); diff != "" {
		t.Errorf("used with a GPUNode (-want +got):\n%s", diff)
	}
	c.DeleteGPUNode("n")
	if st := c.State("n"); !st.DRA {
		t.Errorf("the slices did not take over when the GPUNode went")
	}
	if diff := cmp.Diff([]int{100, 0, 100, 0}, used("n")); diff != "" {
		t.Errorf("used after the GPUNode went (-want +got):\n%s", diff)
	}

	c.RemovePod(gputest.Pod("mapped").UID)
	c.SetDRA("n", nil, nil)
	if r := c.record("n"); r != nil {
		t.Errorf("a node with no slices, claims or pods is still recorded: %+v", r)
	}
	// Slices of a driver Tessera cannot read leave no record either.
	c.SetDRA("other", nil, nil)
	c.SetDRA("other", nil, nil)
	if r := c.record("other"); r != nil {
		t.Errorf("a node with nothing to keep was recorded: %+v", r)
	}
}
