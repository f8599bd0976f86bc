package gpucache

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// SetGPUNode applies a GPUNode. Objects older than the one applied (by
// resourceVersion) are ignored, so a late informer event cannot undo what a
// queueing hint already applied.
func (c *Cache) SetGPUNode(gn *v1alpha1.GPUNode) {
	c.mu.Lock()
	r := c.recordLocked(gn.Name)
	// r.rv survives a deletion while pods keep the record, so a late event
	// cannot resurrect the inventory; once the record is dropped, nothing
	// remembers the deleted version.
	if r.rv != "" && !newerRV(gn.ResourceVersion, r.rv) {
		c.unlock(false)
		return
	}
	inv := gpu.Inventory(gn)
	if len(inv.Problems) > 0 && (r.Inv == nil || fmt.Sprint(r.Inv.Problems) != fmt.Sprint(inv.Problems)) {
		c.logger.Info("GPUNode has GPUs that cannot be used; they are skipped", "gpuNode", gn.Name, "problems", inv.Problems)
		c.Warn(gpuNodeRef(gn), "InvalidGPUInventory", EventNote("GPUs skipped: "+strings.Join(inv.Problems, "; ")))
	}
	now := c.Now()
	wasStale := r.gn == nil || device.Stale(r.seen, now, c.staleness)
	switch {
	case gn.Status.HeartbeatTime == nil:
		r.seen = time.Time{}
	case r.gn == nil:
		r.seen = firstSeen(gn, now)
	case r.gn.Status.HeartbeatTime == nil || !r.gn.Status.HeartbeatTime.Equal(gn.Status.HeartbeatTime):
		r.seen = now
	}
	// Filter judges the inventory by when the scheduler saw it beat, not
	// by the node's own clock.
	inv.Heartbeat = r.seen
	changed := r.gn == nil || InventoryChanged(r.gn, gn) || (wasStale && !device.Stale(r.seen, now, c.staleness))
	c.inventoryLocked(r.Inv, inv)
	r.rv, r.gn, r.Inv, r.dra = gn.ResourceVersion, gn, inv, false
	c.publishLocked(r)
	c.stalenessLocked(r, now)
	// A NoExecute taint set or lifted changes what the evictor must do.
	had, has := c.noExecute[gn.Name], hasNoExecute(inv)
	if has {
		c.noExecute[gn.Name] = true
	} else {
		delete(c.noExecute, gn.Name)
	}
	c.unlock(changed)
	if had || has {
		c.EvictKick()
	}
}

// Event reasons for a node's inventory going stale and coming back.
const (
	reasonInventoryStale = "GPUInventoryStale"
	reasonInventoryFresh = "GPUInventoryFresh"
)

// firstSeen is when a GPUNode seen for the first time (after a restart,
// or when it is created) last beat, on the scheduler's side of the wire:
// the API server's time of the object's last write, which the informer
// keeps (see trimManagedFields), or, where that is not known, the node's
// own heartbeat; never later than now. Every later change of the
// heartbeat counts from when the scheduler sees it.
func firstSeen(gn *v1alpha1.GPUNode, now time.Time) time.Time {
	var at time.Time
	if w := LastWrite(gn.ManagedFields); w != nil {
		at = w.Time
	} else if gn.Status.HeartbeatTime != nil {
		at = gn.Status.HeartbeatTime.Time
	}
	if at.After(now) {
		at = now
	}
	return at
}

// staleAt is when a node's inventory counts as stale: once no heartbeat
// has been seen for bound. A GPUNode without a heartbeat is stale for
// Filter, but its device plugin may have just created it, so it is
// announced as stale only when it has had no heartbeat for bound since its
// creation.
func (r *nodeRecord) staleAt(bound time.Duration) time.Time {
	if r.gn.Status.HeartbeatTime != nil {
		return r.seen.Add(bound)
	}
	return r.gn.CreationTimestamp.Add(bound)
}

