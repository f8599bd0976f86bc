package tesseragpu

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// allocated is a claim holding the named devices of node n's pool.
func allocated(uid types.UID, devices ...string) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: string(uid), Namespace: "ns", UID: uid}}
	if devices == nil {
		return c
	}
	c.Status.Allocation = &resourceapi.AllocationResult{}
	for _, d := range devices {
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results, resourceapi.DeviceRequestAllocationResult{
			Request: "gpu", Driver: drainventory.TesseraDriver, Pool: "n", Device: d})
	}
	return c
}

// TestPendingAllocations: an allocation DynamicResources made in Reserve
// holds its GPUs at once and until the informer shows the claim allocated;
// the informer's older, unallocated claim does not release them; one given
// up in Unreserve releases them; and once the informer has the allocation,
// it alone decides.
func TestPendingAllocations(t *testing.T) {
	store := gpucache.New(klog.Background(), 0)
	f := newDRAFeed(store)
	var gpus []drainventory.PublishedGPU
	for i := range 4 {
		gpus = append(gpus, drainventory.PublishedGPU{Name: "g" + string(rune('0'+i)), UUID: "u" + string(rune('0'+i)),
			Index: i, Model: "H100", MemoryMiB: 80 << 10, NUMANode: -1, Island: -1})
	}
	f.setSlice(nil, drainventory.TesseraSlice("n", 1, gpus))
	used := func() []int {
		t.Helper()
		st := store.Slot("n").State()
		if st == nil || !st.DRA {
			t.Fatal("node n is not a DRA node in the cache")
		}
		return st.Used
	}
	full := device.FullUnits
	steps := []struct {
		name string
		do   func()
		want []int
	}{
		{"pending", func() { f.setPending(allocated("a", "g0")) }, []int{full, 0, 0, 0}},
		{"informer has the claim unallocated", func() { f.setClaim("a", allocated("a")) }, []int{full, 0, 0, 0}},
		{"written, not yet seen", func() { f.settle("a", allocated("a", "g0")) }, []int{full, 0, 0, 0}},
		{"informer still behind", func() { f.setClaim("a", allocated("a")) }, []int{full, 0, 0, 0}},
		{"informer has the allocation", func() { f.setClaim("a", allocated("a", "g0")) }, []int{full, 0, 0, 0}},
		{"pending, then unreserved", func() { f.setPending(allocated("b", "g1", "g2")); f.settle("b", allocated("b")) }, []int{full, 0, 0, 0}},
		{"pending, then gone", func() { f.setPending(allocated("c", "g3")); f.settle("c", nil) }, []int{full, 0, 0, 0}},
		{"deallocated", func() { f.setClaim("a", allocated("a")) }, []int{0, 0, 0, 0}},
		{"pending, then deleted", func() { f.setPending(allocated("d", "g2")); f.setClaim("d", nil) }, []int{0, 0, 0, 0}},
	}
	for _, s := range steps {
		s.do()
		if diff := cmp.Diff(s.want, used()); diff != "" {
			t.Errorf("%s: used (-want +got):\n%s", s.name, diff)
		}
	}
}
