// Package drainventory reads the GPUs that a DRA driver publishes in
// ResourceSlices into Tessera's vendor-neutral device model
// (pkg/device), so that nodes managed by a DRA driver can be judged and
// scored like nodes that run Tessera's device plugin.
//
// It understands two drivers: NVIDIA's (gpu.nvidia.com), by the attribute
// names that driver publishes, and Tessera's own (gpu.tessera.io). Other
// drivers' devices, and NVIDIA's MIG and VFIO devices, are not GPUs Tessera
// models and are left out.
package drainventory

import (
	"fmt"
	"slices"
	"strings"
	"time"

	resourceapi "k8s.io/api/resource/v1"

	"github.com/tessera-gpu/tessera/pkg/device"
)

const (
	// NVIDIADriver is the driver name of NVIDIA's DRA driver for GPUs.
	NVIDIADriver = "gpu.nvidia.com"
	// TesseraDriver is the driver name of Tessera's node agent in DRA mode.
	TesseraDriver = "gpu.tessera.io"
)

// Attribute and capacity names, unqualified: a slice may write them bare
// (in the driver's own domain) or qualified with the driver's name.
const (
	// attrType is NVIDIA's device type: "gpu", "mig" or "vfio".
	attrType = "type"
	// attrProductName is NVIDIA's model name, as NVML reports it.
	attrProductName = "productName"
	// attrModel is Tessera's model name, as NVML reports it.
	attrModel = "model"
	// attrNUMANode is Tessera's NUMA node of the GPU.
	attrNUMANode = "numaNode"
	// attrNVLinkIsland is Tessera's NVLink island: GPUs of one island are
	// linked with each other.
	attrNVLinkIsland = "nvlinkIsland"
	// attrUUID and attrIndex are the GPU's NVML UUID and index, in both
	// drivers.
	attrUUID  = "uuid"
	attrIndex = "index"
	// capMemory is the device memory, in both drivers.
	capMemory = "memory"
)

// CapacityPercent is the capacity by which Tessera's driver shares a GPU:
// 100 per GPU, consumed by each allocation (consumable capacity, KEP-5075).
// A claim asks a share with capacity.requests {percent: N}.
const CapacityPercent = "percent"

// Drivers are the drivers whose devices this package reads.
var Drivers = []string{NVIDIADriver, TesseraDriver}

// IsGPUDriver reports whether driver publishes GPUs this package reads.
func IsGPUDriver(driver string) bool { return slices.Contains(Drivers, driver) }

// PoolID names a driver's pool: the part of DeviceID before the device's
// name.
func PoolID(driver, pool string) string { return driver + "/" + pool }

// PoolOf returns the PoolID part of a DeviceID.
func PoolOf(id string) string {
	i := strings.LastIndexByte(id, '/')
	if i < 0 {
		return ""
	}
	return id[:i]
}

// DeviceID is the ID a DRA device has in Tessera's inventory: its driver,
// pool and name, which is how a claim's allocation result names it.
func DeviceID(driver, pool, name string) string { return PoolID(driver, pool) + "/" + name }

// GPU is one GPU a DRA driver publishes, as Tessera reads it.
type GPU struct {
	// DeviceSpec is the GPU in the device model; its ID is DeviceID.
	device.DeviceSpec
	// UUID and Index are the driver's attributes "uuid" and "index", where
	// it publishes them ("" and -1 otherwise).
	UUID  string
	Index int
	// Island is the GPU's NVLink island, qualified by driver and pool;
	// empty when the driver does not say.
	Island string
	// Taints are the device's taints as published.
	Taints []resourceapi.DeviceTaint
}

