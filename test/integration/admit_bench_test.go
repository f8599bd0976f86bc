package integration

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
	"github.com/tessera-gpu/tessera/pkg/assignment"
)

// BenchmarkKubeletAdmit measures what the device plugin adds to a pod's
// admission by the real kubelet device manager: GetPreferredAllocation
// (steering from the ledger) and Allocate over gRPC, for a 10 % share whose
// claim the ledger knows. Besides the mean it reports p50 and p99.
func BenchmarkKubeletAdmit(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k, ledger, _, inv := pluginOnKubelet(ctx, b, "bench", false)
	uuids := uuidsOf(inv)
	for k.allocatable(v1.ResourceName(handoff.Percent)) != 800 {
		time.Sleep(10 * time.Millisecond)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := assignedPod(fmt.Sprintf("p%d", i), assignment.Assignment{"main": {{UUID: uuids[i%8], Percent: 10}}}, "tessera.io/gpu-percent", 10)
		ledger.UpsertPod(p)
		start := time.Now()
		if err := k.admit(ctx, p); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		// The pod ends: the next admission's bookkeeping frees its share.
		k.mu.Lock()
		delete(k.pods, string(p.UID))
		k.mu.Unlock()
		ledger.DeletePod(p.UID)
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
