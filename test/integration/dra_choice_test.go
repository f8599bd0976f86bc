package integration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// tesseraDriver is the driver name of Tessera's node agent in DRA mode.
const tesseraDriver = drainventory.TesseraDriver

// gpuClaim is a ResourceClaim for n devices of class, each also matching
// the CEL selector sel where it is not empty.
func gpuClaim(name, class string, n int64, sel string) *resourceapi.ResourceClaim {
	r := &resourceapi.ExactDeviceRequest{DeviceClassName: class, Count: n, AllocationMode: resourceapi.DeviceAllocationModeExactCount}
	if sel != "" {
		r.Selectors = []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: sel}}}
	}
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: "dev", Exactly: r,
		}}}},
	}
}

// usingClaims makes the pod's container use the named ResourceClaims.
func usingClaims(claims ...string) podOpt {
	return func(p *v1.Pod) {
		for _, c := range claims {
			p.Spec.ResourceClaims = append(p.Spec.ResourceClaims, v1.PodResourceClaim{Name: c, ResourceClaimName: new(c)})
			p.Spec.Containers[0].Resources.Claims = append(p.Spec.Containers[0].Resources.Claims, v1.ResourceClaim{Name: c})
		}
	}
}

// claimResults waits until the claim is allocated and returns its devices
// as pool/device.
func claimResults(t *testing.T, ctx context.Context, c *localcluster.Cluster, claim string) []string {
	t.Helper()
	var out []string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		rc, err := c.Client.ResourceV1().ResourceClaims("default").Get(ctx, claim, metav1.GetOptions{})
		if err != nil || rc.Status.Allocation == nil {
			return false, nil
		}
		out = nil
		for _, r := range rc.Status.Allocation.Devices.Results {
			out = append(out, r.Pool+"/"+r.Device)
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("claim %s is not allocated: %v", claim, err)
	}
	return out
}

