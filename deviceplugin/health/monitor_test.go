package health_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
)

// waitLimit bounds every wait for something the monitor must do. It is far
// above what the monitor needs, so that a loaded machine does not fail a
// test; passing tests never wait for it.
const waitLimit = 10 * time.Second

// testConfig uses short durations so the tests run in well under a second
// each, with the real clock and the fake's real-time Wait.
func testConfig() health.Config {
	c := health.DefaultConfig()
	c.RecoveryQuiet = 300 * time.Millisecond
	c.WaitTimeout = 10 * time.Millisecond
	c.ProbeInterval = 20 * time.Millisecond
	c.WaitFailureLimit = 150 * time.Millisecond
	c.BackoffInitial = 5 * time.Millisecond
	c.BackoffMax = 20 * time.Millisecond
	return c
}

// harness runs a monitor on a fake machine and records its changes.
type harness struct {
	t       *testing.T
	machine *fakegpu.Machine
	uuids   []string
	monitor *health.Monitor

	mu      sync.Mutex
	changes []health.Change
}

func newMachine(t *testing.T, kind string) *fakegpu.Machine {
	t.Helper()
	m, err := fakegpu.New(kind, "node-"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// start runs a monitor for watched (all GPUs when nil) until the test ends.
func start(t *testing.T, m *fakegpu.Machine, watched []string, cfg health.Config) *harness {
	t.Helper()
	if watched == nil {
		watched = m.UUIDs()
	}
	h := &harness{t: t, machine: m, uuids: watched, monitor: health.NewMonitor(m, watched, cfg)}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan health.Change)
	runErr := make(chan error, 1)
	go func() { runErr <- h.monitor.Run(ctx, ch) }()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case c := <-ch:
				h.mu.Lock()
				h.changes = append(h.changes, c)
				h.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-runErr:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("Run did not return within 2s of cancellation")
		}
		<-drained
	})
	return h
}

// waitUntil polls cond every 2 ms until it holds, and reports false if
// waitLimit passes first.
func waitUntil(cond func() bool) bool {
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// eventually waits until cond holds for the monitor's state.
func (h *harness) eventually(what string, cond func(map[string]health.Change) bool) {
	h.t.Helper()
	if !waitUntil(func() bool { return cond(h.monitor.State()) }) {
		h.t.Fatalf("timed out after %v waiting for %s; state: %+v", waitLimit, what, h.monitor.State())
	}
}

// unhealthy waits until the GPU is, or was, unhealthy with the reason. The
// recorded changes count too: a fault that recovers after the short quiet
// period of testConfig can come and go between two polls of a test
// goroutine that a loaded machine holds up.
func (h *harness) unhealthy(uuid, reason string) {
	h.t.Helper()
	h.eventually(uuid+" unhealthy with "+reason, func(s map[string]health.Change) bool {
		return !s[uuid].Healthy && s[uuid].Reason == reason || h.countRecorded(uuid, reason) > 0
	})
}

// countRecorded counts the recorded changes that made the GPU unhealthy
// with the reason.
func (h *harness) countRecorded(uuid, reason string) int {
	n := 0
	for _, c := range h.recorded(uuid) {
		if !c.Healthy && c.Reason == reason {
			n++
		}
	}
	return n
}

// healthy waits until the GPU is healthy.
func (h *harness) healthy(uuid string) {
	h.t.Helper()
	h.eventually(uuid+" healthy", func(s map[string]health.Change) bool { return s[uuid].Healthy })
}

// recorded returns the changes seen so far for one GPU, or all if uuid is "".
func (h *harness) recorded(uuid string) []health.Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []health.Change
	for _, c := range h.changes {
		if uuid == "" || c.UUID == uuid {
			out = append(out, c)
		}
	}
	return out
}

// settle waits until at least n changes were recorded for uuid (all GPUs if
// ""), since State changes before the change is sent, and returns them.
func (h *harness) settle(uuid string, n int) []health.Change {
	h.t.Helper()
	var got []health.Change
	waitUntil(func() bool {
		got = h.recorded(uuid)
		return len(got) >= n
	})
	return got
}

