package tesseragpu

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	v1helper "k8s.io/kubernetes/pkg/apis/core/v1/helper"

	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// A NoExecute device taint does to the pods on a GPU what a NoExecute node
// taint does to the pods on a node: a pod that does not tolerate it is
// evicted at once; one that tolerates it with tolerationSeconds is evicted
// that long after the scheduler first saw the taint; one that tolerates it
// without a limit stays. The device plugin's health taints are NoSchedule
// unless it runs with --health-taint-effect=NoExecute; administrators set
// NoExecute taints in GPUNode.spec.deviceTaints.
//
// The evictor runs in tessera-scheduler, which already deletes pods for
// preemption (system:kube-scheduler may), and reads the plugin's cache,
// which knows which pod holds which GPU. Each replica runs one; deletions
// carry the pod's UID as a precondition, so two replicas cannot evict a
// pod twice or evict its same-name successor. After a scheduler restart the
// tolerationSeconds count again from when the new process first sees the
// taint (device taints carry no time of their own).

const (
	// reasonDeviceTaintEviction is the event and DisruptionTarget reason.
	reasonDeviceTaintEviction = "DeletionByDeviceTaintManager"
	// evictRetry is how soon a failed eviction is tried again.
	evictRetry = 5 * time.Second
)

// evictor deletes pods from GPUs with NoExecute device taints they do not
// tolerate.
type evictor struct {
	cache  *gpucache.Cache
	client kubernetes.Interface
	warn   func(regarding runtime.Object, reason, note string)
	now    func() time.Time
	kick   chan struct{}

	mu sync.Mutex
	// since is when each NoExecute taint of each GPU was first seen, by
	// node/uuid/taint.
	since map[string]time.Time
	// evicted are the pods already deleted (or gone), so a pass does not
	// delete them again while the informer catches up.
	evicted map[types.UID]bool
	// wake fires the pass at which the next toleration runs out.
	wake *time.Timer
}

func newEvictor(c *gpucache.Cache, client kubernetes.Interface, warn func(runtime.Object, string, string), now func() time.Time) *evictor {
	ev := &evictor{cache: c, client: client, warn: warn, now: now, kick: make(chan struct{}, 1),
		since: map[string]time.Time{}, evicted: map[types.UID]bool{}}
	c.EvictKick = ev.poke
	return ev
}

// poke asks for a pass soon; it never blocks.
func (ev *evictor) poke() {
	select {
	case ev.kick <- struct{}{}:
	default:
	}
}

// run makes a pass on every poke until ctx ends.
func (ev *evictor) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			ev.mu.Lock()
			if ev.wake != nil {
				ev.wake.Stop()
			}
			ev.mu.Unlock()
			return
		case <-ev.kick:
		}
		ev.pass(ctx)
	}
}

// verdict is what a pass decides for one pod: evict now (at zero), evict
// at a time, or never.
type verdict struct {
	at    time.Time
	never bool
	why   string
}

// judge decides for one pod holding GPUs with NoExecute taints. It records
// when each taint was first seen in seen.
func (ev *evictor) judge(logger klog.Logger, u gpucache.TaintedUse, now time.Time, seen map[string]bool) verdict {
	var taints []v1.Taint
	var desc []string
	var first time.Time
	uuids := make([]string, 0, len(u.Taints))
	for uuid := range u.Taints {
		uuids = append(uuids, uuid)
	}
	sort.Strings(uuids)
	for _, uuid := range uuids {
		for _, t := range u.Taints[uuid] {
			key := u.Node + "/" + uuid + "/" + t.ToString()
			seen[key] = true
			at, ok := ev.since[key]
			if !ok {
				at = now
				ev.since[key] = at
			}
			if first.IsZero() || at.Before(first) {
				first = at
			}
			taints = append(taints, t)
			desc = append(desc, fmt.Sprintf("GPU %s has device taint %s", uuid, t.ToString()))
		}
	}
	why := strings.Join(desc, "; ") + " on node " + u.Node
	tolerated, matching := v1helper.GetMatchingTolerations(logger, taints, u.Tolerations)
	if !tolerated {
		return verdict{why: why + ", which the pod does not tolerate"}
	}
	limit, ok := minTolerationSeconds(matching)
	if !ok {
		return verdict{never: true}
	}
	return verdict{at: first.Add(limit), why: fmt.Sprintf("%s, which the pod tolerates for %s", why, limit)}
}

