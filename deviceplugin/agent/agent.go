// Package agent runs the whole node side of Tessera in one process: NVML
// discovery (real or fake), the health monitor, the GPUNode publisher, the
// kubelet device-plugin endpoints and the hand-off reconciler. The
// tessera-device-plugin binary is a thin wrapper around it; the demo and
// the tests run it in-process.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/deviceplugin/cdi"
	"github.com/tessera-gpu/tessera/deviceplugin/discovery"
	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
	"github.com/tessera-gpu/tessera/deviceplugin/inventory"
	"github.com/tessera-gpu/tessera/deviceplugin/metrics"
	"github.com/tessera-gpu/tessera/deviceplugin/server"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
)

// Config is everything the agent needs.
type Config struct {
	// NodeName is this node's name; the agent writes only its GPUNode.
	NodeName string
	// Kube and GPU are API clients.
	Kube kubernetes.Interface
	GPU  versioned.Interface
	// Fake selects a fake machine kind (fakegpu.Kinds); empty uses NVML.
	Fake string
	// NVMLLibrary overrides the NVML library path.
	NVMLLibrary string
	// DevicePluginDir is the kubelet's device-plugin directory.
	DevicePluginDir string
	// PodResourcesSocket is the kubelet's PodResources API socket.
	PodResourcesSocket string
	// TaintNode adds nvidia.com/gpu=present:NoSchedule to the node.
	TaintNode bool
	// CDI adds CDI device names to allocations.
	CDI bool
	// CDISpecDir is where, with CDI and a fake machine, the fake GPUs' CDI
	// spec is written (a directory the container runtime scans).
	CDISpecDir string
	// Heartbeat is how often the GPUNode is refreshed.
	Heartbeat time.Duration
	// ReconcileInterval is how often the kubelet's record is read.
	ReconcileInterval time.Duration
	// Health configures the health monitor.
	Health health.Config
	// HealthTaintEffect is the effect of the device taints an unhealthy GPU
	// gets: NoSchedule (the default when empty) or NoExecute.
	HealthTaintEffect v1.TaintEffect
	// KubeletRecord, if set, replaces the PodResources API client; tests
	// pass the real device manager's record.
	KubeletRecord handoff.KubeletRecord
	// MetricsAddress serves /metrics and /healthz; empty or "0" disables.
	MetricsAddress string
}

// Agent is a running node agent.
type Agent struct {
	cfg     Config
	machine *fakegpu.Machine
	lib     nvml.Interface
	inv     discovery.Inventory
	monitor *health.Monitor
	pub     *inventory.Publisher
	rec     *handoff.Reconciler
	srv     *server.Server
}

// Machine returns the fake machine in fake mode, to inject faults; nil
// otherwise.
func (a *Agent) Machine() *fakegpu.Machine { return a.machine }

// healthTaintEffect is the configured effect of health taints, NoSchedule
// by default.
func (a *Agent) healthTaintEffect() v1.TaintEffect {
	if a.cfg.HealthTaintEffect == "" {
		return v1.TaintEffectNoSchedule
	}
	return a.cfg.HealthTaintEffect
}

// PodsUsing returns the pods of this node that the plugin knows to hold the
// GPU: those it tells when the GPU's health changes.
func (a *Agent) PodsUsing(uuid string) []*v1.Pod { return a.rec.PodsUsing(uuid) }

// Publisher returns the GPUNode publisher.
func (a *Agent) Publisher() *inventory.Publisher { return a.pub }