// marker injects XID 79 on a GPU and waits until the change it causes is
// sent. Events are handled in order, so every event injected before the
// marker has been handled once it returns. It waits for a new recorded
// change rather than for the state, which recovers after testConfig's
// quiet period.
func (h *harness) marker(uuid string) {
	h.t.Helper()
	before := h.countRecorded(uuid, "XID 79")
	if err := h.machine.InjectXID(uuid, 79); err != nil {
		h.t.Fatal(err)
	}
	if !waitUntil(func() bool { return h.countRecorded(uuid, "XID 79") > before }) {
		h.t.Fatalf("the marker's change for %s was never sent", uuid)
	}
}

func TestCriticalXIDThenRecovery(t *testing.T) {
	cfg := testConfig()
	h := start(t, newMachine(t, "dgxh100"), nil, cfg)
	gpu := h.uuids[2]

	injected := time.Now()
	if err := h.machine.InjectXID(gpu, 79); err != nil {
		t.Fatal(err)
	}
	h.unhealthy(gpu, "XID 79")
	// Read the change as sent: the state may have recovered already.
	if got := h.settle(gpu, 1); len(got) == 0 || got[0].XID != 79 || got[0].Since.Before(injected) {
		t.Errorf("changes = %+v, want XID 79 since after %v first", got, injected)
	}
	for _, u := range h.uuids {
		if u != gpu && !h.monitor.State()[u].Healthy {
			t.Errorf("GPU %s became unhealthy too", u)
		}
	}

	h.healthy(gpu)
	if since := time.Since(injected); since < cfg.RecoveryQuiet {
		t.Errorf("GPU recovered %v after the XID, before the %v quiet period", since, cfg.RecoveryQuiet)
	}
	got := h.settle("", 2)
	if len(got) != 2 || got[0].UUID != gpu || got[0].Healthy || got[0].Reason != "XID 79" || !got[1].Healthy || got[1].Reason != "" {
		t.Errorf("changes = %+v, want unhealthy (XID 79) then healthy for %s only", got, gpu)
	}
}

func TestIgnoredXIDs(t *testing.T) {
	tests := []struct {
		name          string
		ignored       []uint64
		xid           uint64
		wantUnhealthy bool
	}{
		{name: "default ignores 13", ignored: health.DefaultConfig().IgnoredXIDs, xid: 13},
		{name: "default ignores 31", ignored: health.DefaultConfig().IgnoredXIDs, xid: 31},
		{name: "default ignores 43", ignored: health.DefaultConfig().IgnoredXIDs, xid: 43},
		{name: "default ignores 45", ignored: health.DefaultConfig().IgnoredXIDs, xid: 45},
		{name: "default ignores 68", ignored: health.DefaultConfig().IgnoredXIDs, xid: 68},
		{name: "default ignores 109", ignored: health.DefaultConfig().IgnoredXIDs, xid: 109},
		{name: "default treats 48 as critical", ignored: health.DefaultConfig().IgnoredXIDs, xid: 48, wantUnhealthy: true},
		{name: "custom list ignores 94", ignored: []uint64{94}, xid: 94},
		{name: "custom list makes 13 critical", ignored: []uint64{94}, xid: 13, wantUnhealthy: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.IgnoredXIDs = tc.ignored
			h := start(t, newMachine(t, "dgxa100"), nil, cfg)
			if err := h.machine.InjectXID(h.uuids[0], tc.xid); err != nil {
				t.Fatal(err)
			}
			h.marker(h.uuids[1])
			state := h.monitor.State()[h.uuids[0]]
			if state.Healthy == tc.wantUnhealthy {
				t.Errorf("after XID %d: %+v, want unhealthy=%v", tc.xid, state, tc.wantUnhealthy)
			}
			if tc.wantUnhealthy && (state.Reason != fmt.Sprintf("XID %d", tc.xid) || state.XID != tc.xid) {
				t.Errorf("reason = %q, XID = %d", state.Reason, state.XID)
			}
		})
	}
}

