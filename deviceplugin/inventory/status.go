// Package inventory publishes a node's GPU inventory as its GPUNode: what
// discovery found, the health the monitor reports with the device taints
// that follow from it, and a heartbeat that tells the scheduler the
// inventory is current. It writes only its own node's GPUNode, and only
// through the status subresource, so administrators keep the spec.
package inventory

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/deviceplugin/discovery"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
)

const (
	// XIDTaintKey is the device taint put on a GPU after a critical XID;
	// its value is the XID number.
	XIDTaintKey = "tessera.io/xid"
	// ECCTaintKey is the device taint put on a GPU after a double-bit ECC
	// error.
	ECCTaintKey = "tessera.io/ecc"
	// LostTaintKey is the device taint put on a GPU that stopped answering.
	LostTaintKey = "tessera.io/gpu-lost"
)

// BuildStatus turns discovery results and health into a GPUNode status.
// GPUs without a health entry count as healthy since now.
func BuildStatus(inv discovery.Inventory, states map[string]health.Change, effect corev1.TaintEffect, now time.Time) v1alpha1.GPUNodeStatus {
	st := v1alpha1.GPUNodeStatus{
		DriverVersion:     inv.DriverVersion,
		CUDADriverVersion: int32(inv.CUDADriverVersion),
		HeartbeatTime:     &metav1.Time{Time: now},
	}
	models := map[string]bool{}
	for _, g := range inv.GPUs {
		h, ok := states[g.UUID]
		if !ok {
			h = health.Change{UUID: g.UUID, Healthy: true, Since: now}
		}
		since := metav1.NewTime(h.Since)
		gpu := v1alpha1.GPU{
			UUID: g.UUID, Index: int32(g.Index), Model: g.Model, MemoryMiB: g.MemoryMiB,
			ComputeCapability: g.ComputeCapability, NUMANode: int32(g.NUMANode), PCIBusID: g.PCIBusID,
			NVLinkPeers: append([]string(nil), g.NVLinkPeers...),
			Health:      v1alpha1.GPUHealth{Healthy: h.Healthy, Reason: h.Reason, Since: &since},
			Taints:      Taints(h, effect),
		}
		if gpu.Health.Healthy {
			st.HealthyCount++
		}
		st.GPUs = append(st.GPUs, gpu)
		models[g.Model] = true
	}
	st.GPUCount = int32(len(st.GPUs))
	names := make([]string, 0, len(models))
	for m := range models {
		names = append(names, m)
	}
	sort.Strings(names)
	st.Models = strings.Join(names, ",")
	return st
}

// SetConditions puts the heartbeat's conditions on st: InventoryFresh True
// (the plugin is reporting) and AllGPUsHealthy from the GPUs' health. old
// are the conditions the GPUNode has now: a condition whose status does not
// change keeps its transition time, and conditions of other types (none
// today) are kept. generation is the GPUNode's metadata.generation, so that
// a reader can tell the conditions speak for its current spec.
func SetConditions(st *v1alpha1.GPUNodeStatus, old []metav1.Condition, generation int64, now time.Time) {
	st.Conditions = append([]metav1.Condition(nil), old...)
	at := metav1.NewTime(now)
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionInventoryFresh, Status: metav1.ConditionTrue, ObservedGeneration: generation,
		LastTransitionTime: at, Reason: v1alpha1.ReasonHeartbeat,
		Message: fmt.Sprintf("the device plugin reported %d GPUs at %s", st.GPUCount, now.UTC().Format(time.RFC3339)),
	})
	healthy := metav1.Condition{Type: v1alpha1.ConditionAllGPUsHealthy, ObservedGeneration: generation, LastTransitionTime: at}
	switch {
	case st.GPUCount == 0:
		healthy.Status, healthy.Reason = metav1.ConditionFalse, v1alpha1.ReasonNoGPUs
		healthy.Message = "the device plugin found no GPUs (is the NVIDIA driver loaded?)"
	case st.HealthyCount == st.GPUCount:
		healthy.Status, healthy.Reason = metav1.ConditionTrue, v1alpha1.ReasonAllHealthy
		healthy.Message = fmt.Sprintf("all %d GPUs are healthy", st.GPUCount)
	default:
		var bad []string
		for _, g := range st.GPUs {
			if !g.Health.Healthy {
				bad = append(bad, fmt.Sprintf("%s (%s)", g.UUID, g.Health.Reason))
			}
		}
		healthy.Status, healthy.Reason = metav1.ConditionFalse, v1alpha1.ReasonGPUsUnhealthy
		healthy.Message = fmt.Sprintf("%d of %d GPUs are unhealthy: %s", len(bad), st.GPUCount, strings.Join(bad, ", "))
	}
	meta.SetStatusCondition(&st.Conditions, healthy)
}

// Taints are the device taints that follow from a GPU's health: one that
// names the XID, the ECC error or the loss, so that pods can tolerate a
// specific, known-benign failure while every other pod stays away. Effect
// is NoSchedule (keep new pods off the GPU) or NoExecute (also evict the
// pods on it that do not tolerate the taint).
func Taints(h health.Change, effect corev1.TaintEffect) []v1alpha1.DeviceTaint {
	if h.Healthy {
		return nil
	}
	switch {
	case h.XID != 0:
		return []v1alpha1.DeviceTaint{{Key: XIDTaintKey, Value: fmt.Sprint(h.XID), Effect: effect}}
	case h.Reason == health.ReasonDoubleBitECC:
		return []v1alpha1.DeviceTaint{{Key: ECCTaintKey, Value: "double-bit", Effect: effect}}
	case h.Reason == health.ReasonGPULost:
		return []v1alpha1.DeviceTaint{{Key: LostTaintKey, Value: "true", Effect: effect}}
	}
	// Other causes (failed queries, failing event waits) are transient
	// conditions of the driver, not of the GPU: unhealthy is enough.
	return nil
}
