package tesseragpu

import (
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// Nodes whose GPUs are managed by a DRA driver (NVIDIA's, say) have no
// GPUNode, so TesseraGPU knows nothing of their GPUs. Since Kubernetes 1.37
// a DeviceClass may map an extended resource such as nvidia.com/gpu
// (spec.extendedResourceName, KEP-5004): on a node that has none of that
// resource allocatable, the in-tree DynamicResources plugin serves the
// request from the node's ResourceSlices and picks the devices. TesseraGPU
// then leaves the node to DynamicResources, so that one pod spec runs on
// device-plugin and DRA nodes alike, rather than rejecting it for want of
// an inventory. It does not score such nodes (they rank after device-plugin
// nodes that fit) and writes no assignment for them.

// requestedResources returns the extended resources a GPU request asks
// for: whole GPUs, shares, or both.
func requestedResources(req *device.Request) []v1.ResourceName {
	var out []v1.ResourceName
	if req.Whole > 0 {
		out = append(out, gpu.ResourceGPU)
	}
	if len(req.Shares) > 0 {
		out = append(out, gpu.ResourcePercent)
	}
	return out
}

// draMapped reports whether a DeviceClass maps every GPU resource the
// request asks for, so that DynamicResources can serve it on nodes without
// a device plugin for it.
func (pl *TesseraGPU) draMapped(req *device.Request) bool {
	if pl.classes == nil {
		return false
	}
	names := requestedResources(req)
	for _, r := range names {
		if pl.classes.GetDeviceClass(r) == nil {
			return false
		}
	}
	return len(names) > 0
}

// servedByDRA reports whether the node would serve the request through
// DRA: none of the requested resources is allocatable there, which is the
// rule DynamicResources applies to a mapped extended resource. A node with
// the device plugin's resources stays Tessera's own.
func servedByDRA(req *device.Request, ni fwk.NodeInfo) bool {
	// Filter calls it on every node without inventory: no allocation.
	alloc := ni.GetAllocatable().GetScalarResources()
	if req.Whole > 0 && alloc[gpu.ResourceGPU] != 0 {
		return false
	}
	return len(req.Shares) == 0 || alloc[gpu.ResourcePercent] == 0
}

// filterDRA is Filter's verdict on a node without GPU inventory that
// serves the pod's GPUs through DRA: what DynamicResources cannot check for
// Tessera is refused, the rest is left to it.
func filterDRA(req *device.Request) *fwk.Status {
	if len(req.Models) > 0 {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, reasonDRAModels)
	}
	return nil
}

// filterDRAState is what Filter checks first on a node whose GPUs Tessera
// reads from ResourceSlices. The DRA allocator picks the devices and knows
// nothing of tessera.io/gpu-models, so a model list holds there only when
// every GPU of the node is of an allowed model.
func filterDRAState(st *gpucache.NodeState, req *device.Request) *fwk.Status {
	if len(req.Models) == 0 {
		return nil
	}
	for _, m := range st.Inv.Models() {
		if !slices.Contains(req.Models, m) {
			return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, reasonDRAModels)
		}
	}
	return nil
}

// leftToDRA reports whether Reserve leaves the pod's devices on node to
// the DRA allocator: the node's GPUs come from ResourceSlices (st.DRA), or
// Tessera knows none of them and the node serves the pod through DRA.
func (pl *TesseraGPU) leftToDRA(s *cycleState, st *gpucache.NodeState, node string) bool {
	if st != nil && st.DRA {
		return true
	}
	if !s.dra || (st != nil && st.Inv != nil) {
		return false
	}
	ni, err := pl.handle.SnapshotSharedLister().NodeInfos().Get(node)
	return err == nil && servedByDRA(s.req, ni)
}

