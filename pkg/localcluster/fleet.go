package localcluster

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// FakeNode describes a node to create: a Node object as a kubelet with
// Tessera's device plugin would present it, and its GPUNode inventory.
type FakeNode struct {
	// Name is the node's name.
	Name string
	// GPUs is the number of GPUs; 0 makes a CPU-only node.
	GPUs int
	// Model is the NVML product name; it defaults to an H100.
	Model string
	// MemoryMiB defaults to 81920.
	MemoryMiB int64
	// Islands splits the GPUs into this many NVLink islands, each on its
	// own NUMA node; 0 means one island, -1 means no NVLink at all.
	Islands int
	// Heartbeat defaults to now.
	Heartbeat time.Time
	// NoTaint leaves the GPU-node taint off a GPU node.
	NoTaint bool
	// Mutate, if set, edits the GPUNode before its status is written.
	Mutate func(*v1alpha1.GPUNode)
	// NoInventory creates only the Node, for a device plugin to publish
	// the GPUNode.
	NoInventory bool
}

// FakeGPUUUID is the UUID that AddNode gives GPU i of a node.
func FakeGPUUUID(node string, i int) string { return fmt.Sprintf("GPU-%s-%d", node, i) }

// AddNode creates the node and, for GPU nodes, its GPUNode with status.
func (c *Cluster) AddNode(ctx context.Context, fn FakeNode) error {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: fn.Name, Labels: map[string]string{v1.LabelHostname: fn.Name}}}
	if fn.GPUs > 0 && !fn.NoTaint {
		node.Spec.Taints = []v1.Taint{{Key: gpu.NodeTaintKey, Value: "present", Effect: v1.TaintEffectNoSchedule}}
	}
	node, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node %s: %w", fn.Name, err)
	}
	res := v1.ResourceList{
		v1.ResourceCPU: resource.MustParse("64"), v1.ResourceMemory: resource.MustParse("512Gi"), v1.ResourcePods: resource.MustParse("110"),
	}
	if fn.GPUs > 0 {
		res[gpu.ResourceGPU] = *resource.NewQuantity(int64(fn.GPUs), resource.DecimalSI)
		res[gpu.ResourcePercent] = *resource.NewQuantity(int64(100*fn.GPUs), resource.DecimalSI)
	}
	// The apiserver drops status on create; a kubelet reports it after.
	node.Status.Capacity, node.Status.Allocatable = res, res
	node.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady"}}
	if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting node %s status: %w", fn.Name, err)
	}
	if fn.GPUs == 0 || fn.NoInventory {
		return nil
	}
	want := &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: fn.Name}, Status: FakeInventory(fn)}
	if fn.Mutate != nil {
		fn.Mutate(want)
	}
	// Create keeps the spec and drops the status; the status subresource
	// takes the rest, as the device plugin writes it.
	gn, err := c.GPU.TesseraV1alpha1().GPUNodes().Create(ctx, want, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating GPUNode %s: %w", fn.Name, err)
	}
	gn.Status = want.Status
	if _, err := c.GPU.TesseraV1alpha1().GPUNodes().UpdateStatus(ctx, gn, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("writing GPUNode %s status: %w", fn.Name, err)
	}
	return nil
}

// FakeInventory builds the GPUNode status for a fake node.
func FakeInventory(fn FakeNode) v1alpha1.GPUNodeStatus {
	hb := fn.Heartbeat
	if hb.IsZero() {
		hb = time.Now()
	}
	model := fn.Model
	if model == "" {
		model = "NVIDIA H100 80GB HBM3"
	}
	mem := fn.MemoryMiB
	if mem == 0 {
		mem = 81920
	}
	islands := max(fn.Islands, 1)
	size := (fn.GPUs + islands - 1) / islands
	st := v1alpha1.GPUNodeStatus{DriverVersion: "550.54.15", CUDADriverVersion: 12040, HeartbeatTime: &metav1.Time{Time: hb},
		GPUCount: int32(fn.GPUs), HealthyCount: int32(fn.GPUs), Models: model}
	for i := 0; i < fn.GPUs; i++ {
		island := i / size
		g := v1alpha1.GPU{UUID: FakeGPUUUID(fn.Name, i), Index: int32(i), Model: model, MemoryMiB: mem, ComputeCapability: "9.0",
			NUMANode: int32(island), PCIBusID: fmt.Sprintf("00000000:%02x:00.0", 0x18+8*i),
			Health: v1alpha1.GPUHealth{Healthy: true, Since: &metav1.Time{Time: hb}}}
		if fn.Islands >= 0 {
			for j := island * size; j < min((island+1)*size, fn.GPUs); j++ {
				if j != i {
					g.NVLinkPeers = append(g.NVLinkPeers, FakeGPUUUID(fn.Name, j))
				}
			}
		}
		st.GPUs = append(st.GPUs, g)
	}
	return st
}
