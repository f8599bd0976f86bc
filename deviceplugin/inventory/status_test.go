package inventory

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/deviceplugin/discovery"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
)

func TestBuildStatus(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	inv := discovery.Inventory{DriverVersion: "550.54.15", CUDADriverVersion: 12040, GPUs: []discovery.GPU{
		{UUID: "GPU-a", Index: 0, Model: "H100", MemoryMiB: 81920, ComputeCapability: "9.0", NUMANode: 0, PCIBusID: "00000000:18:00.0", NVLinkPeers: []string{"GPU-b"}},
		{UUID: "GPU-b", Index: 1, Model: "H100", MemoryMiB: 81920, NUMANode: 1, NVLinkPeers: []string{"GPU-a"}},
		{UUID: "GPU-c", Index: 2, Model: "A30", MemoryMiB: 24576, NUMANode: -1},
		{UUID: "GPU-d", Index: 3, Model: "A30", MemoryMiB: 24576, NUMANode: -1},
	}}
	states := map[string]health.Change{
		"GPU-b": {UUID: "GPU-b", Healthy: false, Reason: "XID 79", XID: 79, Since: now.Add(-time.Minute)},
		"GPU-c": {UUID: "GPU-c", Healthy: false, Reason: health.ReasonDoubleBitECC, Since: now},
		"GPU-d": {UUID: "GPU-d", Healthy: false, Reason: health.ReasonGPULost, Since: now},
	}
	st := BuildStatus(inv, states, corev1.TaintEffectNoSchedule, now)
	if st.GPUCount != 4 || st.HealthyCount != 1 || st.Models != "A30,H100" || !st.HeartbeatTime.Time.Equal(now) {
		t.Errorf("summary %d %d %q %v", st.GPUCount, st.HealthyCount, st.Models, st.HeartbeatTime)
	}
	if g := st.GPUs[0]; !g.Health.Healthy || g.PCIBusID != "00000000:18:00.0" || g.NVLinkPeers[0] != "GPU-b" || len(g.Taints) != 0 {
		t.Errorf("healthy GPU %+v", g)
	}
	want := []string{"[]", "[{tessera.io/xid 79 NoSchedule}]", "[{tessera.io/ecc double-bit NoSchedule}]", "[{tessera.io/gpu-lost true NoSchedule}]"}
	for i, g := range st.GPUs {
		if got := fmt.Sprint(g.Taints); got != want[i] && !(want[i] == "[]" && g.Taints == nil) {
			t.Errorf("GPU %d taints %s, want %s", i, got, want[i])
		}
	}
	if !st.GPUs[1].Health.Since.Time.Equal(now.Add(-time.Minute)) || st.GPUs[1].Health.Reason != "XID 79" {
		t.Errorf("health %+v", st.GPUs[1].Health)
	}
}

// TestSetConditions: each heartbeat says the inventory is fresh and whether
// every GPU is healthy; a condition keeps its transition time while its
// status holds, and a False InventoryFresh (set by the scheduler when the
// heartbeat stopped) turns True again with a new one.
func TestSetConditions(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	gpu := func(uuid string, healthy bool, reason string) v1alpha1.GPU {
		return v1alpha1.GPU{UUID: uuid, Health: v1alpha1.GPUHealth{Healthy: healthy, Reason: reason}}
	}
	cond := func(typ string, status metav1.ConditionStatus, reason string, at time.Time, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: reason, ObservedGeneration: 3, LastTransitionTime: metav1.NewTime(at), Message: msg}
	}
	stale := cond(v1alpha1.ConditionInventoryFresh, metav1.ConditionFalse, v1alpha1.ReasonHeartbeatStale, t0, "no heartbeat")
	for _, tc := range []struct {
		name string
		st   v1alpha1.GPUNodeStatus
		old  []metav1.Condition
		want []metav1.Condition
	}{{
		name: "first heartbeat, all healthy",
		st:   v1alpha1.GPUNodeStatus{GPUCount: 2, HealthyCount: 2, GPUs: []v1alpha1.GPU{gpu("G0", true, ""), gpu("G1", true, "")}},
		want: []metav1.Condition{
			cond(v1alpha1.ConditionInventoryFresh, metav1.ConditionTrue, v1alpha1.ReasonHeartbeat, t1, "the device plugin reported 2 GPUs at 2026-12-07T10:01:00Z"),
			cond(v1alpha1.ConditionAllGPUsHealthy, metav1.ConditionTrue, v1alpha1.ReasonAllHealthy, t1, "all 2 GPUs are healthy"),
		},
	}, {
		name: "back from stale, one GPU failed long ago",
		st:   v1alpha1.GPUNodeStatus{GPUCount: 2, HealthyCount: 1, GPUs: []v1alpha1.GPU{gpu("G0", true, ""), gpu("G1", false, "XID 79")}},
		old:  []metav1.Condition{stale, cond(v1alpha1.ConditionAllGPUsHealthy, metav1.ConditionFalse, v1alpha1.ReasonGPUsUnhealthy, t0, "old")},
		want: []metav1.Condition{
			cond(v1alpha1.ConditionInventoryFresh, metav1.ConditionTrue, v1alpha1.ReasonHeartbeat, t1, "the device plugin reported 2 GPUs at 2026-12-07T10:01:00Z"),
			cond(v1alpha1.ConditionAllGPUsHealthy, metav1.ConditionFalse, v1alpha1.ReasonGPUsUnhealthy, t0, "1 of 2 GPUs are unhealthy: G1 (XID 79)"),
		},
	}, {
		name: "no GPUs",
		st:   v1alpha1.GPUNodeStatus{},
		want: []metav1.Condition{
			cond(v1alpha1.ConditionInventoryFresh, metav1.ConditionTrue, v1alpha1.ReasonHeartbeat, t1, "the device plugin reported 0 GPUs at 2026-12-07T10:01:00Z"),
			cond(v1alpha1.ConditionAllGPUsHealthy, metav1.ConditionFalse, v1alpha1.ReasonNoGPUs, t1, "the device plugin found no GPUs (is the NVIDIA driver loaded?)"),
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st
			old := append([]metav1.Condition(nil), tc.old...)
			SetConditions(&st, old, 3, t1)
			if diff := cmp.Diff(tc.want, st.Conditions); diff != "" {
				t.Errorf("conditions (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.old, old); diff != "" {
				t.Errorf("the old conditions were changed (-before +after):\n%s", diff)
			}
		})
	}
}
