package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/component-base/metrics/testutil"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
	"github.com/tessera-gpu/tessera/deviceplugin/metrics"
	"github.com/tessera-gpu/tessera/pkg/assignment"
)

func newTestServer() *Server {
	gpus := []GPU{{UUID: "GPU-a", NUMANode: 0, Healthy: true}, {UUID: "GPU-b", NUMANode: -1, Healthy: false}}
	return New(Options{Dir: "/nonexistent", CDI: true}, handoff.NewLedger([]string{"GPU-a", "GPU-b"}), gpus)
}

func TestAllocateUnknownIDs(t *testing.T) {
	s := newTestServer()
	for _, p := range s.plugins {
		ids := []string{"GPU-a", "GPU-zz"}
		if p.resource == handoff.Percent {
			ids = []string{handoff.PercentID("GPU-a", 1), "GPU-zz::07", "garbage"}
		}
		_, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "GPU-zz") {
			t.Errorf("%s: Allocate(%v) error = %v, want InvalidArgument naming GPU-zz", p.resource, ids, err)
		}
	}
}

func TestAllocateAndDevices(t *testing.T) {
	s := newTestServer()
	whole, percent := s.plugins[0], s.plugins[1]
	resp, err := percent.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{handoff.PercentID("GPU-a", 0), handoff.PercentID("GPU-a", 1)}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := resp.ContainerResponses[0]
	if c.Envs["NVIDIA_VISIBLE_DEVICES"] != "GPU-a" || c.Envs["TESSERA_GPU_PERCENT"] != "2" || c.CdiDevices[0].Name != "nvidia.com/gpu=GPU-a" {
		t.Errorf("response %+v", c)
	}
	// GPU-a now holds shares, so its whole device is reported unhealthy;
	// GPU-b is unhealthy outright.
	for _, d := range whole.devices() {
		if d.Health != pluginapi.Unhealthy {
			t.Errorf("whole device %s is %s", d.ID, d.Health)
		}
	}
	devs := percent.devices()
	if len(devs) != 200 || devs[0].Health != pluginapi.Healthy || devs[0].Topology.Nodes[0].ID != 0 || devs[150].Health != pluginapi.Unhealthy || devs[150].Topology != nil {
		t.Errorf("percent devices: %d, first %+v, GPU-b %+v", len(devs), devs[0], devs[150])
	}
	opts, _ := whole.GetDevicePluginOptions(context.Background(), &pluginapi.Empty{})
	if !opts.GetPreferredAllocationAvailable {
		t.Error("GetPreferredAllocation not advertised")
	}
}

// BenchmarkPreferAndAllocate measures the plugin's own handlers for one
// container: GetPreferredAllocation for a 30 % share on an 8-GPU node with
// 20 pending claims, then Allocate of the preferred IDs.
func BenchmarkPreferAndAllocate(b *testing.B) {
	var uuids, avail []string
	var gpus []GPU
	for i := 0; i < 8; i++ {
		u := fmt.Sprintf("GPU-%d", i)
		uuids = append(uuids, u)
		gpus = append(gpus, GPU{UUID: u, Healthy: true})
		for n := 0; n < handoff.PercentIDs; n++ {
			avail = append(avail, handoff.PercentID(u, n))
		}
	}
	fresh := func() *plugin {
		ledger := handoff.NewLedger(uuids)
		s := New(Options{Dir: "/nonexistent"}, ledger, gpus)
		for i := 0; i < 20; i++ {
			a := assignment.Assignment{"main": {{UUID: uuids[i%8], Percent: 30}}}
			ledger.UpsertPod(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "d", UID: types.UID(fmt.Sprint(i)),
				Annotations: map[string]string{assignment.Annotation: a.String()}}})
		}
		return s.plugins[1]
	}
	ctx := context.Background()
	req := &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: avail, AllocationSize: 30}}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		// A fresh ledger each time, so every iteration serves a known claim.
		b.StopTimer()
		percent := fresh()
		b.StartTimer()
		pref, err := percent.GetPreferredAllocation(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if len(pref.ContainerResponses[0].DeviceIDs) != 30 {
			b.Fatalf("preferred %d IDs", len(pref.ContainerResponses[0].DeviceIDs))
		}
		if _, err := percent.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: pref.ContainerResponses[0].DeviceIDs}}}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPreferredReadsThePodsWhenNothingFits: with no known pod fitting a
// request, GetPreferredAllocation asks SyncPods for the pods the informer
// has not shown and steers to the one it finds; when SyncPods finds none,
// it answers at once instead of waiting MatchWait.
func TestPreferredReadsThePodsWhenNothingFits(t *testing.T) {
	ledger := handoff.NewLedger([]string{"GPU-a", "GPU-b"})
	late := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: "d", UID: "late",
			Annotations: map[string]string{assignment.Annotation: `{"main":[{"uuid":"GPU-b","percent":100}]}`}},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{
			Limits: v1.ResourceList{v1.ResourceName(handoff.Whole): resource.MustParse("1")}}}}},
	}
	syncs := 0
	sync := func(context.Context) (int, error) {
		syncs++
		added, err := ledger.AddPodIfUnknown(late)
		if added {
			return 1, err
		}
		return 0, err
	}
	s := New(Options{Dir: "/nonexistent", SyncPods: sync, MatchWait: time.Hour}, ledger,
		[]GPU{{UUID: "GPU-a", NUMANode: -1, Healthy: true}, {UUID: "GPU-b", NUMANode: -1, Healthy: true}})
	whole := s.plugins[0]
	req := &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: []string{"GPU-a", "GPU-b"}, AllocationSize: 1}}}
	got, err := whole.GetPreferredAllocation(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if ids := got.ContainerResponses[0].DeviceIDs; syncs != 1 || fmt.Sprint(ids) != "[GPU-b]" {
		t.Errorf("preferred %v after %d reads of the pods; want [GPU-b] after 1", ids, syncs)
	}
	if _, err := whole.Allocate(t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"GPU-b"}}}}); err != nil {
		t.Fatal(err)
	}
	// A pod no ledger will ever know (another scheduler's): one read, then
	// the ledger's own choice, the GPU nobody claims.
	got, err = whole.GetPreferredAllocation(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if ids := got.ContainerResponses[0].DeviceIDs; syncs != 2 || fmt.Sprint(ids) != "[GPU-a]" {
		t.Errorf("preferred %v after %d reads of the pods; want [GPU-a] after 2", ids, syncs)
	}
	// A waiting pod whose GPU the kubelet does not offer: answered at once
	// without it, and counted.
	waiting := late.DeepCopy()
	waiting.Name, waiting.UID = "waiting", "waiting"
	waiting.Annotations[assignment.Annotation] = `{"main":[{"uuid":"GPU-b","percent":100}]}`
	if err := ledger.UpsertPod(waiting); err != nil {
		t.Fatal(err)
	}
	before, _ := testutil.GetCounterMetricValue(metrics.Unmatched.WithLabelValues(string(handoff.Whole)))
	req.ContainerRequests[0].AvailableDeviceIDs = []string{"GPU-a"}
	got, err = whole.GetPreferredAllocation(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := testutil.GetCounterMetricValue(metrics.Unmatched.WithLabelValues(string(handoff.Whole)))
	if ids := got.ContainerResponses[0].DeviceIDs; fmt.Sprint(ids) != "[GPU-a]" || after-before != 1 {
		t.Errorf("preferred %v, unmatched_preferences_total went up by %v; want [GPU-a] and 1", ids, after-before)
	}
}
