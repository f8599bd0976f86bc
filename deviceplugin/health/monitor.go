// Package health watches a node's GPUs through NVML and reports when one
// becomes unhealthy or healthy again.
//
// A Monitor combines two sources:
//
//   - NVML events. An XID critical error whose XID is not in
//     Config.IgnoredXIDs makes its GPU unhealthy with reason "XID <n>"; a
//     double-bit ECC error makes it unhealthy with reason "double-bit ECC
//     error". Ignored (application) XIDs and other event types change
//     nothing. An event for a GPU the monitor does not watch is logged and
//     ignored.
//   - Probes. Every Config.ProbeInterval each GPU is looked up by UUID and
//     asked for its memory info. ERROR_GPU_IS_LOST makes it unhealthy with
//     reason "GPU is lost"; any other failure with reason
//     "NVML query failed: <error>".
//
// Events without a device. NVML can deliver an event whose device handle is
// null, and a handle may also be one the monitor cannot map to a UUID. Such
// an event cannot be pinned on one GPU, so a critical one makes every
// watched GPU unhealthy: sending work to a GPU that may be broken costs more
// than briefly idling healthy ones, and the recovery rule brings the healthy
// ones back. MIG-instance events count against their parent GPU.
//
// Failing event waits. A Wait error other than a timeout is logged; the
// monitor backs off exponentially (Config.BackoffInitial up to
// Config.BackoffMax), recreates the event set and registers again. Short
// failures mark nothing. If waits keep failing for longer than
// Config.WaitFailureLimit, every GPU is marked unhealthy with reason
// "NVML event wait failing: <error>", since faults could now go unseen; once
// a wait works again they recover by the rule below. A GPU whose event
// registration fails (for instance ERROR_NOT_SUPPORTED) is still probed, and
// transient registration failures are retried every probe interval.
//
// Recovery rule. An unhealthy GPU becomes healthy again once both hold:
//
//  1. its most recent probe succeeded, and
//  2. Config.RecoveryQuiet has passed since the last bad observation for it:
//     a critical event, a failed probe or, while event waits were failing
//     past the limit, the last failed wait.
//
// Recovery is considered after each round of probes, and never while event
// waits are failing past the limit. A lost GPU therefore recovers only when
// it answers again and the quiet period has passed since its last failed
// probe. A RecoveryQuiet of 0 disables recovery: a GPU that became unhealthy
// stays unhealthy until the process restarts, which is the conservative
// choice when a node's operators prefer a reboot after any fault.
//
// While a GPU is unhealthy its reason tracks the most recent GPU-specific
// cause, so a later XID replaces an earlier one; Since stays at the time it
// became unhealthy. The blanket "NVML event wait failing" reason never
// replaces a GPU-specific one.
package health

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"
)

// Reasons a GPU is unhealthy, besides "XID <n>" and the prefixed ones.
const (
	// ReasonDoubleBitECC is the reason after a double-bit ECC error event.
	ReasonDoubleBitECC = "double-bit ECC error"
	// ReasonGPULost is the reason after a probe got ERROR_GPU_IS_LOST.
	ReasonGPULost = "GPU is lost"
	// ReasonProbeFailedPrefix starts the reason after a probe failed in
	// any other way; the NVML error follows.
	ReasonProbeFailedPrefix = "NVML query failed: "
	// ReasonWaitFailingPrefix starts the reason given to every GPU after
	// event waits failed for longer than Config.WaitFailureLimit; the NVML
	// error follows.
	ReasonWaitFailingPrefix = "NVML event wait failing: "
)

// criticalEvents are the event types the monitor registers for.
const criticalEvents uint64 = nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError

// Change is the health of one GPU, reported when it changes.
type Change struct {
	// UUID identifies the GPU.
	UUID string
	// Healthy is false while the GPU should not be given new work.
	Healthy bool
	// Reason says why the GPU is unhealthy ("XID 79", "GPU is lost", ...);
	// empty when healthy.
	Reason string
	// XID is the XID behind Reason, 0 when Reason is not an XID.
	XID uint64
	// Since is when the GPU entered its current health (healthy or not).
	Since time.Time
}

