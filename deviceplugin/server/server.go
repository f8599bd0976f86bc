// Package server serves Tessera's GPUs to the kubelet through the
// device-plugin API (v1beta1): nvidia.com/gpu with one device per GPU, and
// tessera.io/gpu-percent with 100 devices per GPU. Both resources share one
// hand-off ledger, which steers the kubelet's choices to the scheduler's,
// keeps the two resources' counts consistent by reporting device IDs
// unhealthy, and learns what the kubelet really did.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/tessera-gpu/tessera/deviceplugin/cdi"
	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
	"github.com/tessera-gpu/tessera/deviceplugin/metrics"
)

// GPU is what the server needs to know of one GPU.
type GPU struct {
	UUID     string
	NUMANode int
	Healthy  bool
}

// Options configure the server.
type Options struct {
	// Dir is the kubelet's device-plugin directory, holding kubelet.sock.
	Dir string
	// CDI adds CDI device names (nvidia.com/gpu=<uuid>) to allocations.
	CDI bool
	// OnAllocate, if set, is called after every successful Allocate, e.g.
	// to reconcile with the kubelet's record soon.
	OnAllocate func()
	// SyncPods, if set, records in the ledger the node's pods that its
	// informer has not shown yet, from a consistent read of the API. It is
	// called when no waiting pod fits a request, before steering without
	// one.
	SyncPods func(context.Context) (int, error)
	// MatchWait is how long GetPreferredAllocation waits for the pod
	// informer to show the pod being admitted when SyncPods is unset or
	// fails; 0 means 2 seconds.
	MatchWait time.Duration
}

// Server runs one device-plugin endpoint per resource.
type Server struct {
	opts    Options
	ledger  *handoff.Ledger
	mu      sync.Mutex
	gpus    []GPU
	plugins []*plugin
}

// New returns a server for the ledger's GPUs.
func New(opts Options, ledger *handoff.Ledger, gpus []GPU) *Server {
	if opts.MatchWait <= 0 {
		opts.MatchWait = 2 * time.Second
	}
	s := &Server{opts: opts, ledger: ledger}
	s.SetGPUs(gpus)
	for _, r := range []handoff.Resource{handoff.Whole, handoff.Percent} {
		s.plugins = append(s.plugins, &plugin{srv: s, resource: r, changed: make(chan struct{}, 1)})
	}
	return s
}

// SetGPUs replaces the GPU list and health, and tells the kubelet.
func (s *Server) SetGPUs(gpus []GPU) {
	s.mu.Lock()
	s.gpus = append([]GPU(nil), gpus...)
	s.mu.Unlock()
	for _, g := range gpus {
		s.ledger.SetHealth(g.UUID, g.Healthy)
	}
	s.Changed()
}

// Serving reports whether the kubelet watches every resource: it has
// registered them, opened ListAndWatch and received a device list, so it
// admits pods that ask for them. A kubelet restart or a stopped plugin ends
// the streams, and Serving is false until the kubelet watches again.
func (s *Server) Serving() bool {
	for _, p := range s.plugins {
		if p.watchers.Load() == 0 {
			return false
		}
	}
	return true
}

// Changed tells every ListAndWatch stream to resend its device list: the
// health or the ledger's view changed.
func (s *Server) Changed() {
	for _, p := range s.plugins {
		select {
		case p.changed <- struct{}{}:
		default:
		}
	}
}

// Run serves both resources and registers them with the kubelet, again
// whenever the kubelet restarts (its socket is re-created), until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	kubelet := filepath.Join(s.opts.Dir, filepath.Base(pluginapi.KubeletSocket))
	var lastID string
	for {
		id, err := fileID(kubelet)
		if err != nil {
			if lastID == "" || lastID != "missing" {
				logger.Info("Waiting for the kubelet's device-plugin socket", "path", kubelet)
				lastID = "missing"
			}
		} else if id != lastID {
			if err := s.serveAll(ctx); err != nil {
				logger.Error(err, "Registering with the kubelet failed; retrying")
			} else {
				lastID = id
			}
		}
		select {
		case <-ctx.Done():
			s.stopAll()
			return nil
		case <-time.After(time.Second):
		}
	}
}

