package health

import (
	"context"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
)

// These tests drive the monitor's rules directly, one step at a time, on a
// fake clock, so the timing of the recovery rule is checked exactly.

type ruleHarness struct {
	t     *testing.T
	ctx   context.Context
	clock *clocktesting.FakeClock
	fake  *fakegpu.Machine
	m     *Monitor
	uuids []string
}

func newRuleHarness(t *testing.T, quiet time.Duration) *ruleHarness {
	t.Helper()
	fake, err := fakegpu.New("dgxh100", "rules")
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	cfg := DefaultConfig()
	cfg.RecoveryQuiet = quiet
	cfg.WaitFailureLimit = time.Minute
	cfg.Clock = clk
	return &ruleHarness{t: t, ctx: context.Background(), clock: clk, fake: fake, m: NewMonitor(fake, fake.UUIDs(), cfg), uuids: fake.UUIDs()}
}

func (h *ruleHarness) xid(uuid string, xid uint64) []Change {
	return h.m.handle(h.ctx, waitMsg{kind: msgEvent, uuid: uuid, ev: nvml.EventData{EventType: nvml.EventTypeXidCriticalError, EventData: xid}})
}

// tick is what Run does on every probe tick.
func (h *ruleHarness) tick() []Change {
	out := append(h.m.probeAll(h.ctx), h.m.checkWaitFailure(h.ctx, h.clock.Now())...)
	return append(out, h.m.recover(h.ctx)...)
}

func (h *ruleHarness) expect(got []Change, want ...Change) {
	h.t.Helper()
	if len(got) != len(want) {
		h.t.Fatalf("changes = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			h.t.Fatalf("change %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestRuleQuietPeriodRestartsOnNewFault(t *testing.T) {
	h := newRuleHarness(t, 5*time.Minute)
	u := h.uuids[0]
	t0 := h.clock.Now()

	h.expect(h.xid(u, 79), Change{UUID: u, Reason: "XID 79", XID: 79, Since: t0})
	h.clock.Step(4 * time.Minute)
	h.expect(h.tick())
	h.expect(h.xid(u, 79)) // the same fault again: no change, but the quiet period restarts
	h.clock.Step(4 * time.Minute)
	h.expect(h.tick())
	h.expect(h.xid(u, 48), Change{UUID: u, Reason: "XID 48", XID: 48, Since: t0})
	h.clock.Step(5*time.Minute - time.Second)
	h.expect(h.tick())
	h.clock.Step(time.Second)
	h.expect(h.tick(), Change{UUID: u, Healthy: true, Since: h.clock.Now()})
}

func TestRuleLostGPURecoversOnlyAfterAnsweringAndQuiet(t *testing.T) {
	h := newRuleHarness(t, 5*time.Minute)
	u := h.uuids[1]
	if err := h.fake.LoseGPU(u); err != nil {
		t.Fatal(err)
	}
	lostAt := h.clock.Now()
	h.expect(h.tick(), Change{UUID: u, Reason: ReasonGPULost, Since: lostAt})
	for i := 0; i < 10; i++ {
		h.clock.Step(time.Minute)
		h.expect(h.tick()) // still lost, never recovers
	}
	if err := h.fake.RestoreGPU(u); err != nil {
		t.Fatal(err)
	}
	h.clock.Step(time.Minute)
	h.expect(h.tick()) // answers, but only a minute since the last failed probe
	h.clock.Step(4 * time.Minute)
	h.expect(h.tick(), Change{UUID: u, Healthy: true, Since: h.clock.Now()})
}

func TestRuleWaitFailures(t *testing.T) {
	h := newRuleHarness(t, 5*time.Minute)
	failed := waitMsg{kind: msgWaitFailed, ret: nvml.ERROR_UNKNOWN}
	xidGPU := h.uuids[2]
	xidAt := h.clock.Now()
	h.expect(h.xid(xidGPU, 79), Change{UUID: xidGPU, Reason: "XID 79", XID: 79, Since: xidAt})

	h.expect(h.m.handle(h.ctx, failed))
	h.clock.Step(30 * time.Second)
	h.expect(h.m.handle(h.ctx, failed)) // within the limit: nothing
	h.clock.Step(30 * time.Second)

	// The limit is reached between failure reports: the tick applies it.
	got := h.tick()
	if len(got) != len(h.uuids)-1 {
		t.Fatalf("got %d changes, want every GPU but the one with an XID: %+v", len(got), got)
	}
	for _, c := range got {
		if c.Healthy || c.Reason != "NVML event wait failing: ERROR_UNKNOWN" || c.UUID == xidGPU {
			t.Fatalf("unexpected change %+v", c)
		}
	}
	if c := h.m.State()[xidGPU]; c.Reason != "XID 79" {
		t.Errorf("the blanket reason replaced a GPU's own: %+v", c)
	}

	h.clock.Step(10 * time.Minute)
	h.expect(h.m.handle(h.ctx, failed))
	h.expect(h.tick()) // no recovery while waits are failing
	h.expect(h.m.handle(h.ctx, waitMsg{kind: msgWaitWorking}))
	h.clock.Step(5*time.Minute - time.Second)
	h.expect(h.tick())
	h.clock.Step(time.Second)
	if got := h.tick(); len(got) != len(h.uuids) {
		t.Fatalf("got %d recoveries, want %d: %+v", len(got), len(h.uuids), got)
	}
}

func TestRuleRecoveryDisabled(t *testing.T) {
	h := newRuleHarness(t, 0)
	u := h.uuids[3]
	h.xid(u, 79)
	for i := 0; i < 100; i++ {
		h.clock.Step(time.Hour)
		h.expect(h.tick())
	}
	if h.m.State()[u].Healthy {
		t.Error("GPU recovered with recovery disabled")
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{RecoveryQuiet: -time.Second, BackoffInitial: time.Minute, BackoffMax: time.Second}.withDefaults()
	d := DefaultConfig()
	if c.WaitTimeout != d.WaitTimeout || c.ProbeInterval != d.ProbeInterval || c.WaitFailureLimit != d.WaitFailureLimit {
		t.Errorf("zero durations not defaulted: %+v", c)
	}
	if c.RecoveryQuiet != 0 {
		t.Errorf("negative RecoveryQuiet = %v, want 0 (disabled)", c.RecoveryQuiet)
	}
	if c.BackoffMax != time.Minute {
		t.Errorf("BackoffMax = %v, want raised to BackoffInitial", c.BackoffMax)
	}
	if c.Clock == nil || c.IgnoredXIDs != nil {
		t.Errorf("Clock %v, IgnoredXIDs %v", c.Clock, c.IgnoredXIDs)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: time.Second, max: 5 * time.Second}
	var got []time.Duration
	for i := 0; i < 5; i++ {
		got = append(got, b.step())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pauses = %v, want %v", got, want)
		}
	}
	b.reset()
	if d := b.step(); d != time.Second {
		t.Errorf("after reset: %v", d)
	}
}