// Run discovers the GPUs and runs every part until ctx ends. Without an
// NVML library it says so once and runs with zero GPUs.
func Run(ctx context.Context, cfg Config, started func(*Agent)) error {
	logger := klog.FromContext(ctx).WithValues("node", cfg.NodeName)
	ctx = klog.NewContext(ctx, logger)
	a := &Agent{cfg: cfg}
	closeLib, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer closeLib()
	if cfg.CDI && a.machine != nil {
		// Before the kubelet can ask for a GPU: a runtime that cannot
		// resolve a CDI name fails the container.
		path, err := cdi.WriteFakeSpec(cfg.CDISpecDir, a.inv)
		if err != nil {
			return fmt.Errorf("--cdi with a fake machine needs its CDI spec in --cdi-spec-dir %q: %w", cfg.CDISpecDir, err)
		}
		logger.Info("Wrote the fake GPUs' CDI spec", "path", path, "devices", len(a.inv.GPUs))
	}

	if cfg.TaintNode {
		if err := taintNode(ctx, cfg.Kube, cfg.NodeName); err != nil {
			logger.Error(err, "Could not taint the node; GPU pods still work, other pods are not kept away")
		}
	} else if err := untaintOwnNode(ctx, cfg.Kube, cfg.NodeName); err != nil {
		// --taint-node was on before and is off now.
		logger.Error(err, "Could not remove the GPU-node taint an earlier run with --taint-node added")
	}

	var uuids []string
	for _, g := range a.inv.GPUs {
		uuids = append(uuids, g.UUID)
	}
	ledger := handoff.NewLedger(uuids)

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cfg.Kube.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "tessera-device-plugin", Host: cfg.NodeName})

	a.pub = inventory.NewPublisher(cfg.NodeName, cfg.GPU, cfg.Kube, cfg.Heartbeat, func(now time.Time) v1alpha1.GPUNodeStatus {
		var states map[string]health.Change
		if a.monitor != nil {
			states = a.monitor.State()
		}
		return inventory.BuildStatus(a.inv, states, a.healthTaintEffect(), now)
	})
	// The server tells the reconciler about allocations, and the
	// reconciler tells the server when the device lists change.
	var rec *handoff.Reconciler
	srv := server.New(server.Options{Dir: cfg.DevicePluginDir, CDI: cfg.CDI, OnAllocate: func() { rec.Kick() },
		SyncPods: func(ctx context.Context) (int, error) { return rec.SyncPods(ctx) }}, ledger, a.serverGPUs(nil))
	var kr handoff.KubeletRecord = kubeletRecord{handoff.PodResources{Socket: cfg.PodResourcesSocket}, new(atomic.Bool)}
	if cfg.KubeletRecord != nil {
		kr = cfg.KubeletRecord
	}
	rec = handoff.NewReconciler(cfg.NodeName, ledger, cfg.Kube, kr, recorder, srv.Changed)
	a.rec, a.srv = rec, srv
	podsSynced, err := rec.WatchPods(ctx)
	if err != nil {
		return fmt.Errorf("watching this node's pods: %w", err)
	}
	// Serve the kubelet only once the ledger knows the node's pods and the
	// kubelet's record: a blank ledger would offer held GPUs again. The
	// GPUNode and health do not wait for the kubelet.
	if !cache.WaitForCacheSync(ctx.Done(), podsSynced) {
		return ctx.Err()
	}

	if len(uuids) > 0 {
		a.monitor = health.NewMonitor(a.lib, uuids, cfg.Health)
	}
	defer metrics.SetGPUSource(cfg.NodeName, func() []metrics.GPU { return a.gpuMetrics(ledger) })()
	done := make(chan struct{})
	run := func(f func()) {
		go func() {
			defer func() { done <- struct{}{} }()
			f()
		}()
	}
	n := 0
	run(func() {
		handlers := a.faultHandlers()
		if handlers == nil {
			handlers = map[string]http.Handler{}
		}
		handlers[ReadyPath] = a.readyHandler()
		if err := metrics.Serve(ctx, cfg.MetricsAddress, handlers); err != nil {
			logger.Error(err, "Metrics endpoint stopped")
		}
	})
	n++
	run(func() { a.pub.Run(ctx) })
	n++
	run(func() {
		if firstReading(ctx, rec) {
			_ = srv.Run(ctx)
		}
	})
	n++
	run(func() { rec.Run(ctx, cfg.ReconcileInterval) })
	n++
	if a.monitor != nil {
		changes := make(chan health.Change, 64)
		run(func() {
			if err := a.monitor.Run(ctx, changes); err != nil {
				logger.Error(err, "GPU health monitor stopped")
			}
		})
		n++
		events := make(chan healthEvent, 64)
		run(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case c := <-changes:
					logger.Info("GPU health changed", "gpu", c.UUID, "healthy", c.Healthy, "reason", c.Reason)
					metrics.HealthTransitions.WithLabelValues(c.UUID, strconv.FormatBool(c.Healthy)).Inc()
					if !c.Healthy && c.XID != 0 {
						metrics.XIDs.WithLabelValues(c.UUID, strconv.FormatUint(c.XID, 10)).Inc()
					}
					wrote := a.pub.NextWrite()
					srv.SetGPUs(a.serverGPUs(a.monitor.State()))
					a.pub.Trigger()
					select {
					case events <- healthEvent{change: c, wrote: wrote}:
					default:
						logger.Info("Too many GPU health changes at once; no event for this one", "gpu", c.UUID, "healthy", c.Healthy)
					}
				}
			}
		})
		n++
		run(func() { a.recordHealth(ctx, recorder, rec, events) })
		n++
	}
	if started != nil {
		started(a)
	}
	<-ctx.Done()
	for i := 0; i < n; i++ {
		<-done
	}
	return nil
}