// fileID identifies a file instance, so that a re-created socket counts as
// new even at the same path.
func fileID(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return fi.ModTime().String() + "/" + strconv.FormatInt(fi.Size(), 10) + "/" + inode(fi), nil
}

func (s *Server) serveAll(ctx context.Context) error {
	s.stopAll()
	for _, p := range s.plugins {
		if err := p.serve(ctx); err != nil {
			return err
		}
		if err := p.register(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) stopAll() {
	for _, p := range s.plugins {
		p.stop()
	}
}

func (s *Server) snapshot() []GPU {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]GPU(nil), s.gpus...)
}

// plugin is the endpoint of one resource.
type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	srv      *Server
	resource handoff.Resource
	changed  chan struct{}

	// watchers counts the ListAndWatch streams that have sent their first
	// list: from then on the kubelet offers the resource's devices.
	watchers atomic.Int32

	mu     sync.Mutex
	grpc   *grpc.Server
	socket string
}

var _ pluginapi.DevicePluginServer = &plugin{}

func (p *plugin) socketName() string {
	return "tessera-" + strings.NewReplacer(".", "-", "/", "-").Replace(string(p.resource)) + ".sock"
}

func (p *plugin) serve(ctx context.Context) error {
	path := filepath.Join(p.srv.opts.Dir, p.socketName())
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", path, err)
	}
	g := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(g, p)
	p.mu.Lock()
	p.grpc, p.socket = g, path
	p.mu.Unlock()
	go func() {
		if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			klog.FromContext(ctx).Error(err, "Device-plugin endpoint stopped", "resource", p.resource)
		}
	}()
	return nil
}

func (p *plugin) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.grpc != nil {
		p.grpc.Stop()
		_ = os.Remove(p.socket)
		p.grpc = nil
	}
}

func (p *plugin) register(ctx context.Context) error {
	kubelet := filepath.Join(p.srv.opts.Dir, filepath.Base(pluginapi.KubeletSocket))
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connecting to the kubelet at %s: %w", kubelet, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     p.socketName(),
		ResourceName: string(p.resource),
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	if err != nil {
		return fmt.Errorf("registering %s with the kubelet: %w", p.resource, err)
	}
	klog.FromContext(ctx).Info("Registered with the kubelet", "resource", p.resource, "endpoint", p.socketName())
	return nil
}

// GetDevicePluginOptions tells the kubelet to ask for preferred allocations.
func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch sends the device list now and after every change.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	var last []*pluginapi.Device
	sent := false
	for {
		// Most changes (pod events, reconciles) leave the list as it was;
		// the kubelet writes a checkpoint for every list it receives. The
		// first list is always sent, even when empty.
		if devs := p.devices(); !sent || !sameDevices(devs, last) {
			if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
				return err
			}
			if !sent {
				p.watchers.Add(1)
				defer p.watchers.Add(-1)
			}
			last, sent = devs, true
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-p.changed:
		}
	}
}

// sameDevices reports whether two device lists (built in the same order)
// have the same IDs and health.
func sameDevices(a, b []*pluginapi.Device) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Health != b[i].Health {
			return false
		}
	}
	return true
}

// devices lists the resource's device IDs with health and NUMA topology.
func (p *plugin) devices() []*pluginapi.Device {
	unhealthy := p.srv.ledger.Unhealthy(p.resource)
	var out []*pluginapi.Device
	for _, g := range p.srv.snapshot() {
		var topo *pluginapi.TopologyInfo
		if g.NUMANode >= 0 {
			topo = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(g.NUMANode)}}}
		}
		ids := []string{g.UUID}
		if p.resource == handoff.Percent {
			ids = ids[:0]
			for n := 0; n < handoff.PercentIDs; n++ {
				ids = append(ids, handoff.PercentID(g.UUID, n))
			}
		}
		for _, id := range ids {
			h := pluginapi.Healthy
			if unhealthy[id] {
				h = pluginapi.Unhealthy
			}
			out = append(out, &pluginapi.Device{ID: id, Health: h, Topology: topo})
		}
	}
	return out
}