func TestDoubleBitECC(t *testing.T) {
	h := start(t, newMachine(t, "mixed"), nil, testConfig())
	gpu := h.uuids[5]
	if err := h.machine.InjectDoubleBitECC(gpu); err != nil {
		t.Fatal(err)
	}
	h.unhealthy(gpu, health.ReasonDoubleBitECC)
	if c := h.monitor.State()[gpu]; c.XID != 0 {
		t.Errorf("XID = %d for an ECC error, want 0", c.XID)
	}
}

// A later fault replaces the reason but not the time the GPU went bad.
func TestNewFaultUpdatesReason(t *testing.T) {
	cfg := testConfig()
	cfg.RecoveryQuiet = time.Hour
	h := start(t, newMachine(t, "dgxh200"), nil, cfg)
	gpu := h.uuids[0]
	h.marker(gpu)
	first := h.monitor.State()[gpu]
	if err := h.machine.InjectDoubleBitECC(gpu); err != nil {
		t.Fatal(err)
	}
	h.unhealthy(gpu, health.ReasonDoubleBitECC)
	second := h.monitor.State()[gpu]
	if !second.Since.Equal(first.Since) {
		t.Errorf("Since moved from %v to %v on a new fault", first.Since, second.Since)
	}
	if got := h.settle(gpu, 2); len(got) != 2 {
		t.Errorf("changes = %+v, want two (XID 79, then ECC)", got)
	}
}

func TestTransientWaitErrors(t *testing.T) {
	cfg := testConfig()
	cfg.WaitFailureLimit = 2 * time.Second
	h := start(t, newMachine(t, "dgxb200"), nil, cfg)
	// Three failures cost 5+10+20 ms of back-off, far below the limit.
	h.machine.FailWait(nvml.ERROR_UNKNOWN, 3)
	// The fake returns armed failures before any event, so once the
	// marker is handled all three failures have been seen.
	h.marker(h.uuids[7])
	time.Sleep(3 * cfg.ProbeInterval)
	if got := h.recorded(""); len(got) != 1 || got[0].UUID != h.uuids[7] {
		t.Errorf("changes = %+v, want only the marker's", got)
	}
}

func TestPersistentWaitErrors(t *testing.T) {
	cfg := testConfig()
	h := start(t, newMachine(t, "dgxa100"), nil, cfg)
	begin := time.Now()
	h.machine.FailWait(nvml.ERROR_UNKNOWN, 1<<30)

	reason := health.ReasonWaitFailingPrefix + nvml.ERROR_UNKNOWN.Error()
	h.eventually("every GPU unhealthy", func(s map[string]health.Change) bool {
		for _, u := range h.uuids {
			if s[u].Healthy || s[u].Reason != reason {
				return false
			}
		}
		return true
	})
	if took := time.Since(begin); took < cfg.WaitFailureLimit {
		t.Errorf("GPUs marked unhealthy after %v, before the %v limit", took, cfg.WaitFailureLimit)
	}

	// Nothing recovers while waits keep failing.
	time.Sleep(cfg.RecoveryQuiet + 3*cfg.ProbeInterval)
	for u, c := range h.monitor.State() {
		if c.Healthy {
			t.Fatalf("GPU %s recovered while waits were still failing", u)
		}
	}

	fixed := time.Now()
	h.machine.FailWait(nvml.SUCCESS, 0)
	h.eventually("every GPU healthy", func(s map[string]health.Change) bool {
		for _, u := range h.uuids {
			if !s[u].Healthy {
				return false
			}
		}
		return true
	})
	// Recovery counts the quiet period from the last failed wait, shortly
	// before the fix. The bound is loose because a loaded machine can
	// delay that report; rules_test.go checks the timing exactly.
	if took := time.Since(fixed); took < cfg.RecoveryQuiet/2 {
		t.Errorf("GPUs recovered %v after waits were fixed, before the quiet period", took)
	}
	// And events flow again on the recreated set.
	h.marker(h.uuids[4])
}