// gpuMetrics is each GPU as the per-GPU gauges report it: the inventory,
// the monitor's health and what the kubelet has given out.
func (a *Agent) gpuMetrics(ledger *handoff.Ledger) []metrics.GPU {
	var states map[string]health.Change
	if a.monitor != nil {
		states = a.monitor.State()
	}
	allocated := ledger.Allocated()
	out := make([]metrics.GPU, 0, len(a.inv.GPUs))
	for _, g := range a.inv.GPUs {
		healthy := true
		if h, ok := states[g.UUID]; ok {
			healthy = h.Healthy
		}
		out = append(out, metrics.GPU{UUID: g.UUID, Index: g.Index, Model: g.Model, PCIBusID: g.PCIBusID,
			NUMANode: g.NUMANode, Healthy: healthy, AllocatedPercent: allocated[g.UUID]})
	}
	return out
}

// open initialises NVML or the fake machine and runs discovery.
func (a *Agent) open(ctx context.Context) (func(), error) {
	logger := klog.FromContext(ctx)
	if a.cfg.Fake != "" {
		m, err := fakegpu.New(a.cfg.Fake, a.cfg.NodeName)
		if err != nil {
			return nil, err
		}
		a.machine, a.lib = m, m
		logger.Info("Fake GPU mode", "kind", a.cfg.Fake, "gpus", len(m.UUIDs()))
	} else {
		lib, closeLib, err := discovery.Open(a.cfg.NVMLLibrary)
		if errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) || errors.Is(err, nvml.ERROR_DRIVER_NOT_LOADED) {
			// A node without a working driver has no GPUs to offer; say so
			// once and keep running, so the DaemonSet can sit on every node.
			logger.Info("No usable NVIDIA driver on this node; reporting zero GPUs", "err", err.Error())
			return func() {}, nil
		}
		if err != nil {
			return nil, err
		}
		a.lib = lib
		defer func() {
			if a.lib == nil {
				closeLib()
			}
		}()
		inv, err := discovery.DiscoverContext(ctx, lib)
		if err != nil {
			a.lib = nil
			return nil, fmt.Errorf("discovering GPUs: %w", err)
		}
		a.inv = inv
		logger.Info("Discovered GPUs", "count", len(inv.GPUs), "driver", inv.DriverVersion, "cuda", inv.CUDADriverVersion)
		return closeLib, nil
	}
	inv, err := discovery.DiscoverContext(ctx, a.lib)
	if err != nil {
		return nil, fmt.Errorf("discovering fake GPUs: %w", err)
	}
	a.inv = inv
	return func() {}, nil
}

func (a *Agent) serverGPUs(states map[string]health.Change) []server.GPU {
	out := make([]server.GPU, 0, len(a.inv.GPUs))
	for _, g := range a.inv.GPUs {
		healthy := true
		if h, ok := states[g.UUID]; ok {
			healthy = h.Healthy
		}
		out = append(out, server.GPU{UUID: g.UUID, NUMANode: g.NUMANode, Healthy: healthy})
	}
	return out
}

// kubeletRecord reads the PodResources API. Before the kubelet's socket has
// ever appeared it reports an empty record (an agent started before the
// kubelet, or the demo, which runs none); once it has been seen, a missing
// socket is an error, so that a restarting kubelet never looks like a node
// where nothing is allocated.
// firstReading reads the kubelet's record until a reading succeeds, so
// that the plugin never serves the kubelet from a ledger that does not know
// what the kubelet has already given out (after a restart of the plugin,
// every GPU would look free). It reports false when ctx ends first.
func firstReading(ctx context.Context, rec *handoff.Reconciler) bool {
	logger := klog.FromContext(ctx)
	logged := false
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		err := rec.Once(ctx)
		if err != nil && !logged {
			logger.Error(err, "Cannot read the kubelet's pod resources; not serving the kubelet until a reading succeeds")
			logged = true
		}
		return err == nil, nil
	})
	if err == nil && logged {
		logger.Info("Read the kubelet's pod resources; serving the kubelet")
	}
	return err == nil
}

