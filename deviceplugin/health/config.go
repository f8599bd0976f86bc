package health

import (
	"math"
	"time"

	"k8s.io/utils/clock"
)

// Config tunes a Monitor. Start from DefaultConfig: NewMonitor replaces zero
// or negative durations with the defaults (RecoveryQuiet excepted, where 0
// has a meaning), but takes IgnoredXIDs as given, so a nil list means that
// every XID is critical.
type Config struct {
	// IgnoredXIDs are XIDs that report a fault in an application, not in
	// the GPU (for example 13, a graphics engine exception, or 31, a GPU
	// memory page fault); the GPU stays healthy when they occur.
	IgnoredXIDs []uint64

	// RecoveryQuiet is how long an unhealthy GPU must answer probes with
	// no new critical event before it is marked healthy again. Zero
	// disables automatic recovery: an unhealthy GPU stays unhealthy until
	// the process restarts.
	RecoveryQuiet time.Duration

	// WaitTimeout is the timeout of each NVML event wait. It bounds how
	// long Run takes to return after its context ends, since an NVML wait
	// cannot be interrupted.
	WaitTimeout time.Duration

	// ProbeInterval is how often every GPU is queried to check that it
	// still answers, and so also how often recovery is considered and
	// failed event registrations are retried.
	ProbeInterval time.Duration

	// WaitFailureLimit is how long NVML event waits may keep failing before
	// every GPU is marked unhealthy. Shorter failures are only retried:
	// while events cannot be read a fault could go unseen, but a brief
	// driver hiccup must not take a whole node out of service.
	WaitFailureLimit time.Duration

	// BackoffInitial and BackoffMax bound the exponential back-off between
	// attempts to recover from a failing event wait.
	BackoffInitial time.Duration
	BackoffMax     time.Duration

	// Clock is the time source; nil means the real clock. Tests may pass a
	// fake one.
	Clock clock.WithTicker
}

// defaultIgnoredXIDs are the XIDs that NVIDIA documents as caused by user
// applications rather than by the GPU: 13 (graphics engine exception), 31
// (GPU memory page fault), 43 (GPU stopped processing), 45 (preemptive
// cleanup after an earlier error), 68 (video processor exception) and 109
// (context switch timeout).
var defaultIgnoredXIDs = []uint64{13, 31, 43, 45, 68, 109}

// DefaultConfig returns the production settings: application XIDs 13, 31,
// 43, 45, 68 and 109 ignored, 5 minutes of quiet before recovery, 1 s event
// waits, probes every 10 s, and every GPU marked unhealthy after a minute of
// failing event waits. Each call returns a fresh copy.
func DefaultConfig() Config {
	return Config{
		IgnoredXIDs:      append([]uint64(nil), defaultIgnoredXIDs...),
		RecoveryQuiet:    5 * time.Minute,
		WaitTimeout:      time.Second,
		ProbeInterval:    10 * time.Second,
		WaitFailureLimit: time.Minute,
		BackoffInitial:   200 * time.Millisecond,
		BackoffMax:       15 * time.Second,
		Clock:            clock.RealClock{},
	}
}

// withDefaults fills in unset fields and repairs inconsistent ones, so the
// monitor never spins on a zero interval.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	orDefault := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	orDefault(&c.WaitTimeout, d.WaitTimeout)
	orDefault(&c.ProbeInterval, d.ProbeInterval)
	orDefault(&c.WaitFailureLimit, d.WaitFailureLimit)
	orDefault(&c.BackoffInitial, d.BackoffInitial)
	orDefault(&c.BackoffMax, d.BackoffMax)
	if c.BackoffMax < c.BackoffInitial {
		c.BackoffMax = c.BackoffInitial
	}
	if c.RecoveryQuiet < 0 {
		c.RecoveryQuiet = 0
	}
	// NVML takes the wait timeout in milliseconds as a uint32.
	if c.WaitTimeout < time.Millisecond {
		c.WaitTimeout = time.Millisecond
	}
	if c.WaitTimeout > math.MaxUint32*time.Millisecond {
		c.WaitTimeout = math.MaxUint32 * time.Millisecond
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	c.IgnoredXIDs = append([]uint64(nil), c.IgnoredXIDs...)
	return c
}
