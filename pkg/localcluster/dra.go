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
	return c.addDeviceClass(ctx, drainventory.GPUClass(drainventory.NVIDIADriver, string(gpu.ResourceGPU)))
}

// AddTesseraDeviceClass creates the DeviceClass of Tessera's DRA driver,
// mapping extendedResource to its GPUs unless that is empty.
func (c *Cluster) AddTesseraDeviceClass(ctx context.Context, extendedResource string) error {
	return c.addDeviceClass(ctx, drainventory.GPUClass(drainventory.TesseraDriver, extendedResource))
}

func (c *Cluster) addDeviceClass(ctx context.Context, class *resourceapi.DeviceClass) error {
	if _, err := c.Client.ResourceV1().DeviceClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating DeviceClass %s: %w", class.Name, err)
	}
	return nil
}

// AddTesseraDRANode creates a node without a device plugin whose GPUs
// Tessera's DRA driver publishes, as it would: one ResourceSlice.
func (c *Cluster) AddTesseraDRANode(ctx context.Context, name string, gpus []drainventory.PublishedGPU) error {
	if err := c.AddNode(ctx, FakeNode{Name: name}); err != nil {
		return err
	}
	if _, err := c.Client.ResourceV1().ResourceSlices().Create(ctx, drainventory.TesseraSlice(name, 1, gpus), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the ResourceSlice of node %s: %w", name, err)
	}
	return nil
}
