package tesseragpu

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
)

// drain returns what the recorder has been given so far.
func drain(r *events.FakeRecorder) []string {
	var got []string
	for {
		select {
		case e := <-r.Events:
			got = append(got, e)
		default:
			return got
		}
	}
}

// TestEventGate: events recorded before the gate opens are sent when it
// opens, in order; later ones go straight through; a closed gate keeps only
// the newest maxHeldEvents.
func TestEventGate(t *testing.T) {
	gn := gpuNode("a", 1, "A100")
	rec := events.NewFakeRecorder(maxHeldEvents + 8)
	g := newEventGate(rec)
	g.record(gn, v1.EventTypeWarning, "GPUInventoryStale", "first")
	g.record(gn, v1.EventTypeNormal, "GPUInventoryFresh", "second")
	if got := drain(rec); len(got) != 0 {
		t.Fatalf("closed gate sent %q", got)
	}
	g.Open()
	g.record(gn, v1.EventTypeWarning, "GPUInventoryStale", "third")
	want := []string{"Warning GPUInventoryStale first", "Normal GPUInventoryFresh second", "Warning GPUInventoryStale third"}
	if diff := cmp.Diff(want, drain(rec)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	g = newEventGate(rec)
	for i := range maxHeldEvents + 2 {
		g.record(gn, v1.EventTypeNormal, "R", fmt.Sprint(i))
	}
	g.Open()
	got := drain(rec)
	if len(got) != maxHeldEvents {
		t.Fatalf("after overflow: %d events; want %d", len(got), maxHeldEvents)
	}
	if got[0] != "Normal R 2" || got[len(got)-1] != fmt.Sprintf("Normal R %d", maxHeldEvents+1) {
		t.Errorf("after overflow: events from %q to %q; want \"Normal R 2\" to \"Normal R %d\"", got[0], got[len(got)-1], maxHeldEvents+1)
	}
}
