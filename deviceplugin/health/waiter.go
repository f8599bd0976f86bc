package health

import (
	"context"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// msgKind says what a waitMsg reports.
type msgKind int

const (
	// msgEvent carries an NVML event.
	msgEvent msgKind = iota
	// msgWaitFailed reports a failed event-set creation or wait.
	msgWaitFailed
	// msgWaitWorking reports that waits work again after failures.
	msgWaitWorking
)

// waitMsg is what the event waiter tells Run's loop.
type waitMsg struct {
	kind msgKind
	ev   nvml.EventData
	// uuid is the GPU the event is about, "" when that cannot be told.
	uuid string
	ret  nvml.Return
}

// registry remembers, across event-set re-creations, which GPUs cannot
// report events at all, so they are neither retried nor logged again.
type registry struct {
	noEvents map[string]bool
	// warned holds GPUs whose registration failure was already logged at
	// the default level; repeats are logged verbosely.
	warned map[string]bool
}

// waitLoop owns the NVML event set: it creates it, registers the GPUs,
// waits for events and passes them to Run's loop, and recreates the set
// after failures. It returns when ctx ends, having freed the set.
func (m *Monitor) waitLoop(ctx context.Context, out chan<- waitMsg) {
	logger := klog.FromContext(ctx)
	reg := &registry{noEvents: map[string]bool{}, warned: map[string]bool{}}
	b := backoff{min: m.cfg.BackoffInitial, max: m.cfg.BackoffMax}
	failing := false

	// failed reports a failure and waits out the back-off; false means
	// ctx ended.
	failed := func(ret nvml.Return, what string) bool {
		failing = true
		d := b.step()
		logger.Error(ret, "NVML "+what+" failed; recreating the event set after a pause", "pause", d)
		return send(ctx, out, waitMsg{kind: msgWaitFailed, ret: ret}) && sleep(ctx, m.cfg.Clock, d)
	}
	// working reports the end of a run of failures; false means ctx
	// ended.
	working := func() bool {
		if !failing {
			return true
		}
		failing = false
		b.reset()
		return send(ctx, out, waitMsg{kind: msgWaitWorking})
	}

	for ctx.Err() == nil {
		set, ret := m.lib.EventSetCreate()
		if ret == nvml.ERROR_NOT_SUPPORTED {
			// Not a fault: some platforms (certain vGPU setups) have no
			// events. Probes still catch GPUs that stop answering.
			logger.Info("NVML events are not supported here; GPU health relies on probes alone")
			working()
			return
		}
		if ret != nvml.SUCCESS || set == nil {
			if ret == nvml.SUCCESS {
				ret = nvml.ERROR_UNKNOWN
			}
			if !failed(ret, "event set creation") {
				return
			}
			continue
		}
		ret = m.watch(ctx, set, reg, out, working)
		if r := set.Free(); r != nvml.SUCCESS {
			logger.V(2).Info("Freeing the NVML event set failed", "err", r)
		}
		if ret == nvml.SUCCESS {
			return // ctx ended
		}
		if !failed(ret, "event wait") {
			return
		}
	}
}

// watch registers the GPUs on set and waits for events until ctx ends
// (returning SUCCESS) or a wait fails (returning its error).
func (m *Monitor) watch(ctx context.Context, set nvml.EventSet, reg *registry, out chan<- waitMsg, working func() bool) nvml.Return {
	logger := klog.FromContext(ctx)
	handles := map[nvml.Device]string{}
	pending, registered := m.register(logger, set, m.uuids, handles, reg)
	nextRetry := m.cfg.Clock.Now().Add(m.cfg.ProbeInterval)
	timeoutMs := uint32(m.cfg.WaitTimeout / time.Millisecond)

	for ctx.Err() == nil {
		if len(pending) > 0 && !m.cfg.Clock.Now().Before(nextRetry) {
			var n int
			pending, n = m.register(logger, set, pending, handles, reg)
			registered += n
			nextRetry = m.cfg.Clock.Now().Add(m.cfg.ProbeInterval)
		}
		if registered == 0 {
			if len(pending) == 0 {
				logger.Info("No watched GPU can report events; GPU health relies on probes alone")
				if working() {
					<-ctx.Done()
				}
				return nvml.SUCCESS
			}
			// Nothing to wait on yet; try the registrations again later.
			if !sleep(ctx, m.cfg.Clock, nextRetry.Sub(m.cfg.Clock.Now())) {
				return nvml.SUCCESS
			}
			continue
		}

		ev, ret := set.Wait(timeoutMs)
		switch ret {
		case nvml.SUCCESS:
			if !working() {
				return nvml.SUCCESS
			}
			msg := waitMsg{kind: msgEvent, ev: ev, uuid: resolve(ev.Device, handles)}
			if !send(ctx, out, msg) {
				return nvml.SUCCESS
			}
		case nvml.ERROR_TIMEOUT:
			if !working() {
				return nvml.SUCCESS
			}
		default:
			return ret
		}
	}
	return nvml.SUCCESS
}

// register registers the given GPUs for critical events on set, recording
// their handles. It returns the GPUs to retry later and how many it
// registered. GPUs that cannot report events at all are only recorded in
// reg: they stay watched by probes.
func (m *Monitor) register(logger klog.Logger, set nvml.EventSet, uuids []string, handles map[nvml.Device]string, reg *registry) ([]string, int) {
	var pending []string
	registered := 0
	retryLater := func(u, what string, ret nvml.Return) {
		pending = append(pending, u)
		if reg.warned[u] {
			logger.V(4).Info("GPU event registration still failing", "uuid", u, "step", what, "err", ret)
			return
		}
		reg.warned[u] = true
		logger.Info("Cannot register GPU for events yet; will retry", "uuid", u, "step", what, "err", ret)
	}
	noEvents := func(u string, detail string) {
		reg.noEvents[u] = true
		logger.Info("GPU cannot report events; relying on probes for it", "uuid", u, "detail", detail)
	}

	for _, u := range uuids {
		if reg.noEvents[u] {
			continue
		}
		h, ret := m.lib.DeviceGetHandleByUUID(u)
		if ret == nvml.SUCCESS && isNullDevice(h) {
			ret = nvml.ERROR_NOT_FOUND
		}
		if ret != nvml.SUCCESS {
			retryLater(u, "get handle", ret)
			continue
		}
		supported, ret := h.GetSupportedEventTypes()
		switch {
		case ret == nvml.ERROR_NOT_SUPPORTED:
			noEvents(u, "event types: "+ret.Error())
			continue
		case ret != nvml.SUCCESS:
			retryLater(u, "get supported event types", ret)
			continue
		case supported&criticalEvents == 0:
			noEvents(u, "supports neither XID nor double-bit ECC events")
			continue
		}
		ret = h.RegisterEvents(supported&criticalEvents, set)
		switch ret {
		case nvml.SUCCESS:
		case nvml.ERROR_NOT_SUPPORTED:
			noEvents(u, "register events: "+ret.Error())
			continue
		default:
			retryLater(u, "register events", ret)
			continue
		}
		if deviceKey(h) {
			handles[h] = u
		}
		if reg.warned[u] {
			logger.Info("GPU registered for events", "uuid", u)
			delete(reg.warned, u)
		}
		registered++
	}
	return pending, registered
}

// resolve returns the UUID of the GPU an event is about: from the handles
// registered, else by asking the handle; "" when there is no device or it
// cannot be identified.
func resolve(d nvml.Device, handles map[nvml.Device]string) string {
	if isNullDevice(d) {
		return ""
	}
	if deviceKey(d) {
		if u, ok := handles[d]; ok {
			return u
		}
	}
	// A handle not registered here (possible with a shared library
	// instance); a lost GPU will not answer, which leaves it
	// unidentified.
	if u, ret := d.GetUUID(); ret == nvml.SUCCESS {
		return u
	}
	return ""
}

// send passes a message to Run's loop; false means ctx ended first.
func send(ctx context.Context, out chan<- waitMsg, msg waitMsg) bool {
	select {
	case out <- msg:
		return true
	case <-ctx.Done():
		return false
	}
}

// sleep waits d on clk; false means ctx ended first.
func sleep(ctx context.Context, clk clock.WithTicker, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// backoff doubles a pause from min up to max.
type backoff struct {
	min, max, cur time.Duration
}

// step returns the next pause.
func (b *backoff) step() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	}
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d
}

// reset starts the next run of failures from min again.
func (b *backoff) reset() { b.cur = 0 }
