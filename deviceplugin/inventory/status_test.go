package inventory

import (
	"fmt"
	corev1 "k8s.io/api/core/v1"
	"testing"
	"time"

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
