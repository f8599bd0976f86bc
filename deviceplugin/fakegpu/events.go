package fakegpu

import (
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// pendingEvent is an injected event on its way to a listener.
type pendingEvent struct {
	ev nvml.EventData
	// gpu is the GPU the event is about; nil for a broadcast event.
	gpu *fakeGPU
	// broadcast events (InjectEvent) go to every set whatever it
	// registered.
	broadcast bool
	// seq orders injections, so that Free can tell which live sets
	// already received an event.
	seq uint64
}

// eventSet is the fake's nvml.EventSet. The embedded mock supplies the
// calls the fake does not model (they return ERROR_NOT_SUPPORTED); Wait and
// Free are implemented here. Its state is guarded by the machine's lock,
// because injection touches every set at once.
type eventSet struct {
	mock.EventSet

	m          *Machine
	registered map[int]uint64 // GPU index -> event types
	// createdSeq and registeredSeq are the machine's injection counter
	// when the set was created and when it first registered each GPU:
	// the set received, at injection, exactly the events injected later.
	createdSeq    uint64
	registeredSeq map[int]uint64
	queue         []pendingEvent
	freed         bool
	// changed is closed, and replaced, whenever a blocked Wait should
	// look again; closing wakes every waiter, however many there are.
	changed chan struct{}
}

var _ nvml.EventSet = (*eventSet)(nil)

// EventSetCreate returns a new, empty event set. Events injected with
// InjectEvent while no set was live are delivered to it at once.
func (m *Machine) EventSetCreate() (nvml.EventSet, nvml.Return) {
	s := &eventSet{
		m:             m,
		registered:    map[int]uint64{},
		registeredSeq: map[int]uint64{},
		changed:       make(chan struct{}),
	}
	fillUnset(&s.EventSet)

	m.mu.Lock()
	defer m.mu.Unlock()
	s.createdSeq = m.seq
	m.sets[s] = struct{}{}
	kept := m.backlog[:0]
	for _, p := range m.backlog {
		if p.broadcast {
			s.pushLocked(p)
		} else {
			kept = append(kept, p)
		}
	}
	clear(m.backlog[len(kept):])
	m.backlog = kept
	return s, nvml.SUCCESS
}

// wantsLocked reports whether the set registered for a GPU event.
func (s *eventSet) wantsLocked(p pendingEvent) bool {
	if p.broadcast || p.gpu == nil {
		return false
	}
	return s.registered[p.gpu.index]&p.ev.EventType != 0
}

// pushLocked queues an event and wakes the waiters.
func (s *eventSet) pushLocked(p pendingEvent) {
	s.queue = append(s.queue, p)
	s.wakeLocked()
}

// wakeLocked makes every blocked Wait look again.
func (s *eventSet) wakeLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Wait returns the next event for this set, waiting up to timeoutMs
// milliseconds. A failure armed with FailWait comes first, then queued
// events in order, then ERROR_TIMEOUT.
func (s *eventSet) Wait(timeoutMs uint32) (nvml.EventData, nvml.Return) {
	var timeout <-chan time.Time
	for {
		s.m.mu.Lock()
		switch {
		case s.freed:
			s.m.mu.Unlock()
			return nvml.EventData{}, nvml.ERROR_UNINITIALIZED
		case s.m.failLeft > 0:
			s.m.failLeft--
			ret := s.m.failRet
			s.m.mu.Unlock()
			return nvml.EventData{}, ret
		case len(s.queue) > 0:
			p := s.queue[0]
			s.queue[0] = pendingEvent{}
			s.queue = s.queue[1:]
			if len(s.queue) == 0 {
				s.queue = nil
			}
			s.m.mu.Unlock()
			return p.ev, nvml.SUCCESS
		}
		changed := s.changed
		s.m.mu.Unlock()

		if timeoutMs == 0 {
			return nvml.EventData{}, nvml.ERROR_TIMEOUT
		}
		if timeout == nil {
			t := time.NewTimer(time.Duration(timeoutMs) * time.Millisecond)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-changed:
		case <-timeout:
			return nvml.EventData{}, nvml.ERROR_TIMEOUT
		}
	}
}

// Free releases the set. A Wait blocked on it returns. Events it had queued
// but not returned are passed to the live sets that want them but were not
// listening when they were injected, or else held by the machine, so that a
// listener that replaces its set after an error loses nothing.
func (s *eventSet) Free() nvml.Return {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.freed {
		return nvml.ERROR_UNINITIALIZED
	}
	s.freed = true
	delete(m.sets, s)
	for _, p := range s.queue {
		wanted := false
		for other := range m.sets {
			switch {
			case p.broadcast:
				wanted = true
				if other.createdSeq >= p.seq {
					other.pushLocked(p)
				}
			case other.wantsLocked(p):
				wanted = true
				if other.registeredSeq[p.gpu.index] >= p.seq {
					other.pushLocked(p)
				}
			}
		}
		if !wanted {
			m.holdLocked(p)
		}
	}
	s.queue = nil
	s.wakeLocked()
	return nvml.SUCCESS
}