// GetPreferredAllocation steers each container to the GPUs the scheduler
// chose for it.
func (p *plugin) GetPreferredAllocation(ctx context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, cr := range req.ContainerRequests {
		ids := p.preferred(ctx, cr)
		klog.FromContext(ctx).V(4).Info("Preferred allocation", "resource", p.resource, "size", cr.AllocationSize, "ids", ids)
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// preferred finds the claim that fits the request. The kubelet admits a
// pod as soon as it is bound, and the pod informer may be a moment behind,
// so when nothing fits it reads the node's pods from the API once (or,
// without SyncPods or when that fails, waits up to MatchWait for the
// informer) before falling back to the ledger's own choice.
func (p *plugin) preferred(ctx context.Context, cr *pluginapi.ContainerPreferredAllocationRequest) []string {
	l, size := p.srv.ledger, int(cr.AllocationSize)
	if ids, ok := l.Match(p.resource, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, size); ok {
		return ids
	}
	if sync := p.srv.opts.SyncPods; sync != nil {
		added, err := sync(ctx)
		if err == nil {
			if ids, ok := l.Match(p.resource, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, size); ok {
				klog.FromContext(ctx).V(2).Info("Steered a pod the informer had not shown yet", "resource", p.resource, "size", size, "podsAdded", added)
				return ids
			}
			// The ledger knows every pod of the node: none that waits
			// fits what the kubelet offers.
			if l.Pending(p.resource) {
				p.logUnmatched(ctx, size, len(cr.AvailableDeviceIDs))
			}
			return l.Preferred(p.resource, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, size)
		}
		klog.FromContext(ctx).Error(err, "Could not read this node's pods; waiting for the informer instead", "resource", p.resource)
	}
	deadline := time.NewTimer(p.srv.opts.MatchWait)
	defer deadline.Stop()
	for {
		changed := l.PodsChanged()
		if ids, ok := l.Match(p.resource, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, size); ok {
			return ids
		}
		if !l.Pending(p.resource) {
			// No pod awaits these devices (e.g. a pod not placed by
			// tessera-scheduler): nothing to wait for.
			return l.Preferred(p.resource, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, size)
		}
		select {
		case <-changed:
			continue
		case <-deadline.C:
		case <-ctx.Done():
		}
		p.logUnmatched(ctx, size, len(cr.AvailableDeviceIDs))
		return l.Preferred(p.resource, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, size)
	}
}

// logUnmatched says that pods await admission but none of their
// assignments fits what the kubelet offers: the container may get other
// GPUs than its pod's assignment says, which the reconciler then records.
func (p *plugin) logUnmatched(ctx context.Context, size, available int) {
	metrics.Unmatched.WithLabelValues(string(p.resource)).Inc()
	klog.FromContext(ctx).Info("No waiting pod's assignment fits the devices the kubelet offers; choosing devices without one", "resource", p.resource, "size", size, "available", available)
}

// Allocate tells the container runtime which GPUs the container sees.
func (p *plugin) Allocate(ctx context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	defer func(start time.Time) {
		metrics.AllocateDuration.WithLabelValues(string(p.resource)).Observe(time.Since(start).Seconds())
	}(time.Now())
	resp := &pluginapi.AllocateResponse{}
	for _, cr := range req.ContainerRequests {
		gpus, err := p.srv.ledger.Allocate(p.resource, cr.DevicesIds)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		c := &pluginapi.ContainerAllocateResponse{Envs: map[string]string{
			"NVIDIA_VISIBLE_DEVICES": strings.Join(gpus, ","),
		}}
		if p.resource == handoff.Percent {
			// The share, for the workload or an MPS limit to honour.
			c.Envs["TESSERA_GPU_PERCENT"] = strconv.Itoa(len(cr.DevicesIds))
		}
		if p.srv.opts.CDI {
			for _, g := range gpus {
				c.CdiDevices = append(c.CdiDevices, &pluginapi.CDIDevice{Name: cdi.DeviceName(g)})
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, c)
	}
	klog.FromContext(ctx).V(3).Info("Allocated", "resource", p.resource, "containers", len(req.ContainerRequests))
	p.srv.Changed()
	if p.srv.opts.OnAllocate != nil {
		p.srv.opts.OnAllocate()
	}
	return resp, nil
}
