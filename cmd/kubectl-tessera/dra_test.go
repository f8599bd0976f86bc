package main

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// TestDRANodes: a node whose GPUs NVIDIA's DRA driver publishes appears
// beside the GPUNode nodes, marked (dra), with the pods of the allocated
// claims as holders. A mapped pod bound there holds its GPU through its
// claim and is not listed as unrecorded; a device taint shows.
func TestDRANodes(t *testing.T) {
	f := startFixture(t)
	ctx, c := f.ctx, f.c

	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.node(localcluster.FakeNode{Name: "h100", GPUs: 1})
	const h100 = "NVIDIA H100 80GB HBM3"
	if err := c.AddDRANode(ctx, "dra-a", h100, h100, h100); err != nil {
		t.Fatal(err)
	}
	slice, err := c.Client.ResourceV1().ResourceSlices().Get(ctx, "dra-a-"+drainventory.NVIDIADriver, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	slice.Spec.Devices[2].Taints = []resourceapi.DeviceTaint{{Key: "gpu.nvidia.com/xid", Value: "79", Effect: resourceapi.DeviceTaintEffectNoSchedule}}
	if _, err := c.Client.ResourceV1().ResourceSlices().Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := f.bound("ml", "mapped", "dra-a", gpus(1))
	claim := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "mapped-gpu"},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: "gpu", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: drainventory.NVIDIADriver},
		}}}},
	}
	if claim, err = c.Client.ResourceV1().ResourceClaims("ml").Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	claim.Status = resourceapi.ResourceClaimStatus{
		Allocation: &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{
			{Request: "gpu", Driver: drainventory.NVIDIADriver, Pool: "dra-a", Device: "gpu-1"},
		}}},
		ReservedFor: []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: p.Name, UID: p.UID}},
	}
	if _, err := c.Client.ResourceV1().ResourceClaims("ml").UpdateStatus(ctx, claim, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	compare(t, "dra-nodes", transcript(ctx, c.Kubeconfig, []string{"nodes"}))
	compare(t, "dra-nodes-wide", transcript(ctx, c.Kubeconfig, []string{"-o", "wide"}))
}