func TestGPULostThenRestored(t *testing.T) {
	cfg := testConfig()
	h := start(t, newMachine(t, "dgxh100"), nil, cfg)
	gpu := h.uuids[3]
	if err := h.machine.LoseGPU(gpu); err != nil {
		t.Fatal(err)
	}
	h.unhealthy(gpu, health.ReasonGPULost)

	// Lost for longer than the quiet period: it must not recover.
	time.Sleep(cfg.RecoveryQuiet + 3*cfg.ProbeInterval)
	if c := h.monitor.State()[gpu]; c.Healthy {
		t.Fatalf("lost GPU recovered while still lost: %+v", c)
	}

	restored := time.Now()
	if err := h.machine.RestoreGPU(gpu); err != nil {
		t.Fatal(err)
	}
	h.healthy(gpu)
	// The last failed probe came shortly before the restore (loose bound,
	// as above).
	if took := time.Since(restored); took < cfg.RecoveryQuiet/2 {
		t.Errorf("GPU recovered %v after it answered again, before the quiet period", took)
	}
	for _, c := range h.recorded("") {
		if c.UUID != gpu {
			t.Errorf("unexpected change for another GPU: %+v", c)
		}
	}
}

// A GPU that is lost before the monitor starts cannot be registered for
// events; once it is back it is registered and its events count.
func TestGPULostAtStartRegistersLater(t *testing.T) {
	cfg := testConfig()
	cfg.RecoveryQuiet = 50 * time.Millisecond
	m := newMachine(t, "mixed")
	gpu := m.UUIDs()[1]
	if err := m.LoseGPU(gpu); err != nil {
		t.Fatal(err)
	}
	h := start(t, m, nil, cfg)
	h.unhealthy(gpu, health.ReasonGPULost)
	if err := m.RestoreGPU(gpu); err != nil {
		t.Fatal(err)
	}
	h.healthy(gpu)
	h.marker(gpu)
}

func TestEventForUnwatchedGPU(t *testing.T) {
	m := newMachine(t, "dgxh100")
	all := m.UUIDs()
	h := start(t, m, all[:4], testConfig())

	other, ret := m.DeviceGetHandleByUUID(all[6])
	if ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	m.InjectEvent(nvml.EventData{Device: other, EventType: nvml.EventTypeXidCriticalError, EventData: 79})
	h.marker(all[0])

	state := h.monitor.State()
	if len(state) != 4 {
		t.Errorf("State has %d GPUs, want the 4 watched", len(state))
	}
	if _, ok := state[all[6]]; ok {
		t.Errorf("State reports unwatched GPU %s", all[6])
	}
	if got := h.recorded(""); len(got) != 1 {
		t.Errorf("changes = %+v, want only the marker's", got)
	}
}

func TestEventWithoutDevice(t *testing.T) {
	tests := []struct {
		name   string
		device nvml.Device
	}{
		{name: "nil interface", device: nil},
		{name: "nil handle", device: (*server.Device)(nil)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, newMachine(t, "mixed"), nil, testConfig())

			// An application XID without a device changes nothing.
			h.machine.InjectEvent(nvml.EventData{Device: tc.device, EventType: nvml.EventTypeXidCriticalError, EventData: 31})
			h.marker(h.uuids[0])
			if got := h.recorded(""); len(got) != 1 {
				t.Fatalf("changes = %+v, want only the marker's", got)
			}

			// A critical one makes every GPU unhealthy.
			h.machine.InjectEvent(nvml.EventData{Device: tc.device, EventType: nvml.EventTypeXidCriticalError, EventData: 62})
			// Every GPU goes unhealthy, as sent: the state recovers after
			// the quiet period.
			h.eventually("every GPU unhealthy", func(map[string]health.Change) bool {
				for _, u := range h.uuids {
					if h.countRecorded(u, "XID 62") == 0 {
						return false
					}
				}
				return true
			})
		})
	}
}