type kubeletRecord struct {
	handoff.PodResources
	seen *atomic.Bool
}

func (k kubeletRecord) List(ctx context.Context) ([]handoff.ContainerDevices, error) {
	if _, err := os.Stat(k.Socket); errors.Is(err, os.ErrNotExist) {
		if k.seen.Load() {
			return nil, fmt.Errorf("the kubelet's pod-resources socket %s is gone", k.Socket)
		}
		return nil, nil
	}
	k.seen.Store(true)
	return k.PodResources.List(ctx)
}

// healthEvent is a health change waiting for the GPUNode write that
// carries it.
type healthEvent struct {
	change health.Change
	// wrote is closed by the first GPUNode write begun after the change.
	wrote <-chan struct{}
}

// healthEventWait bounds how long an event waits for the GPUNode write; an
// API server that is down loses the event anyway.
const healthEventWait = 30 * time.Second

// recordHealth records an event on the GPUNode for each health change, in
// order, once the publisher has written the GPUNode after the change. The
// event must name the GPUNode by UID (kubectl describe selects events by
// it), and only a write tells the UID: before the first one the GPUNode may
// not exist, and a GPUNode deleted and created again has a new UID. The
// waiting happens here, not in the health loop, so that the kubelet hears
// of unhealthy GPUs at once.
func (a *Agent) recordHealth(ctx context.Context, recorder record.EventRecorder, pods *handoff.Reconciler, events <-chan healthEvent) {
	for {
		var ev healthEvent
		select {
		case <-ctx.Done():
			return
		case ev = <-events:
		}
		// The pods already on the GPU are told at once, on the pod, where
		// their owners look (kubectl describe pod, kubectl get events).
		tellPods(recorder, pods.PodsUsing(ev.change.UUID), a.cfg.NodeName, ev.change)
		timeout := time.NewTimer(healthEventWait)
		select {
		case <-ctx.Done():
			timeout.Stop()
			return
		case <-ev.wrote:
		case <-timeout.C:
			klog.FromContext(ctx).Info("GPUNode not written in time; the health event may not show in kubectl describe", "gpu", ev.change.UUID)
		}
		timeout.Stop()
		uid := a.pub.UID()
		c := ev.change
		recorder.Eventf(gpuNodeRef(a.cfg.NodeName, uid), eventType(c.Healthy), healthReason(c.Healthy), "GPU %s: %s", c.UUID, describe(c))
	}
}

// tellPods records a health change of a GPU on each pod that holds it.
func tellPods(recorder record.EventRecorder, pods []*v1.Pod, node string, c health.Change) {
	for _, pod := range pods {
		if c.Healthy {
			recorder.Eventf(pod, v1.EventTypeNormal, healthReason(true), "GPU %s, which this pod holds on node %s, is healthy again", c.UUID, node)
			continue
		}
		recorder.Eventf(pod, v1.EventTypeWarning, healthReason(false), "GPU %s, which this pod holds on node %s, is unhealthy: %s", c.UUID, node, c.Reason)
	}
}

// gpuNodeRef refers to the node's GPUNode. It is cluster-scoped, so the
// reference has no namespace and the recorder puts the event in "default";
// kubectl describe finds it by name, kind and UID across namespaces.
func gpuNodeRef(node string, uid types.UID) *v1.ObjectReference {
	return &v1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "GPUNode", Name: node, UID: uid}
}

func eventType(healthy bool) string {
	if healthy {
		return v1.EventTypeNormal
	}
	return v1.EventTypeWarning
}

func healthReason(healthy bool) string {
	if healthy {
		return "GPUHealthy"
	}
	return "GPUUnhealthy"
}

func describe(c health.Change) string {
	if c.Healthy {
		return "healthy again"
	}
	return "unhealthy: " + c.Reason
}
