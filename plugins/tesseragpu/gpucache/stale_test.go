package gpucache

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/plugins/tesseragpu/internal/gputest"
)

// eventLog collects the cache's events as "Type Reason Kind/Name uid".
type eventLog struct {
	mu  sync.Mutex
	got []string
}

func (l *eventLog) hook(typ string) func(runtime.Object, string, string) {
	return func(regarding runtime.Object, reason, note string) {
		ref, ok := regarding.(*v1.ObjectReference)
		l.mu.Lock()
		defer l.mu.Unlock()
		if !ok {
			l.got = append(l.got, fmt.Sprintf("%s %s on %T", typ, reason, regarding))
			return
		}
		l.got = append(l.got, fmt.Sprintf("%s %s %s/%s %s", typ, reason, ref.Kind, ref.Name, ref.UID))
	}
}

func (l *eventLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	got := l.got
	l.got = nil
	return got
}

func watchEvents(c *Cache) *eventLog {
	l := &eventLog{}
	c.Warn, c.Normal = l.hook(v1.EventTypeWarning), l.hook(v1.EventTypeNormal)
	return l
}

// TestStaleInventoryEvents checks that a GPUNode gets one Warning when the
// scheduler notices its inventory stale and one Normal when a heartbeat
// brings it back: once per transition, however often the cache looks.
func TestStaleInventoryEvents(t *testing.T) {
	const bound = 2 * time.Minute // the default staleness
	type step struct {
		at time.Duration // the clock, from now
		// beat, if set, applies the GPUNode with this heartbeat age (or
		// none, when noBeat); otherwise the node's timer fires.
		beat   *time.Duration
		noBeat bool
		// written, if set, is how long ago the API server last wrote the
		// GPUNode (its managedFields time).
		written *time.Duration
		uid     types.UID
		delete  bool
		want    []string
	}
	age := func(d time.Duration) *time.Duration { return &d }
	stale := func(uid string) string { return "Warning GPUInventoryStale GPUNode/a " + uid }
	fresh := func(uid string) string { return "Normal GPUInventoryFresh GPUNode/a " + uid }
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "fresh stays fresh", steps: []step{
			{beat: age(10 * time.Second)},
			{at: time.Minute, beat: age(5 * time.Second)},
			{at: time.Minute},
			{at: 2 * time.Minute},
		}},
		{name: "heartbeats stop", steps: []step{
			{beat: age(10 * time.Second)},
			{at: bound - 10*time.Second}, // exactly at the bound: not yet
			{at: bound - 9*time.Second, want: []string{stale("uid-1")}},
			{at: bound},
			{at: time.Hour},
		}},
		{name: "heartbeat brings it back", steps: []step{
			{beat: age(10 * time.Second)},
			{at: 3 * time.Minute, want: []string{stale("uid-1")}},
			{at: 3 * time.Minute, beat: age(time.Second), want: []string{fresh("uid-1")}},
			{at: 3*time.Minute + 10*time.Second, beat: age(time.Second)},
			{at: 4 * time.Minute},
			// Two minutes after the scheduler saw the last beat.
			{at: 5*time.Minute + 10*time.Second},
			{at: 5*time.Minute + 11*time.Second, want: []string{stale("uid-1")}},
		}},
		{name: "a heartbeat that changes is news, whatever its stamp", steps: []step{
			{beat: age(10 * time.Second)},
			{at: 3 * time.Minute, want: []string{stale("uid-1")}},
			{at: 3 * time.Minute, beat: age(5 * time.Minute), want: []string{fresh("uid-1")}},
		}},
		{name: "stale when first seen, by the node's stamp", steps: []step{
			{beat: age(time.Hour), want: []string{stale("uid-1")}},
			{at: time.Minute},
			{at: time.Minute, beat: age(time.Hour), want: []string{fresh("uid-1")}},
		}},
		{name: "first seen by the API server's write time", steps: []step{
			{beat: age(time.Hour), written: age(10 * time.Second)},
			{at: bound - 10*time.Second},
			{at: bound - 9*time.Second, want: []string{stale("uid-1")}},
		}},
		{name: "node clock an hour ahead: stale on time once it stops", steps: []step{
			{beat: age(-time.Hour)},
			{at: 30 * time.Second, beat: age(-time.Hour)},
			{at: 30*time.Second + bound},
			{at: 30*time.Second + bound + time.Second, want: []string{stale("uid-1")}},
		}},
		{name: "node clock an hour behind: fresh while it beats", steps: []step{
			{beat: age(time.Hour), written: age(0)},
			{at: time.Minute, beat: age(time.Hour)},
			{at: 2 * time.Minute, beat: age(time.Hour)},
			{at: 3 * time.Minute},
			{at: 4*time.Minute + time.Second, want: []string{stale("uid-1")}},
		}},
		{name: "a new GPUNode gets time for its first heartbeat", steps: []step{
			{noBeat: true},
			{at: time.Minute, noBeat: true},
			{at: time.Minute, beat: age(0)},
		}},
		{name: "a GPUNode that never reports", steps: []step{
			{noBeat: true},
			{at: bound + time.Second, want: []string{stale("uid-1")}},
		}},
		{name: "recreated with a new UID", steps: []step{
			{beat: age(time.Hour), want: []string{stale("uid-1")}},
			{delete: true},
			{at: time.Minute, beat: age(0), uid: "uid-2"},
			{at: 4 * time.Minute, want: []string{stale("uid-2")}},
			{at: 4 * time.Minute, beat: age(0), uid: "uid-2", want: []string{fresh("uid-2")}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(klog.Background(), bound)
			stop := make(chan struct{})
			defer close(stop)
			c.Stop = stop
			log := watchEvents(c)
			rv := 0
			for i, s := range tt.steps {
				clock := gputest.Now.Add(s.at)
				// Under the cache's lock: a staleness timer armed by an
				// earlier step may be reading the clock.
				c.mu.Lock()
				c.Now = func() time.Time { return clock }
				c.mu.Unlock()
				uid := s.uid
				if uid == "" {
					uid = "uid-1"
				}
				switch {
				case s.delete:
					c.DeleteGPUNode("a")
				case s.beat != nil || s.noBeat:
					rv++
					gn := gputest.GPUNode("a", 2, "H100")
					gn.UID, gn.ResourceVersion = uid, fmt.Sprint(rv)
					gn.CreationTimestamp = metav1.NewTime(gputest.Now)
					gn.Status.HeartbeatTime = nil
					if s.beat != nil {
						hb := metav1.NewTime(clock.Add(-*s.beat))
						gn.Status.HeartbeatTime = &hb
					}
					if s.written != nil {
						w := metav1.NewTime(clock.Add(-*s.written))
						gn.ManagedFields = []metav1.ManagedFieldsEntry{{Time: &w}}
					}
					c.SetGPUNode(gn)
				default:
					c.checkStale("a")
				}
				if got := log.take(); strings.Join(got, "; ") != strings.Join(s.want, "; ") {
					t.Errorf("step %d: events %q, want %q", i, got, s.want)
				}
			}
		})
	}
}

// TestStaleInventoryTimer checks that the cache notices a GPUNode whose
// heartbeats stop by itself, with no update to look at.
func TestStaleInventoryTimer(t *testing.T) {
	c := New(klog.Background(), 50*time.Millisecond)
	stop := make(chan struct{})
	defer close(stop)
	c.Stop = stop
	events := make(chan string, 4)
	c.Warn = func(_ runtime.Object, reason, _ string) { events <- reason }
	gn := gputest.GPUNode("a", 1, "H100")
	hb := metav1.Now()
	gn.Status.HeartbeatTime = &hb
	c.SetGPUNode(gn)
	select {
	case r := <-events:
		if r != reasonInventoryStale {
			t.Errorf("event %s", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event for a GPUNode whose heartbeat went stale")
	}
	select {
	case r := <-events:
		t.Errorf("second event %s", r)
	case <-time.After(200 * time.Millisecond):
	}
}