// A GPU that cannot register for events is still probed.
func TestRegisterNotSupportedStillProbed(t *testing.T) {
	m := newMachine(t, "dgxa100")
	gpu := m.UUIDs()[1]
	dev := m.Devices[1].(*server.Device)
	dev.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }

	h := start(t, m, nil, testConfig())
	h.marker(h.uuids[0]) // the other GPUs' events still arrive
	if err := m.LoseGPU(gpu); err != nil {
		t.Fatal(err)
	}
	h.unhealthy(gpu, health.ReasonGPULost)
}

// A probe failing with something other than a lost GPU says what failed.
func TestProbeFailure(t *testing.T) {
	m := newMachine(t, "dgxa100")
	dev := m.Devices[2].(*server.Device)
	var mu sync.Mutex
	failing := false
	dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return nvml.Memory{}, nvml.ERROR_UNKNOWN
		}
		return nvml.Memory{Total: 1 << 30, Free: 1 << 30}, nvml.SUCCESS
	}
	h := start(t, m, nil, testConfig())
	mu.Lock()
	failing = true
	mu.Unlock()
	h.unhealthy(m.UUIDs()[2], health.ReasonProbeFailedPrefix+nvml.ERROR_UNKNOWN.Error())
	mu.Lock()
	failing = false
	mu.Unlock()
	h.healthy(m.UUIDs()[2])
}

func TestRecoveryDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.RecoveryQuiet = 0
	h := start(t, newMachine(t, "dgxh100"), nil, cfg)
	h.marker(h.uuids[5])
	time.Sleep(300 * time.Millisecond)
	if c := h.monitor.State()[h.uuids[5]]; c.Healthy {
		t.Errorf("GPU recovered with recovery disabled: %+v", c)
	}
}

func TestEventsNotSupportedAnywhere(t *testing.T) {
	m := newMachine(t, "dgxh100")
	lib := noEventsLib{m}
	mon := health.NewMonitor(lib, m.UUIDs(), testConfig())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mon.Run(ctx, nil) }()

	if err := m.LoseGPU(m.UUIDs()[0]); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(func() bool { return !mon.State()[m.UUIDs()[0]].Healthy }) {
		t.Fatal("lost GPU not detected without events")
	}
	for _, u := range m.UUIDs()[1:] {
		if !mon.State()[u].Healthy {
			t.Errorf("GPU %s marked unhealthy because events are unsupported", u)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// noEventsLib is a machine on a platform without NVML events.
type noEventsLib struct{ *fakegpu.Machine }

func (noEventsLib) EventSetCreate() (nvml.EventSet, nvml.Return) {
	return nil, nvml.ERROR_NOT_SUPPORTED
}

func TestRunTwice(t *testing.T) {
	m := newMachine(t, "dgxh100")
	cfg := testConfig()
	cfg.RecoveryQuiet = time.Hour
	mon := health.NewMonitor(m, m.UUIDs(), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mon.Run(ctx, nil) }()
	// The first Run is running once it has handled an event.
	gpu := m.UUIDs()[0]
	if err := m.InjectXID(gpu, 79); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(func() bool { return !mon.State()[gpu].Healthy }) {
		t.Fatal("the first Run never handled XID 79")
	}
	if err := mon.Run(ctx, nil); err == nil {
		t.Error("second concurrent Run succeeded")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("first Run: %v", err)
	}
}

func TestStateBeforeRun(t *testing.T) {
	m := newMachine(t, "mixed")
	uuids := append(m.UUIDs(), m.UUIDs()[0]) // a duplicate is watched once
	state := health.NewMonitor(m, uuids, health.DefaultConfig()).State()
	if len(state) != 6 {
		t.Fatalf("State has %d GPUs, want 6", len(state))
	}
	for u, c := range state {
		if !c.Healthy || c.UUID != u || c.Reason != "" || c.Since.IsZero() {
			t.Errorf("initial state of %s = %+v", u, c)
		}
	}
}