// GPUs returns the GPUs that the GPU drivers' ResourceSlices local to node
// (spec.nodeName) publish, in a fixed order (by slice name, then as
// listed). Of each pool only the slices of its newest generation count, as
// for the allocator. problems name the devices left out for a reason a
// driver's maintainer should see, such as a GPU without a model.
func GPUs(node string, all []*resourceapi.ResourceSlice) (gpus []GPU, problems []string) {
	type poolKey struct{ driver, pool string }
	newest := map[poolKey]int64{}
	var mine []*resourceapi.ResourceSlice
	for _, s := range all {
		if s.Spec.NodeName == nil || *s.Spec.NodeName != node || !IsGPUDriver(s.Spec.Driver) {
			continue
		}
		mine = append(mine, s)
		k := poolKey{s.Spec.Driver, s.Spec.Pool.Name}
		if g, ok := newest[k]; !ok || s.Spec.Pool.Generation > g {
			newest[k] = s.Spec.Pool.Generation
		}
	}
	// The same devices in the same order whatever order the informer
	// lists the slices in.
	slices.SortFunc(mine, func(a, b *resourceapi.ResourceSlice) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range mine {
		if s.Spec.Pool.Generation != newest[poolKey{s.Spec.Driver, s.Spec.Pool.Name}] {
			continue
		}
		for i := range s.Spec.Devices {
			g, problem := readGPU(s.Spec.Driver, s.Spec.Pool.Name, &s.Spec.Devices[i])
			if problem != "" {
				problems = append(problems, problem)
			}
			if g != nil {
				gpus = append(gpus, *g)
			}
		}
	}
	return gpus, problems
}

// Inventory builds the inventory of node from what GPUs returns: GPUs of
// one NVLink island are linked with each other. The inventory is nil when
// the node has no GPU; problems are GPUs' and the inventory's, also when
// it is nil.
func Inventory(node string, all []*resourceapi.ResourceSlice) (inv *device.Inventory, problems []string) {
	gpus, problems := GPUs(node, all)
	if len(gpus) == 0 {
		return nil, problems
	}
	islands := map[string][]string{}
	for _, g := range gpus {
		if g.Island != "" {
			islands[g.Island] = append(islands[g.Island], g.ID)
		}
	}
	specs := make([]device.DeviceSpec, 0, len(gpus))
	for _, g := range gpus {
		spec := g.DeviceSpec
		if g.Island != "" {
			spec.LinkIDs = slices.DeleteFunc(slices.Clone(islands[g.Island]), func(id string) bool { return id == g.ID })
		}
		specs = append(specs, spec)
	}
	// A slice has no heartbeat: the kubelet deletes a node's slices when
	// its driver goes, so a listed device is a current one.
	inv = device.NewInventory(node, time.Time{}, specs)
	inv.Problems = append(problems, inv.Problems...)
	return inv, inv.Problems
}

// readGPU reads one device. It returns nil for a device that is not a GPU
// Tessera models, with a problem when the device should have been one but
// cannot be read.
func readGPU(driver, pool string, d *resourceapi.Device) (*GPU, string) {
	id := DeviceID(driver, pool, d.Name)
	if t, ok := stringAttr(d, driver, attrType); ok && t != "gpu" {
		return nil, ""
	}
	model, ok := stringAttr(d, driver, attrProductName)
	if !ok {
		model, ok = stringAttr(d, driver, attrModel)
	}
	if !ok || model == "" {
		return nil, fmt.Sprintf("device %s has no model (attribute %s or %s)", id, attrProductName, attrModel)
	}
	g := &GPU{DeviceSpec: device.DeviceSpec{ID: id, Model: model, NUMANode: -1, Healthy: true}, Index: -1, Taints: d.Taints}
	g.UUID, _ = stringAttr(d, driver, attrUUID)
	if n, ok := intAttr(d, driver, attrIndex); ok {
		g.Index = int(n)
	}
	if q, ok := capacity(d, driver, capMemory); ok {
		g.MemoryMiB = q.Value.Value() / (1 << 20)
	}
	if n, ok := intAttr(d, driver, attrNUMANode); ok {
		g.NUMANode = int(n)
	}
	if n, ok := intAttr(d, driver, attrNVLinkIsland); ok {
		g.Island = fmt.Sprintf("%s/%s/%d", driver, pool, n)
	}
	// A device the allocator would not hand out without a toleration in
	// the claim takes no new pods here either.
	for _, t := range d.Taints {
		if t.Effect == resourceapi.DeviceTaintEffectNoSchedule || t.Effect == resourceapi.DeviceTaintEffectNoExecute {
			g.Healthy = false
		}
	}
	return g, ""
}

func attribute(d *resourceapi.Device, driver, name string) (resourceapi.DeviceAttribute, bool) {
	if a, ok := d.Attributes[resourceapi.QualifiedName(name)]; ok {
		return a, true
	}
	a, ok := d.Attributes[resourceapi.QualifiedName(driver+"/"+name)]
	return a, ok
}

func stringAttr(d *resourceapi.Device, driver, name string) (string, bool) {
	a, ok := attribute(d, driver, name)
	if !ok || a.StringValue == nil {
		return "", false
	}
	return *a.StringValue, true
}

func intAttr(d *resourceapi.Device, driver, name string) (int64, bool) {
	a, ok := attribute(d, driver, name)
	if !ok || a.IntValue == nil {
		return 0, false
	}
	return *a.IntValue, true
}

func capacity(d *resourceapi.Device, driver, name string) (resourceapi.DeviceCapacity, bool) {
	if c, ok := d.Capacity[resourceapi.QualifiedName(name)]; ok {
		return c, true
	}
	c, ok := d.Capacity[resourceapi.QualifiedName(driver+"/"+name)]
	return c, ok
}

// Held is a GPU that an allocated claim holds: the device, by DeviceID,
// and how much of it, in device.FullUnits.
type Held struct {
	ID    string
	Units int
}

// Allocated returns what the claim's allocation holds of the GPU drivers'
// devices; nil when it holds none. A result holds its device whole, except
// one of a device that allows several allocations (ShareID), which holds
// the percent capacity it consumed (Tessera's driver publishes it) and
// nothing where it consumed none (another driver's sharing, which the
// scheduler's own accounting does not count as holding the device either).
// A result with admin access holds nothing (a monitoring agent's, say).
func Allocated(claim *resourceapi.ResourceClaim) []Held {
	if claim.Status.Allocation == nil {
		return nil
	}
	var out []Held
	for _, r := range claim.Status.Allocation.Devices.Results {
		if !IsGPUDriver(r.Driver) || (r.AdminAccess != nil && *r.AdminAccess) {
			continue
		}
		units := device.FullUnits
		if r.ShareID != nil {
			units = consumedPercent(r)
			if units == 0 {
				continue
			}
		}
		out = append(out, Held{ID: DeviceID(r.Driver, r.Pool, r.Device), Units: units})
	}
	return out
}

// consumedPercent is the percent capacity a shared result consumed, in
// device.FullUnits, 0 if none.
func consumedPercent(r resourceapi.DeviceRequestAllocationResult) int {
	q, ok := r.ConsumedCapacity[resourceapi.QualifiedName(CapacityPercent)]
	if !ok {
		q, ok = r.ConsumedCapacity[resourceapi.QualifiedName(r.Driver+"/"+CapacityPercent)]
	}
	if !ok {
		return 0
	}
	return int(min(max(q.Value(), 0), device.FullUnits))
}

// IsGPUClass reports whether a DeviceClass selects whole GPUs of a driver
// this package reads: it maps nvidia.com/gpu, or one of its CEL selectors
// names such a driver (device.driver == "gpu.nvidia.com", as the classes of
// NVIDIA's driver do) and none pins the device type to anything but "gpu"
// (NVIDIA's MIG and VFIO classes select the same driver with type "mig" or
// "vfio").
func IsGPUClass(class *resourceapi.DeviceClass, gpuResource string) bool {
	if class == nil {
		return false
	}
	if class.Spec.ExtendedResourceName != nil && *class.Spec.ExtendedResourceName == gpuResource {
		return true
	}
	gpuDriver := false
	for _, s := range class.Spec.Selectors {
		if s.CEL == nil {
			continue
		}
		expr := strings.Join(strings.Fields(s.CEL.Expression), "")
		for _, d := range Drivers {
			if strings.Contains(expr, `device.driver=="`+d+`"`) || strings.Contains(expr, `device.driver=='`+d+`'`) {
				gpuDriver = true
			}
		}
		for _, t := range pinnedTypes(expr) {
			if t != "gpu" {
				return false
			}
		}
	}
	return gpuDriver
}

// pinnedTypes returns the values a whitespace-free CEL expression compares
// a device's type attribute with (....type=="mig", ....type=='gpu').
func pinnedTypes(expr string) []string {
	var out []string
	for rest := expr; ; {
		i := strings.Index(rest, ".type==")
		if i < 0 {
			return out
		}
		rest = rest[i+len(".type=="):]
		if rest == "" || (rest[0] != '"' && rest[0] != '\'') {
			continue
		}
		q := rest[0]
		if j := strings.IndexByte(rest[1:], q); j >= 0 {
			out = append(out, rest[1:1+j])
			rest = rest[1+j:]
		}
	}
}

// SelectedModels reads the GPU models a CEL selector allows, where it says
// so in one of the plain forms a user writes for it, on a driver's model
// attribute (Tessera's "model", NVIDIA's "productName"):
//
//	device.attributes["gpu.tessera.io"].model == "NVIDIA H100 80GB HBM3"
//	device.attributes["gpu.nvidia.com"].productName in ["A100", "H100"]
//
// ok is false for any other expression: the allocator still applies it,
// but Tessera does not know which models it allows.
func SelectedModels(expr string) (models []string, ok bool) {
	e := strings.TrimSpace(expr)
	for _, d := range Drivers {
		for _, attr := range []string{attrModel, attrProductName} {
			for _, q := range []string{`"`, `'`} {
				prefix := "device.attributes[" + q + d + q + "]." + attr
				rest, found := strings.CutPrefix(e, prefix)
				if !found {
					continue
				}
				rest = strings.TrimSpace(rest)
				switch {
				case strings.HasPrefix(rest, "=="):
					m, ok := celString(strings.TrimSpace(rest[2:]))
					if !ok {
						return nil, false
					}
					return []string{m}, true
				case strings.HasPrefix(rest, "in"):
					list := strings.TrimSpace(rest[2:])
					if !strings.HasPrefix(list, "[") || !strings.HasSuffix(list, "]") {
						return nil, false
					}
					for _, item := range strings.Split(list[1:len(list)-1], ",") {
						m, ok := celString(strings.TrimSpace(item))
						if !ok {
							return nil, false
						}
						models = append(models, m)
					}
					return models, len(models) > 0
				}
				return nil, false
			}
		}
	}
	return nil, false
}

// celString reads a CEL string literal without escapes.
func celString(s string) (string, bool) {
	if len(s) < 2 || (s[0] != '"' && s[0] != '\'') || s[len(s)-1] != s[0] {
		return "", false
	}
	v := s[1 : len(s)-1]
	if strings.ContainsAny(v, `\"'`) {
		return "", false
	}
	return v, true
}
