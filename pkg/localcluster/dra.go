package localcluster

import (
	"context"
	"fmt"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// AddDRANode creates a node without a device plugin (no nvidia.com/gpu
// allocatable, no GPUNode) whose GPUs NVIDIA's DRA driver publishes in one
// ResourceSlice, with that driver's attribute names: one GPU per model
// named, gpu-0, gpu-1, ... with UUIDs GPU-<node>-dra-<i>.
func (c *Cluster) AddDRANode(ctx context.Context, name string, models ...string) error {
	if err := c.AddNode(ctx, FakeNode{Name: name}); err != nil {
		return err
	}
	devices := make([]resourceapi.Device, 0, len(models))
	for i, model := range models {
		devices = append(devices, resourceapi.Device{
			Name: fmt.Sprintf("gpu-%d", i),
			Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
				"type":        {StringValue: new("gpu")},
				"uuid":        {StringValue: new(fmt.Sprintf("GPU-%s-dra-%d", name, i))},
				"productName": {StringValue: new(model)},
				"index":       {IntValue: new(int64(i))},
			},
			Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
				"memory": {Value: resource.MustParse("80Gi")},
			},
		})
	}
	slice := &resourceapi.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + drainventory.NVIDIADriver},
		Spec: resourceapi.ResourceSliceSpec{
			Driver:   drainventory.NVIDIADriver,
			Pool:     resourceapi.ResourcePool{Name: name, Generation: 1, ResourceSliceCount: 1},
			NodeName: new(name),
			Devices:  devices,
		},
	}
	if _, err := c.Client.ResourceV1().ResourceSlices().Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the ResourceSlice of node %s: %w", name, err)
	}
	return nil
}

// AddGPUDeviceClass creates the DeviceClass of NVIDIA's GPUs, named after
// the driver, that maps nvidia.com/gpu to them (KEP-5004), as NVIDIA's
// driver chart does.
func (c *Cluster) AddGPUDeviceClass(ctx context.Context) error {
	d := drainventory.NVIDIADriver
	class := &resourceapi.DeviceClass{
		ObjectMeta: metav1.ObjectMeta{Name: d},
		Spec: resourceapi.DeviceClassSpec{
			Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{
				Expression: `device.driver == "` + d + `" && device.attributes["` + d + `"].type == "gpu"`}}},
			ExtendedResourceName: new(string(gpu.ResourceGPU)),
		},
	}
	if _, err := c.Client.ResourceV1().DeviceClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating DeviceClass %s: %w", d, err)
	}
	return nil
}
