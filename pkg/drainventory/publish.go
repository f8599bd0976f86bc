package drainventory

import (
	"fmt"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/pkg/device"
)

// PublishedGPU is one GPU as Tessera's DRA driver publishes it.
type PublishedGPU struct {
	// Name is the device's name in the pool, unique on the node.
	Name      string
	UUID      string
	Index     int
	Model     string
	MemoryMiB int64
	// NUMANode and Island are -1 where unknown; GPUs of one island are
	// NVLink-linked with each other.
	NUMANode int
	Island   int
}

// TesseraSlice is the ResourceSlice Tessera's driver publishes for a node's
// GPUs: one pool named after the node, in one slice, each GPU with the
// attributes GPUs (above) reads. Each GPU may be allocated to several
// claims (consumable capacity): each allocation consumes the percent it
// asks (capacity.requests {percent: N}, 1-100; 100 when it asks none, so a
// claim that asks nothing gets the GPU whole), and the memory it asks
// (none by default; memory is not what GPUs are shared by).
func TesseraSlice(node string, generation int64, gpus []PublishedGPU) *resourceapi.ResourceSlice {
	devices := make([]resourceapi.Device, 0, len(gpus))
	for _, g := range gpus {
		attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			attrType:  {StringValue: new("gpu")},
			attrModel: {StringValue: new(g.Model)},
			attrUUID:  {StringValue: new(g.UUID)},
			attrIndex: {IntValue: new(int64(g.Index))},
		}
		if g.NUMANode >= 0 {
			attrs[attrNUMANode] = resourceapi.DeviceAttribute{IntValue: new(int64(g.NUMANode))}
		}
		if g.Island >= 0 {
			attrs[attrNVLinkIsland] = resourceapi.DeviceAttribute{IntValue: new(int64(g.Island))}
		}
		memory := resource.NewQuantity(g.MemoryMiB<<20, resource.BinarySI)
		devices = append(devices, resourceapi.Device{
			Name:                     g.Name,
			Attributes:               attrs,
			AllowMultipleAllocations: new(true),
			Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
				CapacityPercent: {Value: *resource.NewQuantity(device.FullUnits, resource.DecimalSI), RequestPolicy: &resourceapi.CapacityRequestPolicy{
					Default:    resource.NewQuantity(device.FullUnits, resource.DecimalSI),
					ValidRange: &resourceapi.CapacityRequestPolicyRange{Min: resource.NewQuantity(1, resource.DecimalSI), Max: resource.NewQuantity(device.FullUnits, resource.DecimalSI), Step: resource.NewQuantity(1, resource.DecimalSI)},
				}},
				capMemory: {Value: *memory, RequestPolicy: &resourceapi.CapacityRequestPolicy{
					Default:    resource.NewQuantity(0, resource.BinarySI),
					ValidRange: &resourceapi.CapacityRequestPolicyRange{Min: resource.NewQuantity(0, resource.BinarySI), Max: memory},
				}},
			},
		})
	}
	return &resourceapi.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{Name: node + "-" + TesseraDriver},
		Spec: resourceapi.ResourceSliceSpec{
			Driver:   TesseraDriver,
			Pool:     resourceapi.ResourcePool{Name: node, Generation: generation, ResourceSliceCount: 1},
			NodeName: new(node),
			Devices:  devices,
		},
	}
}

// GPUClass is the DeviceClass of GPUs of driver, named after the driver. If
// extendedResource is not empty, the class maps it (KEP-5004): a pod asking
// for that resource is served from this class's devices on nodes that have
// none of it allocatable.
func GPUClass(driver, extendedResource string) *resourceapi.DeviceClass {
	class := &resourceapi.DeviceClass{
		ObjectMeta: metav1.ObjectMeta{Name: driver},
		Spec: resourceapi.DeviceClassSpec{
			Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{
				Expression: fmt.Sprintf(`device.driver == %q && device.attributes[%q].%s == "gpu"`, driver, driver, attrType)}}},
		},
	}
	if extendedResource != "" {
		class.Spec.ExtendedResourceName = new(extendedResource)
	}
	return class
}