// minTolerationSeconds is the shortest tolerationSeconds of the matching
// tolerations; false when one of them tolerates for ever.
func minTolerationSeconds(tolerations []v1.Toleration) (time.Duration, bool) {
	var limit time.Duration
	found := false
	for _, t := range tolerations {
		if t.TolerationSeconds == nil {
			return 0, false
		}
		d := max(time.Duration(*t.TolerationSeconds)*time.Second, 0)
		if !found || d < limit {
			limit, found = d, true
		}
	}
	return limit, found
}

// pass evicts every pod whose time is up and arms the timer for the next.
func (ev *evictor) pass(ctx context.Context) {
	logger := klog.FromContext(ctx)
	uses := ev.cache.NoExecuteUses()
	slices.SortFunc(uses, func(a, b gpucache.TaintedUse) int { return strings.Compare(string(a.UID), string(b.UID)) })
	ev.mu.Lock()
	now := ev.now()
	seen := map[string]bool{}
	present := map[types.UID]bool{}
	var due []gpucache.TaintedUse
	var whys []string
	var next time.Time
	for _, u := range uses {
		present[u.UID] = true
		v := ev.judge(logger, u, now, seen)
		switch {
		case v.never || ev.evicted[u.UID]:
		case v.at.After(now):
			if next.IsZero() || v.at.Before(next) {
				next = v.at
			}
		default:
			due = append(due, u)
			whys = append(whys, v.why)
		}
	}
	// Forget taints that are gone (a taint set again counts afresh) and
	// pods no longer holding tainted GPUs.
	for key := range ev.since {
		if !seen[key] {
			delete(ev.since, key)
		}
	}
	for uid := range ev.evicted {
		if !present[uid] {
			delete(ev.evicted, uid)
		}
	}
	ev.mu.Unlock()

	failed := false
	for i, u := range due {
		if err := ev.evict(ctx, u, whys[i]); err != nil {
			logger.Error(err, "Evicting a pod from a GPU with a NoExecute device taint", "pod", klog.KRef(u.Namespace, u.Name), "node", u.Node)
			failed = true
			continue
		}
		ev.mu.Lock()
		ev.evicted[u.UID] = true
		ev.mu.Unlock()
	}
	if failed {
		if retry := now.Add(evictRetry); next.IsZero() || retry.Before(next) {
			next = retry
		}
	}
	ev.arm(next, now)
}

// arm makes the evictor pass again at next (nothing when it is zero).
func (ev *evictor) arm(next, now time.Time) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.wake != nil {
		ev.wake.Stop()
	}
	if next.IsZero() {
		return
	}
	ev.wake = time.AfterFunc(next.Sub(now)+time.Millisecond, ev.poke)
}

// evict marks the pod as disrupted by the device taint, tells its owner
// why, and deletes it, with its UID as a precondition.
func (ev *evictor) evict(ctx context.Context, u gpucache.TaintedUse, why string) error {
	ref := &v1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: u.Namespace, Name: u.Name, UID: u.UID}
	msg := "Evicting: " + why
	// The UID in the patch is a precondition: a same-name successor of the
	// pod is not marked.
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": u.UID}, "status": map[string]any{"conditions": []map[string]any{{
		"type": v1.DisruptionTarget, "status": v1.ConditionTrue, "reason": reasonDeviceTaintEviction,
		"message": gpucache.EventNote(msg), "lastTransitionTime": metav1.NewTime(ev.now()),
	}}}})
	if err != nil {
		return err
	}
	pods := ev.client.CoreV1().Pods(u.Namespace)
	if _, err := pods.Patch(ctx, u.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return fmt.Errorf("marking pod %s/%s as disrupted: %w", u.Namespace, u.Name, err)
	}
	ev.warn(ref, reasonDeviceTaintEviction, gpucache.EventNote(msg))
	klog.FromContext(ctx).Info("Evicting pod from a GPU with a NoExecute device taint", "pod", klog.KRef(u.Namespace, u.Name), "node", u.Node, "why", why)
	err = pods.Delete(ctx, u.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &u.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting pod %s/%s: %w", u.Namespace, u.Name, err)
	}
	return nil
}
