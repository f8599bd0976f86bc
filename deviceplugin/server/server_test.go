package server

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
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
