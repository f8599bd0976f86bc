package report

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

// TestFileClaimShares: claims sharing a GPU of Tessera's DRA format by
// percent capacity show as holders of their percent, and the GPU as used
// by their sum; a claim reserved for no pod is shown by its name.
func TestFileClaimShares(t *testing.T) {
	share := func(name, pod string, percent int64) *resourceapi.ResourceClaim {
		c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: name}}
		c.Status.Allocation = &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{{
			Request: "gpu", Driver: drainventory.TesseraDriver, Pool: "n", Device: "gpu-0", ShareID: new(types.UID(name)),
			ConsumedCapacity: map[resourceapi.QualifiedName]resource.Quantity{drainventory.CapacityPercent: *resource.NewQuantity(percent, resource.DecimalSI)},
		}}}}
		if pod != "" {
			c.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: pod}}
		}
		return c
	}
	row := &GPURow{}
	byID := map[string]*GPURow{drainventory.DeviceID(drainventory.TesseraDriver, "n", "gpu-0"): row}
	fileClaim(byID, share("a", "train", 30))
	fileClaim(byID, share("b", "", 50))
	want := &GPURow{Used: 80, Holders: []Holder{
		{Namespace: "ml", Pod: "train", Container: "claim a", Percent: 30},
		{Namespace: "ml", Pod: "-", Container: "claim b", Percent: 50},
	}}
	if diff := cmp.Diff(want, row); diff != "" {
		t.Errorf("row (-want +got):\n%s", diff)
	}
}