// Monitor tracks the health of a fixed set of GPUs. Create it with
// NewMonitor and start it with Run.
type Monitor struct {
	lib     nvml.Interface
	cfg     Config
	uuids   []string
	ignored map[uint64]bool
	running atomic.Bool

	// mu guards the GPU states. Only Run's goroutine changes them; the
	// lock is for State.
	mu   sync.Mutex
	gpus map[string]*gpuState

	// Event-wait failure tracking, owned by Run's goroutine.
	waitFailingSince time.Time   // zero while waits work
	waitErr          nvml.Return // the latest wait failure
	waitDeclared     bool        // waits failed past the limit
}

// gpuState is what the monitor knows about one GPU.
type gpuState struct {
	cur Change
	// specific is whether an unhealthy GPU's reason is about this GPU,
	// rather than the blanket wait-failure reason.
	specific bool
	// lastBad is the last time something bad was seen about this GPU.
	lastBad time.Time
	// probeOK is whether the most recent probe succeeded.
	probeOK bool
}

// NewMonitor returns a monitor for the GPUs with the given UUIDs, all
// considered healthy until shown otherwise. lib must be initialised and stay
// so until Run returns. Duplicate UUIDs are watched once.
func NewMonitor(lib nvml.Interface, uuids []string, cfg Config) *Monitor {
	cfg = cfg.withDefaults()
	m := &Monitor{
		lib:     lib,
		cfg:     cfg,
		ignored: make(map[uint64]bool, len(cfg.IgnoredXIDs)),
		gpus:    make(map[string]*gpuState, len(uuids)),
	}
	for _, x := range cfg.IgnoredXIDs {
		m.ignored[x] = true
	}
	now := cfg.Clock.Now()
	for _, u := range uuids {
		if _, dup := m.gpus[u]; dup {
			continue
		}
		m.uuids = append(m.uuids, u)
		// probeOK starts true so that a GPU hit by an event before the
		// first probe can still recover; the first probe runs as soon as
		// Run starts anyway.
		m.gpus[u] = &gpuState{cur: Change{UUID: u, Healthy: true, Since: now}, probeOK: true}
	}
	return m
}

// State returns the current health of every watched GPU, keyed by UUID.
func (m *Monitor) State() map[string]Change {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Change, len(m.gpus))
	for u, g := range m.gpus {
		out[u] = g.cur
	}
	return out
}

// Run watches the GPUs until ctx ends, sending every health change on
// changes (which may be nil if only State is used). It blocks while the
// receiver is slow rather than dropping changes. It returns nil once ctx
// ends, at most about Config.WaitTimeout later because an NVML wait in
// progress cannot be interrupted; it returns an error only if the monitor
// cannot start. A Monitor runs at most once at a time.
func (m *Monitor) Run(ctx context.Context, changes chan<- Change) error {
	if m.lib == nil {
		return errors.New("health monitor: no NVML library")
	}
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("health monitor is already running")
	}
	defer m.running.Store(false)
	// A restarted monitor starts with working waits; GPU health carries
	// over, so a GPU that went bad stays bad across a restart of Run.
	m.waitFailingSince, m.waitErr, m.waitDeclared = time.Time{}, nvml.SUCCESS, false

	logger := klog.FromContext(ctx).WithName("health")
	ctx = klog.NewContext(ctx, logger)
	ctx, cancel := context.WithCancel(ctx)

	msgs := make(chan waitMsg)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.waitLoop(ctx, msgs)
	}()
	defer func() {
		// The waiter frees its NVML event set on the way out; wait for
		// it so the caller may shut NVML down as soon as Run returns.
		cancel()
		wg.Wait()
	}()

	ticker := m.cfg.Clock.NewTicker(m.cfg.ProbeInterval)
	defer ticker.Stop()

	logger.Info("Watching GPU health", "gpus", len(m.uuids), "ignoredXIDs", m.cfg.IgnoredXIDs,
		"probeInterval", m.cfg.ProbeInterval, "recoveryQuiet", m.cfg.RecoveryQuiet)
	if !m.publish(ctx, changes, m.probeAll(ctx)) {
		return nil
	}
	for {
		var out []Change
		select {
		case <-ctx.Done():
			return nil
		case msg := <-msgs:
			out = m.handle(ctx, msg)
		case <-ticker.C():
			out = append(m.probeAll(ctx), m.checkWaitFailure(ctx, m.cfg.Clock.Now())...)
			out = append(out, m.recover(ctx)...)
		}
		if !m.publish(ctx, changes, out) {
			return nil
		}
	}
}

