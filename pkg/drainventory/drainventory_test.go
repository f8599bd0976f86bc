package drainventory

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/pkg/device"
)

// slice is a ResourceSlice of driver on node, pool generation gen.
func slice(name, driver, node string, gen int64, devices ...resourceapi.Device) *resourceapi.ResourceSlice {
	return &resourceapi.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: resourceapi.ResourceSliceSpec{
			Driver: driver, Pool: resourceapi.ResourcePool{Name: node, Generation: gen, ResourceSliceCount: 1},
			NodeName: &node, Devices: devices,
		},
	}
}

func str(s string) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{StringValue: &s} }
func num(n int64) resourceapi.DeviceAttribute  { return resourceapi.DeviceAttribute{IntValue: &n} }

// nvidiaGPU is a device as NVIDIA's driver publishes a GPU.
func nvidiaGPU(i int, model string) resourceapi.Device {
	return resourceapi.Device{
		Name: fmt.Sprintf("gpu-%d", i),
		Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			"type": str("gpu"), "productName": str(model), "uuid": str(fmt.Sprintf("GPU-%d", i)),
			"index": num(int64(i)), "resource.kubernetes.io/pcieRoot": str("pci0000:00"),
		},
		Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{"memory": {Value: resource.MustParse("80Gi")}},
	}
}

// tesseraGPU is a device as Tessera's driver publishes a GPU: qualified
// names, NUMA node and NVLink island.
func tesseraGPU(i, numa, island int) resourceapi.Device {
	return resourceapi.Device{
		Name: fmt.Sprintf("gpu-%d", i),
		Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			TesseraDriver + "/model": str("NVIDIA H100 80GB HBM3"), TesseraDriver + "/numaNode": num(int64(numa)),
			TesseraDriver + "/nvlinkIsland": num(int64(island)),
		},
		Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{TesseraDriver + "/memory": {Value: resource.MustParse("80Gi")}},
	}
}

// view is what a test compares of an inventory's devices.
type view struct {
	ID, Model string
	MemoryMiB int64
	NUMA      int
	Links     []string
	Healthy   bool
}

func viewOf(inv *device.Inventory) []view {
	if inv == nil {
		return nil
	}
	var out []view
	for _, d := range inv.Devices {
		v := view{ID: d.ID, Model: d.Model, MemoryMiB: d.MemoryMiB, NUMA: d.NUMANode, Healthy: d.Healthy}
		for j := range inv.Devices {
			if d.Links&(1<<j) != 0 {
				v.Links = append(v.Links, inv.Devices[j].ID)
			}
		}
		out = append(out, v)
	}
	return out
}