// claimRequest is what a pod's unallocated ResourceClaims ask of GPU
// classes (drainventory.IsGPUClass), for ranking the DRA nodes that could
// serve them and for choosing their devices: each request for an exact
// count of devices is that many whole GPUs, or, when it asks one device
// with a percent capacity below 100 (Tessera's driver shares GPUs so), a
// share of one GPU. It is nil when the pod asks no GPU that way, and when
// any claim is one Tessera cannot size (not generated yet, all devices of
// a class, a prioritized list, capacity other than percent and memory,
// several shared devices in one request): DynamicResources alone decides
// those. Memory a share asks is left to the allocator. Models the requests'
// CEL selectors allow in a plain form (drainventory.SelectedModels) are
// the request's models, so that nodes and GPUs are judged as for a pod
// naming them in tessera.io/gpu-models.
func (pl *TesseraGPU) claimRequest(pod *v1.Pod) *device.Request {
	if pl.draManager == nil || len(pod.Spec.ResourceClaims) == 0 {
		return nil
	}
	generated := map[string]*string{}
	for _, st := range pod.Status.ResourceClaimStatuses {
		generated[st.Name] = st.ResourceClaimName
	}
	whole := 0
	var shares []device.ContainerDemand
	// The models the GPU requests' selectors allow, where every request
	// allows the same ones (device.Request has one list for the pod).
	var models []string
	modelsKnown, gpuRequests := true, 0
	for _, rc := range pod.Spec.ResourceClaims {
		name := rc.ResourceClaimName
		if name == nil {
			name = generated[rc.Name]
		}
		if name == nil {
			return nil
		}
		claim, err := pl.draManager.ResourceClaims().Get(pod.Namespace, *name)
		if err != nil {
			return nil
		}
		if claim.Status.Allocation != nil {
			// Shared and already allocated: it takes no more devices.
			continue
		}
		for _, r := range claim.Spec.Devices.Requests {
			if r.Exactly == nil {
				return nil
			}
			class, err := pl.draManager.DeviceClasses().Get(r.Exactly.DeviceClassName)
			if err != nil {
				return nil
			}
			if !drainventory.IsGPUClass(class, string(gpu.ResourceGPU)) {
				continue
			}
			if r.Exactly.AllocationMode == resourceapi.DeviceAllocationModeAll {
				return nil
			}
			m := selectedModels(r.Exactly.Selectors)
			if gpuRequests == 0 {
				models = m
			} else if !slices.Equal(models, m) {
				modelsKnown = false
			}
			gpuRequests++
			n := int(r.Exactly.Count)
			if n == 0 {
				n = 1
			}
			percent, ok := requestedPercent(r.Exactly.Capacity)
			switch {
			case !ok:
				return nil
			case percent >= device.FullUnits:
				whole += n
			case n > 1:
				return nil
			default:
				shares = append(shares, device.ContainerDemand{Name: claim.Name + "/" + r.Name, Units: percent})
			}
		}
	}
	if (whole == 0 && len(shares) == 0) || whole > device.MaxDevicesPerNode {
		return nil
	}
	demands := shares
	if whole > 0 {
		demands = append(demands, device.ContainerDemand{Name: "claims", Count: whole})
	}
	if !modelsKnown {
		models = nil
	}
	req, err := device.NewRequest(demands, models, nil)
	if err != nil {
		return nil
	}
	return req
}

// selectedModels is the sorted set of models a request's selectors allow
// (drainventory.SelectedModels; several selectors must all hold), nil when
// they say nothing Tessera can read about models.
func selectedModels(sels []resourceapi.DeviceSelector) []string {
	var out []string
	seen := false
	for _, sel := range sels {
		if sel.CEL == nil {
			continue
		}
		m, ok := drainventory.SelectedModels(sel.CEL.Expression)
		if !ok {
			continue
		}
		slices.Sort(m)
		if !seen {
			out, seen = m, true
			continue
		}
		out = slices.DeleteFunc(out, func(x string) bool { return !slices.Contains(m, x) })
	}
	if seen && len(out) == 0 {
		// Selectors no model satisfies: leave it to the allocator.
		return nil
	}
	return slices.Compact(out)
}

// requestedPercent is the percent of a device a request's capacity asks
// (drainventory.CapacityPercent, bare or qualified), FullUnits when it asks
// none; ok is false when it asks a capacity Tessera does not size by.
func requestedPercent(c *resourceapi.CapacityRequirements) (percent int, ok bool) {
	percent = device.FullUnits
	if c == nil {
		return percent, true
	}
	for name, q := range c.Requests {
		base := string(name)
		if i := strings.LastIndexByte(base, '/'); i >= 0 {
			base = base[i+1:]
		}
		switch base {
		case drainventory.CapacityPercent:
			percent = int(min(max(q.Value(), 1), device.FullUnits))
		case "memory":
		default:
			return 0, false
		}
	}
	return percent, true
}