// TestDRAAllocatesTesseraChoice: on a node whose eight GPUs Tessera's DRA
// driver publishes in two NVLink islands of four, DynamicResources (run as
// TesseraDynamicResources) allocates the GPUs Tessera chooses. After one
// GPU is taken, a 4-GPU claim and a pod asking four nvidia.com/gpu through
// the class's mapping each get a whole island: the allocator alone takes
// the first free GPUs in the slice's order, which straddle the islands.
// Tessera's order never overrides a claim: a claim whose selector allows
// only a GPU Tessera would not pick gets that GPU, and a claim for a device
// of another driver on the same node is allocated as before. No device is
// given twice, and Tessera counts every GPU the claims hold.
func TestDRAAllocatesTesseraChoice(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	if err := e.c.AddTesseraDeviceClass(e.ctx, "nvidia.com/gpu"); err != nil {
		t.Fatal(err)
	}
	var gpuList []drainventory.PublishedGPU
	for i := range 8 {
		gpuList = append(gpuList, drainventory.PublishedGPU{Name: fmt.Sprintf("gpu-%d", i), UUID: fmt.Sprintf("GPU-island-%d", i),
			Index: i, Model: h100, MemoryMiB: 80 << 10, NUMANode: i / 4, Island: i / 4})
	}
	if err := e.c.AddTesseraDRANode(e.ctx, "island", gpuList); err != nil {
		t.Fatal(err)
	}
	// A device of another driver on the same node, and its class.
	nic := &resourceapi.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "island-nic"},
		Spec: resourceapi.ResourceSliceSpec{Driver: "nic.example.com", NodeName: new("island"),
			Pool:    resourceapi.ResourcePool{Name: "island", Generation: 1, ResourceSliceCount: 1},
			Devices: []resourceapi.Device{{Name: "nic-0"}, {Name: "nic-1"}}},
	}
	if _, err := e.c.Client.ResourceV1().ResourceSlices().Create(e.ctx, nic, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	nicClass := &resourceapi.DeviceClass{ObjectMeta: metav1.ObjectMeta{Name: "nic"}, Spec: resourceapi.DeviceClassSpec{
		Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: `device.driver == "nic.example.com"`}}}}}
	if _, err := e.c.Client.ResourceV1().DeviceClasses().Create(e.ctx, nicClass, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	choicesBefore := map[string]float64{"preferred": deviceChoices(t, "preferred"), "other": deviceChoices(t, "other")}
	held := map[string]string{}
	take := func(owner string, devices []string) {
		t.Helper()
		for _, d := range devices {
			if o, ok := held[d]; ok {
				t.Errorf("device %s given to %s and %s", d, o, owner)
			}
			held[d] = owner
		}
	}
	index := func(device string) int {
		i, err := strconv.Atoi(device[strings.LastIndex(device, "/gpu-")+len("/gpu-"):])
		if err != nil {
			t.Fatalf("device %s is not one of the node's GPUs", device)
		}
		return i
	}
	oneIsland := func(owner string, devices []string) {
		t.Helper()
		if len(devices) != 4 {
			t.Fatalf("%s got %v, want four GPUs", owner, devices)
		}
		for _, d := range devices {
			if index(d)/4 != index(devices[0])/4 {
				t.Errorf("%s got %v, which straddles the NVLink islands", owner, devices)
				return
			}
		}
	}
	newClaim := func(rc *resourceapi.ResourceClaim) {
		t.Helper()
		if _, err := e.c.Client.ResourceV1().ResourceClaims("default").Create(e.ctx, rc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	newClaim(gpuClaim("one", tesseraDriver, 1, ""))
	e.createPod("one", usingClaims("one"))
	e.waitBound("one")
	take("one", claimResults(t, e.ctx, e.c, "one"))

	newClaim(gpuClaim("four", tesseraDriver, 4, ""))
	e.createPod("four", usingClaims("four"))
	e.waitBound("four")
	four := claimResults(t, e.ctx, e.c, "four")
	take("four", four)
	oneIsland("claim four", four)
	waitAllocatedGPUs(t, e.ctx, 5)

	// Only a GPU Tessera would not take: the first free one, as the
	// allocator alone would pick.
	var free []int
	for i := range 8 {
		if _, ok := held[fmt.Sprintf("island/gpu-%d", i)]; !ok {
			free = append(free, i)
		}
	}
	if len(free) != 3 {
		t.Fatalf("free GPUs %v, want three", free)
	}
	pin := free[len(free)-1]
	newClaim(gpuClaim("pinned", tesseraDriver, 1, fmt.Sprintf(`device.attributes[%q].index == %d`, tesseraDriver, pin)))
	newClaim(gpuClaim("nic", "nic", 1, ""))
	e.createPod("pinned", usingClaims("pinned", "nic"))
	e.waitBound("pinned")
	pinned := claimResults(t, e.ctx, e.c, "pinned")
	take("pinned", pinned)
	if want := []string{fmt.Sprintf("island/gpu-%d", pin)}; !slices.Equal(pinned, want) {
		t.Errorf("claim pinned got %v, want %v", pinned, want)
	}
	if got := claimResults(t, e.ctx, e.c, "nic"); !slices.Equal(got, []string{"island/nic-0"}) {
		t.Errorf("claim nic got %v, want the first NIC", got)
	}
	waitAllocatedGPUs(t, e.ctx, 6)

	// A pod asking nvidia.com/gpu through the class's mapping: two fill
	// the node, then a second node takes one and then four, which get a
	// whole island there too.
	if err := e.c.AddTesseraDRANode(e.ctx, "island2", gpuList); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"island", "island", "island2"} {
		name := fmt.Sprintf("mapped-%d", i)
		e.createPod(name, gpus(1))
		p := e.waitBound(name)
		if p.Spec.NodeName != want {
			t.Fatalf("pod %s went to %s, want %s", name, p.Spec.NodeName, want)
		}
		take(name, allocatedDevicesOf(t, e.ctx, e.c, p, tesseraDriver))
	}
	e.createPod("mapped-four", gpus(4))
	p := e.waitBound("mapped-four")
	if p.Spec.NodeName != "island2" {
		t.Fatalf("pod mapped-four went to %s, want island2", p.Spec.NodeName)
	}
	four = allocatedDevicesOf(t, e.ctx, e.c, p, tesseraDriver)
	take("mapped-four", four)
	oneIsland("mapped nvidia.com/gpu: 4", four)
	waitAllocatedGPUs(t, e.ctx, 13)
	// Every GPU claim took Tessera's choice but the pinned one. The
	// counter is the process's: earlier tests' claims count too.
	for outcome, want := range map[string]float64{"preferred": 6, "other": 1} {
		if got := deviceChoices(t, outcome) - choicesBefore[outcome]; got != want {
			t.Errorf("dra_device_choice_total{outcome=%q} grew by %v, want %v", outcome, got, want)
		}
	}
}

// deviceChoices reads tessera_scheduler_dra_device_choice_total{outcome}.
func deviceChoices(t *testing.T, outcome string) float64 {
	t.Helper()
	return metricValue(t, `tessera_scheduler_dra_device_choice_total{outcome="`+outcome+`"}`)
}

// shareClaim is a ResourceClaim for percent of one GPU of Tessera's class
// (consumable capacity), also matching sel where it is not empty.
func shareClaim(name string, percent int64, sel string) *resourceapi.ResourceClaim {
	rc := gpuClaim(name, tesseraDriver, 1, sel)
	rc.Spec.Devices.Requests[0].Exactly.Capacity = &resourceapi.CapacityRequirements{
		Requests: map[resourceapi.QualifiedName]resource.Quantity{drainventory.CapacityPercent: *resource.NewQuantity(percent, resource.DecimalSI)}}
	return rc
}

// TestDRASharesByCapacity: Tessera's DRA driver lets several claims share
// a GPU by percent (consumable capacity), and the allocator puts a share
// where Tessera would: with 50 % of GPU 0 and 80 % of GPU 1 taken, a 20 %
// share goes to GPU 1, the tightest fit under binpack, not to GPU 0, the
// first with room. A share too large for any GPU's rest waits.
func TestDRASharesByCapacity(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	if err := e.c.AddTesseraDeviceClass(e.ctx, ""); err != nil {
		t.Fatal(err)
	}
	var gpuList []drainventory.PublishedGPU
	for i := range 2 {
		gpuList = append(gpuList, drainventory.PublishedGPU{Name: fmt.Sprintf("gpu-%d", i), UUID: fmt.Sprintf("GPU-shared-%d", i),
			Index: i, Model: h100, MemoryMiB: 80 << 10, NUMANode: -1, Island: -1})
	}
	if err := e.c.AddTesseraDRANode(e.ctx, "shared", gpuList); err != nil {
		t.Fatal(err)
	}
	place := func(name string, rc *resourceapi.ResourceClaim) []string {
		t.Helper()
		if _, err := e.c.Client.ResourceV1().ResourceClaims("default").Create(e.ctx, rc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.createPod(name, usingClaims(rc.Name))
		e.waitBound(name)
		return claimResults(t, e.ctx, e.c, rc.Name)
	}
	if got := place("half", shareClaim("half", 50, fmt.Sprintf(`device.attributes[%q].index == 0`, tesseraDriver))); !slices.Equal(got, []string{"shared/gpu-0"}) {
		t.Fatalf("half got %v", got)
	}
	if got := place("most", shareClaim("most", 80, "")); !slices.Equal(got, []string{"shared/gpu-1"}) {
		t.Fatalf("most got %v, want the GPU with room", got)
	}
	if got := place("fifth", shareClaim("fifth", 20, "")); !slices.Equal(got, []string{"shared/gpu-1"}) {
		t.Errorf("fifth got %v, want the tightest fit shared/gpu-1", got)
	}
	if _, err := e.c.Client.ResourceV1().ResourceClaims("default").Create(e.ctx, shareClaim("big", 60, ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.createPod("big", usingClaims("big"))
	e.waitUnschedulable("big", "cannot allocate all claims")
}

// TestBothDRAPluginsRefused: a profile that enables TesseraDynamicResources
// beside the in-tree DynamicResources (here by dropping the shipped
// profile's multiPoint entry that disables it) does not start. Whichever of
// the two the scheduler builds second fails: TesseraDynamicResources says
// which to disable, DynamicResources names the pod index both add.
func TestBothDRAPluginsRefused(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	s, err := e.c.StartScheduler(e.ctx, t.TempDir(), localcluster.SchedulerOptions{Plugins: map[string]any{
		"multiPoint": map[string]any{"enabled": []any{map[string]any{"name": "TesseraDynamicResources"}}},
	}})
	if err == nil {
		s.Stop()
		t.Fatal("a profile with both DRA plugins started")
	}
	if !strings.Contains(err.Error(), "disable DynamicResources") && !strings.Contains(err.Error(), "indexer conflict: map[schedulerPodResourceClaim-tessera-scheduler") {
		t.Errorf("error %q names neither the plugin to disable nor the index both add", err)
	}
}