// stalenessLocked records an event on the GPUNode when its inventory goes
// stale or comes back, once per transition, and arms the node's timer for
// the moment a fresh inventory goes stale. Heartbeats that stop bring no
// informer event, so the timer is what notices them, without any work in
// Filter or Score.
func (c *Cache) stalenessLocked(r *nodeRecord, now time.Time) {
	if r.gn == nil {
		if r.staleTimer != nil {
			r.staleTimer.Stop()
		}
		c.setStaleLocked(r, false)
		return
	}
	gn := r.gn
	at := r.staleAt(c.staleness)
	stale := now.After(at)
	switch {
	case stale && !r.stale.Load():
		var note string
		if gn.Status.HeartbeatTime == nil {
			note = fmt.Sprintf("GPUNode has had no heartbeat since it was created at %s; no new GPU pods go to node %s until its device plugin reports",
				gn.CreationTimestamp.UTC().Format(time.RFC3339), gn.Name)
		} else {
			note = fmt.Sprintf("no heartbeat for %s (the last one, stamped %s by the node, was seen at %s); no new GPU pods go to node %s until its device plugin reports again",
				c.staleness, gn.Status.HeartbeatTime.UTC().Format(time.RFC3339), r.seen.UTC().Format(time.RFC3339), gn.Name)
		}
		c.logger.Info("GPU inventory is stale", "gpuNode", gn.Name, "staleAt", at)
		c.Warn(gpuNodeRef(gn), reasonInventoryStale, note)
		if c.MarkStale != nil && !conditionIs(gn, v1alpha1.ConditionInventoryFresh, metav1.ConditionFalse) {
			c.MarkStale(gn, note)
		}
	case !stale && r.stale.Load():
		c.logger.Info("GPU inventory is fresh again", "gpuNode", gn.Name)
		c.Normal(gpuNodeRef(gn), reasonInventoryFresh, fmt.Sprintf("heartbeat is current again; node %s takes GPU pods again", gn.Name))
	}
	c.setStaleLocked(r, stale)
	if stale {
		// Only a GPUNode update can end this; SetGPUNode looks then.
		if r.staleTimer != nil {
			r.staleTimer.Stop()
		}
		return
	}
	// Just past the bound, since stale means strictly older than it.
	d := at.Sub(now) + time.Millisecond
	if r.staleTimer == nil {
		name := r.name
		r.staleTimer = time.AfterFunc(d, func() { c.checkStale(name) })
	} else {
		r.staleTimer.Reset(d)
	}
}

// conditionIs reports whether the GPUNode has condition typ with status.
func conditionIs(gn *v1alpha1.GPUNode, typ string, status metav1.ConditionStatus) bool {
	for _, c := range gn.Status.Conditions {
		if c.Type == typ {
			return c.Status == status
		}
	}
	return false
}

// setStaleLocked sets the node's stale flag and moves the node between
// fresh and stale in the tally.
func (c *Cache) setStaleLocked(r *nodeRecord, stale bool) {
	if was := r.stale.Load(); was != stale {
		st := r.State()
		c.tally.count(st, stale, 1)
		c.tally.count(st, was, -1)
		r.stale.Store(stale)
	}
}

// checkStale is the staleness timer of a node.
func (c *Cache) checkStale(name string) {
	select {
	case <-c.Stop:
		return
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := (*c.nodes.Load())[name]; r != nil {
		c.stalenessLocked(r, c.Now())
	}
}

// InventoryChanged reports whether anything but the heartbeat differs.
func InventoryChanged(a, b *v1alpha1.GPUNode) bool {
	return !equality.Semantic.DeepEqual(a.Spec, b.Spec) || !equality.Semantic.DeepEqual(a.Status.GPUs, b.Status.GPUs)
}

// StaleNow reports whether the cache counts the node's inventory as
// stale now.
func (c *Cache) StaleNow(node string) bool {
	r := c.record(node)
	return r == nil || r.stale.Load()
}

// DeleteGPUNode forgets a node's inventory. Pods on it keep their records,
// so their devices are counted again if the inventory returns.
func (c *Cache) DeleteGPUNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := (*c.nodes.Load())[name]
	if r == nil || r.Inv == nil {
		return
	}
	c.inventoryLocked(r.Inv, nil)
	r.Inv, r.gn = nil, nil
	c.useDRALocked(r)
	delete(c.noExecute, name)
	c.publishLocked(r)
	c.stalenessLocked(r, c.Now())
	c.dropRecordLocked(r)
}

// newerRV reports whether resourceVersion a is newer than b. Versions that
// do not parse as integers are taken as newer, since nothing better is known.
func newerRV(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	if errA != nil || errB != nil {
		return a != b
	}
	return x > y
}

// LastWrite is the time of the latest write the managed fields record,
// nil when none has a time. The scheduler's own write of the InventoryFresh
// condition does not count: it says the node is dead, and must not make a
// restarted scheduler think the node wrote.
func LastWrite(fields []metav1.ManagedFieldsEntry) *metav1.Time {
	var latest *metav1.Time
	for _, f := range fields {
		if f.Manager == FieldManager {
			continue
		}
		if f.Time != nil && (latest == nil || f.Time.After(latest.Time)) {
			latest = f.Time
		}
	}
	return latest
}

// FieldManager names the scheduler's writes: the assignment patch of
// PreBind and the InventoryFresh condition of a GPUNode whose heartbeat
// stopped. LastWrite does not count them as the node's.
const FieldManager = "tessera-scheduler"