func TestInventory(t *testing.T) {
	mig := nvidiaGPU(9, "NVIDIA A100-SXM4-40GB")
	mig.Name, mig.Attributes["type"] = "gpu-0-mig-1g", str("mig")
	noModel := nvidiaGPU(3, "")
	delete(noModel.Attributes, "productName")
	tainted := nvidiaGPU(1, "NVIDIA H100 80GB HBM3")
	tainted.Taints = []resourceapi.DeviceTaint{{Key: "gpu.nvidia.com/xid", Effect: resourceapi.DeviceTaintEffectNoSchedule}}
	informational := nvidiaGPU(2, "NVIDIA H100 80GB HBM3")
	informational.Taints = []resourceapi.DeviceTaint{{Key: "note", Effect: resourceapi.DeviceTaintEffectNone}}
	h100 := func(i int) view {
		return view{ID: fmt.Sprintf("gpu.nvidia.com/n/gpu-%d", i), Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 81920, NUMA: -1, Healthy: true}
	}

	tests := []struct {
		name         string
		slices       []*resourceapi.ResourceSlice
		want         []view
		wantProblems []string
	}{
		{name: "no slices"},
		{
			name: "NVIDIA's GPUs, not its MIG devices nor other nodes' or drivers' devices",
			slices: []*resourceapi.ResourceSlice{
				slice("b", NVIDIADriver, "n", 1, nvidiaGPU(1, "NVIDIA H100 80GB HBM3"), mig),
				slice("a", NVIDIADriver, "n", 1, nvidiaGPU(0, "NVIDIA H100 80GB HBM3")),
				slice("other-node", NVIDIADriver, "m", 1, nvidiaGPU(0, "NVIDIA H100 80GB HBM3")),
				slice("nic", "sriov.example.com", "n", 1, nvidiaGPU(5, "NIC")),
			},
			want: []view{h100(0), h100(1)},
		},
		{
			name: "only the newest generation of a pool",
			slices: []*resourceapi.ResourceSlice{
				slice("old", NVIDIADriver, "n", 1, nvidiaGPU(0, "NVIDIA H100 80GB HBM3"), nvidiaGPU(1, "NVIDIA H100 80GB HBM3")),
				slice("new", NVIDIADriver, "n", 2, nvidiaGPU(1, "NVIDIA H100 80GB HBM3")),
			},
			want: []view{h100(1)},
		},
		{
			name:   "hard taints make a GPU unusable, None does not",
			slices: []*resourceapi.ResourceSlice{slice("a", NVIDIADriver, "n", 1, tainted, informational)},
			want: func() []view {
				v := []view{h100(1), h100(2)}
				v[0].Healthy = false
				return v
			}(),
		},
		{
			name:         "a GPU without a model is reported",
			slices:       []*resourceapi.ResourceSlice{slice("a", NVIDIADriver, "n", 1, noModel)},
			wantProblems: []string{"device gpu.nvidia.com/n/gpu-3 has no model (attribute productName or model)"},
		},
		{
			name:   "Tessera's GPUs with NUMA and NVLink islands",
			slices: []*resourceapi.ResourceSlice{slice("t", TesseraDriver, "n", 1, tesseraGPU(0, 0, 0), tesseraGPU(1, 0, 0), tesseraGPU(2, 1, 1))},
			want: []view{
				{ID: "gpu.tessera.io/n/gpu-0", Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 81920, NUMA: 0, Links: []string{"gpu.tessera.io/n/gpu-1"}, Healthy: true},
				{ID: "gpu.tessera.io/n/gpu-1", Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 81920, NUMA: 0, Links: []string{"gpu.tessera.io/n/gpu-0"}, Healthy: true},
				{ID: "gpu.tessera.io/n/gpu-2", Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 81920, NUMA: 1, Healthy: true},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inv, problems := Inventory("n", tc.slices)
			if diff := cmp.Diff(tc.want, viewOf(inv)); diff != "" {
				t.Errorf("devices (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantProblems, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAllocated(t *testing.T) {
	claim := &resourceapi.ResourceClaim{Status: resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{
		Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{
			{Request: "gpu", Driver: NVIDIADriver, Pool: "n", Device: "gpu-3"},
			{Request: "nic", Driver: "sriov.example.com", Pool: "n", Device: "vf-1"},
			{Request: "monitor", Driver: NVIDIADriver, Pool: "n", Device: "gpu-4", AdminAccess: new(true)},
			{Request: "share", Driver: NVIDIADriver, Pool: "n", Device: "gpu-5", ShareID: new(types.UID("a1"))},
			{Request: "part", Driver: TesseraDriver, Pool: "n", Device: "gpu-6", ShareID: new(types.UID("a2")),
				ConsumedCapacity: map[resourceapi.QualifiedName]resource.Quantity{"percent": resource.MustParse("25")}},
			{Request: "all", Driver: TesseraDriver, Pool: "n", Device: "gpu-7", ShareID: new(types.UID("a3")),
				ConsumedCapacity: map[resourceapi.QualifiedName]resource.Quantity{"gpu.tessera.io/percent": resource.MustParse("100")}},
		}},
	}}}
	want := []Held{{"gpu.nvidia.com/n/gpu-3", 100}, {"gpu.tessera.io/n/gpu-6", 25}, {"gpu.tessera.io/n/gpu-7", 100}}
	if diff := cmp.Diff(want, Allocated(claim)); diff != "" {
		t.Errorf("Allocated (-want +got):\n%s", diff)
	}
	if got := Allocated(&resourceapi.ResourceClaim{}); got != nil {
		t.Errorf("an unallocated claim holds %v", got)
	}
}

// TestGPUs: what kubectl tessera shows of a DRA GPU beside the device
// model: the driver's UUID and index, and its taints as published.
func TestGPUs(t *testing.T) {
	tainted := nvidiaGPU(1, "NVIDIA H100 80GB HBM3")
	tainted.Taints = []resourceapi.DeviceTaint{{Key: "gpu.nvidia.com/xid", Value: "79", Effect: resourceapi.DeviceTaintEffectNoExecute}}
	gpus, problems := GPUs("n", []*resourceapi.ResourceSlice{
		slice("a", NVIDIADriver, "n", 1, nvidiaGPU(0, "NVIDIA H100 80GB HBM3"), tainted),
		slice("t", TesseraDriver, "n", 1, tesseraGPU(0, 0, 3)),
	})
	type got struct {
		ID, UUID string
		Index    int
		Island   string
		Healthy  bool
		Taints   int
	}
	var out []got
	for _, g := range gpus {
		out = append(out, got{g.ID, g.UUID, g.Index, g.Island, g.Healthy, len(g.Taints)})
	}
	want := []got{
		{"gpu.nvidia.com/n/gpu-0", "GPU-0", 0, "", true, 0},
		{"gpu.nvidia.com/n/gpu-1", "GPU-1", 1, "", false, 1},
		{"gpu.tessera.io/n/gpu-0", "", -1, "gpu.tessera.io/n/3", true, 0},
	}
	if diff := cmp.Diff(want, out); diff != "" || problems != nil {
		t.Errorf("GPUs (-want +got):\n%s\nproblems %v", diff, problems)
	}
}

func TestIsGPUClass(t *testing.T) {
	cel := func(expr string) *resourceapi.DeviceClass {
		return &resourceapi.DeviceClass{Spec: resourceapi.DeviceClassSpec{Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: expr}}}}}
	}
	mapped := &resourceapi.DeviceClass{Spec: resourceapi.DeviceClassSpec{ExtendedResourceName: new("nvidia.com/gpu")}}
	for _, tc := range []struct {
		class *resourceapi.DeviceClass
		want  bool
	}{
		{cel(`device.driver == "gpu.nvidia.com" && device.attributes["gpu.nvidia.com"].type == "gpu"`), true},
		{cel(`device.driver=='gpu.tessera.io'`), true},
		{cel(`device.driver == "sriov.example.com"`), false},
		{cel(`device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'`), false},
		{cel(`device.driver == "gpu.nvidia.com" && device.attributes["gpu.nvidia.com"].type == "vfio"`), false},
		{mapped, true},
		{&resourceapi.DeviceClass{}, false},
		{nil, false},
	} {
		if got := IsGPUClass(tc.class, "nvidia.com/gpu"); got != tc.want {
			t.Errorf("IsGPUClass(%+v) = %v, want %v", tc.class, got, tc.want)
		}
	}
}

func TestSelectedModels(t *testing.T) {
	tests := []struct {
		expr string
		want []string
		ok   bool
	}{
		{`device.attributes["gpu.tessera.io"].model == "NVIDIA H100 80GB HBM3"`, []string{"NVIDIA H100 80GB HBM3"}, true},
		{`device.attributes['gpu.nvidia.com'].productName in ['A100', "H100"]`, []string{"A100", "H100"}, true},
		{` device.attributes["gpu.tessera.io"].model in ["T4"] `, []string{"T4"}, true},
		{`device.attributes["gpu.tessera.io"].model != "T4"`, nil, false},
		{`device.attributes["gpu.tessera.io"].model == "T4" || true`, nil, false},
		{`device.attributes["gpu.tessera.io"].index == 0`, nil, false},
		{`device.attributes["other.example.com"].model == "T4"`, nil, false},
		{`device.attributes["gpu.tessera.io"].model in []`, nil, false},
	}
	for _, tc := range tests {
		got, ok := SelectedModels(tc.expr)
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("SelectedModels(%s) = %q, %v; want %q, %v", tc.expr, got, ok, tc.want, tc.ok)
		}
	}
}
