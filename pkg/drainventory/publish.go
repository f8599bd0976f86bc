package drainventory

import (
	"fmt"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// attributes GPUs (above) reads.
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
		devices = append(devices, resourceapi.Device{
			Name:       g.Name,
			Attributes: attrs,
			Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
				capMemory: {Value: *resource.NewQuantity(g.MemoryMiB<<20, resource.BinarySI)},
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
