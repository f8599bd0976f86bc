package tesseragpu

import (
	"context"
	"slices"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/plugins/tesseradra"
)

// On a DRA node the allocator picks the devices, first fit in the order the
// slices list them. TesseraDynamicResources asks TesseraGPU for the devices
// it would take there, the same choice Reserve makes on a device-plugin
// node, and lists those first; the allocator then takes them whenever they
// satisfy the claims.

var _ tesseradra.Preferences = &TesseraGPU{}

// DeviceOrder returns, for a pod whose GPUs DRA serves (ResourceClaims of
// GPU classes, or a GPU resource a DeviceClass maps), the devices Tessera
// would take on each DRA node: its placement under the profile's strategy.
// It is nil for other pods, and the function returns nil for nodes Tessera
// does not read from ResourceSlices or where the pod does not fit.
func (pl *TesseraGPU) DeviceOrder(ctx context.Context, pod *v1.Pod) func(node string) []string {
	req, claimOnly := pl.draRequest(pod)
	if req == nil || !pl.synced() {
		return nil
	}
	s := &cycleState{req: req, cpu: podCPU(pod), now: pl.now(), claimOnly: claimOnly}
	logger := klog.FromContext(ctx)
	return func(node string) []string {
		st := pl.cache.Slot(node).State()
		if st == nil || !st.DRA {
			return nil
		}
		f, status := pl.fit(s, st)
		if status != nil {
			return nil
		}
		p := pl.scorer.placement(s, f, node)
		// Whole GPUs first, then the GPU of each share: a share claim
		// takes the first GPU with enough percent left.
		var ids []string
		for i := range st.Inv.Devices {
			if p.Whole&(1<<uint(i)) != 0 {
				ids = append(ids, st.Inv.Devices[i].ID)
			}
		}
		for k := range s.req.Shares {
			if id := st.Inv.Devices[p.Share[k]].ID; !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		logger.V(5).Info("Preferred DRA devices", "pod", klog.KObj(pod), "node", node, "devices", ids)
		return ids
	}
}

// draRequest is the GPU request DRA serves for the pod: its claims' (see
// claimRequest; claimOnly is then set), or its GPU resources when a
// DeviceClass maps them all.
func (pl *TesseraGPU) draRequest(pod *v1.Pod) (req *device.Request, claimOnly bool) {
	req, err := gpu.ParsePod(pod)
	if err != nil {
		return nil, false
	}
	if req.Empty() {
		return pl.claimRequest(pod), true
	}
	if !pl.draMapped(req) {
		return nil, false
	}
	req.ComparisonOperators = pl.comparisonOperators
	return req, false
}

// ClaimPending counts the devices of an allocation DynamicResources made in
// Reserve at once, so that the next pod's choice sees them taken.
func (pl *TesseraGPU) ClaimPending(claim *resourceapi.ResourceClaim) { pl.dra.setPending(claim) }

// ClaimSettled ends a pending allocation (see draFeed.settle).
func (pl *TesseraGPU) ClaimSettled(uid types.UID, now *resourceapi.ResourceClaim) {
	pl.dra.settle(uid, now)
}
