package tesseragpu

import (
	"context"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// waitingPods remembers, for each GPU pod that has been through PreFilter
// and not yet reserved, the cache generation its last attempt saw.
//
// The plugin's cache is fed by its own informer handlers, which can lag
// behind the scheduler's. When a GPU pod is freed or an inventory changes,
// the scheduler may retry a waiting pod before the cache knows, fail it
// again, and then have no further event to retry it on. So whenever the cache
// changes in a way that may help, the pods whose last attempt predates the
// change are activated; and queueing hints queue a pod whenever the cache
// has changed since its last attempt.
type waitingPods struct {
	mu   sync.Mutex
	pods map[types.UID]waitingPod
	// kick wakes the activation loop; it holds at most one pending wake-up,
	// so a burst of changes costs one pass.
	kick chan struct{}
}

type waitingPod struct {
	pod *v1.Pod
	gen uint64
}

func newWaitingPods() *waitingPods {
	return &waitingPods{pods: map[types.UID]waitingPod{}, kick: make(chan struct{}, 1)}
}

func (w *waitingPods) attempt(pod *v1.Pod, gen uint64) {
	w.mu.Lock()
	w.pods[pod.UID] = waitingPod{pod: pod, gen: gen}
	w.mu.Unlock()
}

func (w *waitingPods) done(uid types.UID) {
	w.mu.Lock()
	delete(w.pods, uid)
	w.mu.Unlock()
}

// seen returns the generation of the pod's last attempt.
func (w *waitingPods) seen(uid types.UID) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.pods[uid]
	return p.gen, ok
}

// notify asks the activation loop for a pass. It never blocks: it is called
// from informer handlers and from queueing hints, which run under the
// scheduling queue's lock that Activate takes.
func (w *waitingPods) notify() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// stale removes and returns the pods whose last attempt saw an older
// generation than gen.
func (w *waitingPods) stale(gen uint64) map[string]*v1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out map[string]*v1.Pod
	for uid, p := range w.pods {
		if p.gen < gen {
			if out == nil {
				out = map[string]*v1.Pod{}
			}
			out[p.pod.Namespace+"/"+p.pod.Name] = p.pod
			delete(w.pods, uid)
		}
	}
	return out
}

// activateLoop moves pods that waited on an older cache back to the active
// queue whenever the cache changes, until ctx ends.
func (pl *TesseraGPU) activateLoop(ctx context.Context, act fwk.PodActivator) {
	logger := klog.FromContext(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-pl.waiting.kick:
		}
		if pods := pl.waiting.stale(pl.cache.Generation()); len(pods) > 0 {
			logger.V(4).Info("GPU state changed; retrying waiting pods", "count", len(pods))
			act.Activate(logger, pods)
		}
	}
}

// changedSince queues a pod if the cache changed since its last attempt.
func (pl *TesseraGPU) changedSince(pod *v1.Pod) fwk.QueueingHint {
	if gen, ok := pl.waiting.seen(pod.UID); ok && gen >= pl.cache.Generation() {
		return fwk.QueueSkip
	}
	return fwk.Queue
}
