package tesseragpu

import (
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
)

// maxHeldEvents bounds what an eventGate keeps while closed. A scheduler
// that starts against thousands of stale GPUNodes holds one event per node;
// past the bound the oldest matter least and are dropped.
const maxHeldEvents = 4096

// eventGate holds the plugin's events until the scheduler records events at
// all. kube-scheduler builds its plugins, and the plugin starts its GPUNode
// informer, before it starts the event broadcaster, and the broadcaster drops
// whatever it is given before then. A GPUNode already stale when the
// scheduler starts is announced in the first moments, so without the gate its
// GPUInventoryStale event was lost whenever the informer won that race.
// The scheduler starts its broadcaster before its informers, so the gate
// opens once the scheduler's own informers have synced.
type eventGate struct {
	recorder events.EventRecorder

	mu   sync.Mutex
	open bool
	held []heldEvent
}

type heldEvent struct {
	regarding               runtime.Object
	eventType, reason, note string
}

func newEventGate(recorder events.EventRecorder) *eventGate {
	return &eventGate{recorder: recorder}
}

// record sends the event now if the gate is open, or keeps it for Open.
func (g *eventGate) record(regarding runtime.Object, eventType, reason, note string) {
	g.mu.Lock()
	if !g.open {
		if len(g.held) == maxHeldEvents {
			g.held = append(g.held[:0], g.held[1:]...)
		}
		g.held = append(g.held, heldEvent{regarding, eventType, reason, note})
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	g.recorder.Eventf(regarding, nil, eventType, reason, "Scheduling", "%s", note)
}

// Open sends the held events, in the order they were recorded, and lets
// every later one through at once.
func (g *eventGate) Open() {
	g.mu.Lock()
	held := g.held
	g.held, g.open = nil, true
	// Sent under the lock, so that an event recorded meanwhile cannot
	// overtake the held ones.
	for _, e := range held {
		g.recorder.Eventf(e.regarding, nil, e.eventType, e.reason, "Scheduling", "%s", e.note)
	}
	g.mu.Unlock()
}