// publish sends changes in order, giving up when ctx ends.
func (m *Monitor) publish(ctx context.Context, ch chan<- Change, changes []Change) bool {
	if ch == nil {
		return ctx.Err() == nil
	}
	for _, c := range changes {
		select {
		case ch <- c:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// handle applies one message from the event waiter.
func (m *Monitor) handle(ctx context.Context, msg waitMsg) []Change {
	logger := klog.FromContext(ctx)
	now := m.cfg.Clock.Now()
	switch msg.kind {
	case msgEvent:
		return m.handleEvent(ctx, msg, now)
	case msgWaitFailed:
		if m.waitFailingSince.IsZero() {
			m.waitFailingSince = now
		}
		m.waitErr = msg.ret
		return m.markWaitFailure(ctx, msg.ret, now)
	case msgWaitWorking:
		if !m.waitFailingSince.IsZero() {
			logger.Info("NVML event wait works again", "failedFor", now.Sub(m.waitFailingSince))
		}
		m.waitFailingSince, m.waitDeclared = time.Time{}, false
	}
	return nil
}

// handleEvent applies one NVML event.
func (m *Monitor) handleEvent(ctx context.Context, msg waitMsg, now time.Time) []Change {
	logger := klog.FromContext(ctx)
	ev := msg.ev
	var reason string
	var xid uint64
	switch {
	case ev.EventType&nvml.EventTypeXidCriticalError != 0:
		xid = ev.EventData
		if m.ignored[xid] {
			logger.V(2).Info("Ignoring application XID", "uuid", msg.uuid, "xid", xid)
			return nil
		}
		reason = fmt.Sprintf("XID %d", xid)
	case ev.EventType&nvml.EventTypeDoubleBitEccError != 0:
		reason = ReasonDoubleBitECC
	default:
		logger.V(4).Info("Ignoring NVML event of an unwatched type", "uuid", msg.uuid, "type", ev.EventType, "data", ev.EventData)
		return nil
	}

	if msg.uuid == "" {
		logger.Info("Critical NVML event without an identifiable GPU; marking every GPU unhealthy",
			"reason", reason, "gpuInstance", ev.GpuInstanceId, "computeInstance", ev.ComputeInstanceId)
		m.mu.Lock()
		defer m.mu.Unlock()
		var out []Change
		for _, u := range m.uuids {
			if c, ok := m.markUnhealthyLocked(logger, m.gpus[u], reason, xid, now, true); ok {
				out = append(out, c)
			}
		}
		return out
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.gpus[msg.uuid]
	if !ok {
		logger.Info("Ignoring critical NVML event for a GPU this monitor does not watch", "uuid", msg.uuid, "reason", reason)
		return nil
	}
	logger.V(2).Info("Critical NVML event", "uuid", msg.uuid, "reason", reason)
	if c, ok := m.markUnhealthyLocked(logger, g, reason, xid, now, true); ok {
		return []Change{c}
	}
	return nil
}

// markWaitFailure records a failed event wait and, once waits have failed
// for longer than the limit, marks every GPU unhealthy.
func (m *Monitor) markWaitFailure(ctx context.Context, ret nvml.Return, now time.Time) []Change {
	if now.Sub(m.waitFailingSince) < m.cfg.WaitFailureLimit {
		return nil
	}
	logger := klog.FromContext(ctx)
	if !m.waitDeclared {
		logger.Error(ret, "NVML event waits keep failing; marking every GPU unhealthy",
			"failingFor", now.Sub(m.waitFailingSince), "limit", m.cfg.WaitFailureLimit)
		m.waitDeclared = true
	}
	reason := ReasonWaitFailingPrefix + ret.Error()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Change
	for _, u := range m.uuids {
		if c, ok := m.markUnhealthyLocked(logger, m.gpus[u], reason, 0, now, false); ok {
			out = append(out, c)
		}
	}
	return out
}

// checkWaitFailure applies the wait-failure limit between failure reports,
// which may be up to BackoffMax apart.
func (m *Monitor) checkWaitFailure(ctx context.Context, now time.Time) []Change {
	if m.waitFailingSince.IsZero() || m.waitDeclared {
		return nil
	}
	return m.markWaitFailure(ctx, m.waitErr, now)
}

// probeAll queries every GPU once.
func (m *Monitor) probeAll(ctx context.Context) []Change {
	logger := klog.FromContext(ctx)
	var out []Change
	for _, u := range m.uuids {
		ret := m.probe(u)
		now := m.cfg.Clock.Now()
		m.mu.Lock()
		g := m.gpus[u]
		g.probeOK = ret == nvml.SUCCESS
		if !g.probeOK {
			reason := ReasonProbeFailedPrefix + ret.Error()
			if ret == nvml.ERROR_GPU_IS_LOST {
				reason = ReasonGPULost
			}
			if c, ok := m.markUnhealthyLocked(logger, g, reason, 0, now, true); ok {
				out = append(out, c)
			}
		}
		m.mu.Unlock()
	}
	return out
}

// probe checks that one GPU still answers.
func (m *Monitor) probe(uuid string) nvml.Return {
	h, ret := m.lib.DeviceGetHandleByUUID(uuid)
	if ret != nvml.SUCCESS {
		return ret
	}
	if isNullDevice(h) {
		return nvml.ERROR_NOT_FOUND
	}
	_, ret = h.GetMemoryInfo()
	if ret == nvml.ERROR_NOT_SUPPORTED {
		// The GPU answered; it just cannot report memory (some
		// unified-memory systems). That is all a probe asks.
		return nvml.SUCCESS
	}
	return ret
}

// recover applies the recovery rule to every unhealthy GPU.
func (m *Monitor) recover(ctx context.Context) []Change {
	if m.cfg.RecoveryQuiet <= 0 || m.waitDeclared {
		return nil
	}
	logger := klog.FromContext(ctx)
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Change
	for _, u := range m.uuids {
		g := m.gpus[u]
		if g.cur.Healthy || !g.probeOK || now.Sub(g.lastBad) < m.cfg.RecoveryQuiet {
			continue
		}
		logger.Info("GPU healthy again", "uuid", u, "previousReason", g.cur.Reason, "unhealthyFor", now.Sub(g.cur.Since))
		g.cur = Change{UUID: u, Healthy: true, Since: now}
		g.specific = false
		out = append(out, g.cur)
	}
	return out
}

// markUnhealthyLocked records a bad observation about a GPU and returns the
// resulting change, if its published health changed. specific is false for
// the blanket wait-failure reason, which never replaces a GPU's own reason.
func (m *Monitor) markUnhealthyLocked(logger klog.Logger, g *gpuState, reason string, xid uint64, now time.Time, specific bool) (Change, bool) {
	g.lastBad = now
	switch {
	case g.cur.Healthy:
		logger.Info("GPU unhealthy", "uuid", g.cur.UUID, "reason", reason)
		g.cur = Change{UUID: g.cur.UUID, Healthy: false, Reason: reason, XID: xid, Since: now}
		g.specific = specific
		return g.cur, true
	case specific && (g.cur.Reason != reason || !g.specific):
		logger.Info("Unhealthy GPU has a new fault", "uuid", g.cur.UUID, "reason", reason, "previousReason", g.cur.Reason)
		g.cur.Reason, g.cur.XID = reason, xid
		g.specific = true
		return g.cur, true
	}
	return Change{}, false
}

// isNullDevice reports whether a device handle refers to no device: a nil
// interface, a nil pointer (mocks) or the real library's handle struct
// holding a null pointer, which is how go-nvml converts an event whose C
// device handle is NULL.
func isNullDevice(d nvml.Device) bool {
	return d == nil || reflect.ValueOf(d).IsZero()
}

// deviceKey reports whether a handle can be a map key: handles are compared
// by value, and a handle type that is not comparable would panic.
func deviceKey(d nvml.Device) bool {
	return d != nil && reflect.TypeOf(d).Comparable()
}
