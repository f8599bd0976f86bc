package tesseragpu

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podgpu"
)

// nodeState is an immutable view of one node's GPUs. Writers build a new one
// and swap it in, so Filter and Score read it without locks or copies.
type nodeState struct {
	// inv is nil until the node's GPUNode is seen.
	inv *device.Inventory
	// used is the capacity in use per device index.
	used []int
	// holders are the pods counted in used and unknown. Filter compares
	// them with the scheduler's snapshot when the node looks full (see
	// gpuCache.agreed).
	holders []types.UID
	// requested is what the holders ask of the node's extended GPU
	// resources (whole GPUs, percent), as the scheduler's NodeInfo sums
	// them: the cheap first test of agreed.
	requested [2]int64
	// unknown counts pods on the node that hold GPUs the cache cannot pin
	// to devices (no readable assignment). While any exist, every GPU of
	// the node counts as taken, so nothing can be double-booked.
	unknown int
	// usedBuf holds used for nodes of up to 8 devices, so that Filter
	// finds it in the cache lines it has already loaded.
	usedBuf [8]int
	// own is the copy of the node's inventory that inv points to, in the
	// same allocation: Filter then reads the state and the inventory's
	// hot words (device.Inventory.CopyTo) from neighbouring cache lines
	// instead of following a pointer to a second object on every node.
	own device.Inventory
}

// nodeRecord is the mutable bookkeeping behind a node's state; it is
// guarded by cache.mu, except for slot, which Filter and Score read
// without it.
type nodeRecord struct {
	// slot holds the node's current state and Filter's memo. It is
	// replaced only under cache.mu, when an index of the snapshot's nodes
	// moves it into its own dense array (see infoIndex), and the state is
	// carried over.
	slot atomic.Pointer[nodeSlot]

	name string
	rv   string
	// gn is the GPUNode the inventory was built from.
	gn   *v1alpha1.GPUNode
	inv  *device.Inventory
	pods map[types.UID]*podRecord
	// stale is whether the inventory was last announced stale. It is
	// written under cache.mu (setStaleLocked); the tally relies on reads
	// under cache.mu too.
	stale atomic.Bool
	// staleTimer fires when a fresh inventory would go stale.
	staleTimer *time.Timer
	// seen is when the scheduler saw the node's heartbeat change last
	// (firstSeen for the first sight); zero for a GPUNode without one.
	seen time.Time
}

// fitMemo hands Filter's verdict on a node to Score and Reserve in the
// same cycle, which would otherwise work it out again: on a 5,000-node
// cluster Score's repeat was over a third of the plugin's CPU. No lock is
// needed because of how the framework calls the plugin: each node's Filter
// calls of a cycle (with and without nominated pods) run on one goroutine;
// every Filter of a cycle returns before the first Score; cycles do not
// overlap; and a preemption dry run, which filters again within the cycle,
// can only write the same result, since Filter reads the plugin's cache,
// not the NodeInfo it is given. Readers take an entry only if it is of
// their cycle and the node's state is the one it was worked out from.
type fitMemo struct {
	cycle atomic.Uint64
	f     fitted
}

// nodeSlot is what Filter and Score read and write of a node in every
// cycle: its current state, which writers swap under cache.mu, and Filter's
// memo for Score and Reserve, which is not guarded by cache.mu.
type nodeSlot struct {
	state atomic.Pointer[nodeState]
	fit   fitMemo
}

// current returns the node's state, or nil for no slot.
func (sl *nodeSlot) current() *nodeState {
	if sl == nil {
		return nil
	}
	return sl.state.Load()
}

// current returns the node's state.
func (r *nodeRecord) current() *nodeState { return r.slot.Load().current() }

// record returns the node's record, or nil when nothing is known.
func (c *gpuCache) record(node string) *nodeRecord {
	return (*c.nodes.Load())[node]
}

// podRecord is one pod's hold on a node's devices.
type podRecord struct {
	uid  types.UID
	key  string
	node string
	// namespace, name and tolerations are what the NoExecute evictor needs
	// of the pod; deleting is set once it has a deletion timestamp.
	namespace, name string
	tolerations     []v1.Toleration
	deleting        bool
	// requested is what the pod asks of the GPU resources: whole GPUs and
	// percent, with Kubernetes' effective-request rules.
	requested [2]int64
	// use is the capacity the pod holds per device UUID at its peak; nil
	// unless state is podgpu.Recorded.
	use map[string]int
	// state is how much is known of the pod's hold (podgpu.Hold).
	state podgpu.State
	// guess is the pod of an Unrecorded record: it holds what it asks for,
	// on GPUs publishLocked works out as binpack would place it (guessUse),
	// or, where it cannot, on every GPU of the node.
	guess    *v1.Pod
	guessReq *device.Request
	guessUse map[string]int
	// assumed is true between Reserve and the informer seeing the pod
	// bound; such records are dropped only by Unreserve or deletion.
	assumed bool
	// held are devices of a rewritten assignment that stay counted until
	// heldUntil.
	held      map[string]int
	heldUntil time.Time
}

// gpuCache is the scheduler's view of every node's GPU inventory and of the
// GPUs held by pods. It is fed by informers, updated by Reserve and
// Unreserve, and rebuilt from pod annotations after a restart.
type gpuCache struct {
	logger klog.Logger
	// staleness is the inventory staleness bound, to tell when a heartbeat
	// brings a node back.
	staleness time.Duration
	now       func() time.Time
	// changed is called, outside the lock, after a change that may let a
	// rejected pod fit: capacity freed, an inventory changed or came back.
	changed func()
	// gen counts such changes.
	gen atomic.Uint64
	// warn records a Warning event about bad input on the object it
	// concerns; the recorder is asynchronous, so it may be called under mu.
	warn func(regarding runtime.Object, reason, note string)
	// normal records a Normal event, likewise; the plugin sets it when it
	// starts watching.
	normal func(regarding runtime.Object, reason, note string)
	// evictKick asks the NoExecute evictor for a pass; it never blocks.
	evictKick func()
	// markStale sets the GPUNode's InventoryFresh condition to False with
	// the message; it never blocks. The plugin sets it when it starts
	// watching.
	markStale func(gn *v1alpha1.GPUNode, message string)
	// stop, once closed, ends the timers that watch heartbeats.
	stop <-chan struct{}

	mu   sync.Mutex
	pods map[types.UID]*podRecord
	// noExecute holds the nodes whose inventory has a NoExecute device
	// taint, so that the evictor looks at those alone.
	noExecute map[string]bool
	// reported is the problem last reported of each pod's annotation
	// (podgpu.Hold.Problem), so that each is reported once.
	reported map[types.UID]string
	// sizes counts nodes by device count, to answer "largest node" cheaply.
	sizes [device.MaxDevicesPerNode + 1]int
	// nodes maps node names to records; the map is replaced, never changed,
	// when a node is added or removed.
	nodes atomic.Pointer[map[string]*nodeRecord]
	// largest is the most devices any node has.
	largest atomic.Int64
	// names holds the keys of nodes; see nameArena. Guarded by mu.
	names nameArena
	// byInfo finds records from the snapshot's NodeInfo objects; see
	// infoIndex.
	byInfo atomic.Pointer[infoIndex]
	// modelDevices counts devices by model over every inventory, for the
	// fragmentation strategy's model pressure; modelsGen counts changes.
	modelDevices map[string]int
	modelsGen    atomic.Uint64
	// tally is what the metrics report: every published state counted
	// once, under the stale flag it was last counted with. Guarded by mu.
	tally inventorySummary
}

func newCache(logger klog.Logger, staleness time.Duration) *gpuCache {
	c := &gpuCache{logger: logger, staleness: staleness, now: time.Now, changed: func() {},
		warn: func(runtime.Object, string, string) {}, normal: func(runtime.Object, string, string) {},
		pods: map[types.UID]*podRecord{}, reported: map[types.UID]string{}, modelDevices: map[string]int{},
		noExecute: map[string]bool{}, evictKick: func() {},
		tally: inventorySummary{models: map[string]*modelSummary{}}}
	c.nodes.Store(&map[string]*nodeRecord{})
	return c
}

// generation returns the number of changes so far that may let a rejected
// pod fit.
func (c *gpuCache) generation() uint64 { return c.gen.Load() }

// unlock releases the lock and reports a change that may let a rejected pod
// fit, if there was one.
func (c *gpuCache) unlock(changed bool) {
	if changed {
		c.gen.Add(1)
	}
	c.mu.Unlock()
	if changed {
		c.changed()
	}
}

// touch reports a change without making one, so that pods judged before it
// are retried.
func (c *gpuCache) touch() {
	c.mu.Lock()
	c.unlock(true)
}

// state returns the node's current state, or nil when nothing is known.
func (c *gpuCache) state(node string) *nodeState {
	r := c.record(node)
	if r == nil {
		return nil
	}
	return r.current()
}

// largestNode returns the most devices any node reports.
func (c *gpuCache) largestNode() int { return int(c.largest.Load()) }

func (c *gpuCache) recordLocked(name string) *nodeRecord {
	old := *c.nodes.Load()
	if r := old[name]; r != nil {
		return r
	}
	r := &nodeRecord{name: name, pods: map[types.UID]*podRecord{}}
	sl := &nodeSlot{}
	sl.state.Store(&nodeState{})
	r.slot.Store(sl)
	m := make(map[string]*nodeRecord, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[c.names.add(name)] = r
	c.nodes.Store(&m)
	return r
}

func (c *gpuCache) dropRecordLocked(r *nodeRecord) {
	if r.inv != nil || len(r.pods) > 0 {
		return
	}
	old := *c.nodes.Load()
	if old[r.name] != r {
		return // already dropped, or replaced by a newer record
	}
	c.names.drop(r.name)
	compact := c.names.wasteful()
	if compact {
		c.names = nameArena{}
	}
	m := make(map[string]*nodeRecord, len(old))
	for k, v := range old {
		if k == r.name {
			continue
		}
		if compact {
			k = c.names.add(k)
		}
		m[k] = v
	}
	c.nodes.Store(&m)
}

// nameArena holds the keys of the node map side by side in a few large
// blocks. Each lookup compares the name it is given with a key, and if the
// keys were the names as decoded with each GPUNode, scattered over the
// heap, that comparison would cost a cache and TLB miss per node in every
// Filter and Score: a third of the plugin's time at 5,000 nodes. Packed,
// the keys of 5,000 nodes span about 30 pages.
//
// Bytes once written to a block are never changed, which is what makes the
// strings made from them valid. Names of removed nodes stay in their block
// until dropRecordLocked finds more dead bytes than live ones, and at least
// a block's worth, and copies the live keys into a fresh arena; the old
// blocks are then garbage once no published map refers to them.
type nameArena struct {
	block      []byte
	live, dead int
}

// nameBlock is the size of an arena block; longer names are not packed.
const nameBlock = 16 << 10

// add returns a copy of name that lives in the arena.
func (a *nameArena) add(name string) string {
	n := len(name)
	if n == 0 || n > nameBlock/16 {
		return name
	}
	if cap(a.block)-len(a.block) < n {
		a.block = make([]byte, 0, nameBlock)
	}
	at := len(a.block)
	a.block = append(a.block, name...)
	a.live += n
	return unsafe.String(&a.block[at], n)
}

// drop notes that a name added before is no longer used.
func (a *nameArena) drop(name string) {
	if n := len(name); n > 0 && n <= nameBlock/16 {
		a.live -= n
		a.dead += n
	}
}

// wasteful reports whether dead names take more room than live ones, and
// enough of it to be worth a copy.
func (a *nameArena) wasteful() bool { return a.dead > a.live && a.dead >= nameBlock }

// inventoryLocked accounts for a node's inventory changing from old to
// inv (either may be nil) in the node sizes and device counts by model.
func (c *gpuCache) inventoryLocked(old, inv *device.Inventory) {
	from, to := -1, -1
	if old != nil {
		from = old.Len()
	}
	if inv != nil {
		to = inv.Len()
	}
	if !sameModels(old, inv) {
		c.countModelsLocked(old, -1)
		c.countModelsLocked(inv, 1)
		c.modelsGen.Add(1)
	}
	if from != to {
		if from >= 0 {
			c.sizes[from]--
		}
		if to >= 0 {
			c.sizes[to]++
		}
		largest := 0
		for n := len(c.sizes) - 1; n > 0; n-- {
			if c.sizes[n] > 0 {
				largest = n
				break
			}
		}
		c.largest.Store(int64(largest))
	}
}

// sameModels reports whether two inventories (either may be nil) list the
// same device models in the same order; a heartbeat changes neither.
func sameModels(a, b *device.Inventory) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Len() != b.Len() {
		return false
	}
	for i := range a.Devices {
		if a.Devices[i].Model != b.Devices[i].Model {
			return false
		}
	}
	return true
}

func (c *gpuCache) countModelsLocked(inv *device.Inventory, sign int) {
	if inv == nil {
		return
	}
	for i := range inv.Devices {
		m := inv.Devices[i].Model
		if c.modelDevices[m] += sign; c.modelDevices[m] == 0 {
			delete(c.modelDevices, m)
		}
	}
}

// modelCapacity returns the device count by model and the generation it
// belongs to.
func (c *gpuCache) modelCapacity() (map[string]int, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.modelDevices), c.modelsGen.Load()
}

// setGPUNode applies a GPUNode. Objects older than the one applied (by
// resourceVersion) are ignored, so a late informer event cannot undo what a
// queueing hint already applied.
func (c *gpuCache) setGPUNode(gn *v1alpha1.GPUNode) {
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
	if len(inv.Problems) > 0 && (r.inv == nil || fmt.Sprint(r.inv.Problems) != fmt.Sprint(inv.Problems)) {
		c.logger.Info("GPUNode has GPUs that cannot be used; they are skipped", "gpuNode", gn.Name, "problems", inv.Problems)
		c.warn(gpuNodeRef(gn), "InvalidGPUInventory", truncate("GPUs skipped: "+strings.Join(inv.Problems, "; ")))
	}
	now := c.now()
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
	changed := r.gn == nil || inventoryChanged(r.gn, gn) || (wasStale && !device.Stale(r.seen, now, c.staleness))
	c.inventoryLocked(r.inv, inv)
	r.rv, r.gn, r.inv = gn.ResourceVersion, gn, inv
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
		c.evictKick()
	}
}

// hasNoExecute reports whether a device of the inventory has a NoExecute
// taint.
func hasNoExecute(inv *device.Inventory) bool {
	for i := range inv.Devices {
		for _, t := range inv.Devices[i].Taints {
			if t.Effect == v1.TaintEffectNoExecute {
				return true
			}
		}
	}
	return false
}

// taintedUse is a pod that holds GPUs with NoExecute device taints.
type taintedUse struct {
	uid             types.UID
	namespace, name string
	node            string
	tolerations     []v1.Toleration
	// taints are the NoExecute taints of the GPUs it holds, by GPU UUID.
	taints map[string][]v1.Taint
}

// noExecuteUses lists the pods, not yet being deleted, that hold GPUs with
// NoExecute device taints: by their recorded assignment, or, for pods not
// yet recorded, by the GPUs the cache counts them on.
func (c *gpuCache) noExecuteUses() []taintedUse {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []taintedUse
	for node := range c.noExecute {
		r := (*c.nodes.Load())[node]
		if r == nil || r.inv == nil {
			continue
		}
		for _, p := range r.pods {
			if p.deleting || p.assumed {
				continue
			}
			use := p.use
			if p.guess != nil {
				use = p.guessUse
			}
			var u taintedUse
			for uuid := range use {
				i, ok := r.inv.IndexOf(uuid)
				if !ok {
					continue
				}
				for _, t := range r.inv.Devices[i].Taints {
					if t.Effect != v1.TaintEffectNoExecute {
						continue
					}
					if u.taints == nil {
						u = taintedUse{uid: p.uid, namespace: p.namespace, name: p.name, node: node,
							tolerations: p.tolerations, taints: map[string][]v1.Taint{}}
					}
					u.taints[uuid] = append(u.taints[uuid], t)
				}
			}
			if u.taints != nil {
				out = append(out, u)
			}
		}
	}
	return out
}

func gpuNodeRef(gn *v1alpha1.GPUNode) *v1.ObjectReference {
	return &v1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "GPUNode", Name: gn.Name, UID: gn.UID}
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
	if w := lastWrite(gn.ManagedFields); w != nil {
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
func (c *gpuCache) stalenessLocked(r *nodeRecord, now time.Time) {
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
		c.warn(gpuNodeRef(gn), reasonInventoryStale, note)
		if c.markStale != nil && !conditionIs(gn, v1alpha1.ConditionInventoryFresh, metav1.ConditionFalse) {
			c.markStale(gn, note)
		}
	case !stale && r.stale.Load():
		c.logger.Info("GPU inventory is fresh again", "gpuNode", gn.Name)
		c.normal(gpuNodeRef(gn), reasonInventoryFresh, fmt.Sprintf("heartbeat is current again; node %s takes GPU pods again", gn.Name))
	}
	c.setStaleLocked(r, stale)
	if stale {
		// Only a GPUNode update can end this; setGPUNode looks then.
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
func (c *gpuCache) setStaleLocked(r *nodeRecord, stale bool) {
	if was := r.stale.Load(); was != stale {
		st := r.current()
		c.tally.count(st, stale, 1)
		c.tally.count(st, was, -1)
		r.stale.Store(stale)
	}
}

// checkStale is the staleness timer of a node.
func (c *gpuCache) checkStale(name string) {
	select {
	case <-c.stop:
		return
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := (*c.nodes.Load())[name]; r != nil {
		c.stalenessLocked(r, c.now())
	}
}

// inventoryChanged reports whether anything but the heartbeat differs.
func inventoryChanged(a, b *v1alpha1.GPUNode) bool {
	return !equality.Semantic.DeepEqual(a.Spec, b.Spec) || !equality.Semantic.DeepEqual(a.Status.GPUs, b.Status.GPUs)
}

// staleNow reports whether the cache counts the node's inventory as
// stale now.
func (c *gpuCache) staleNow(node string) bool {
	r := c.record(node)
	return r == nil || r.stale.Load()
}

// deleteGPUNode forgets a node's inventory. Pods on it keep their records,
// so their devices are counted again if the inventory returns.
func (c *gpuCache) deleteGPUNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := (*c.nodes.Load())[name]
	if r == nil || r.inv == nil {
		return
	}
	c.inventoryLocked(r.inv, nil)
	r.inv, r.gn = nil, nil
	delete(c.noExecute, name)
	c.publishLocked(r)
	c.stalenessLocked(r, c.now())
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

// upsertPod applies a pod seen by the informer.
func (c *gpuCache) upsertPod(pod *v1.Pod) {
	c.mu.Lock()
	old := c.pods[pod.UID]
	finished := pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
	if pod.Spec.NodeName == "" || finished {
		// An unbound pod holds nothing unless Reserve assumed it; a finished
		// pod's devices are free again.
		if old != nil && (finished || !old.assumed) {
			c.removeLocked(old)
			c.unlock(true)
			return
		}
		c.unlock(false)
		return
	}
	h := podgpu.Of(pod)
	c.reportProblemLocked(pod, h)
	if h.State == podgpu.None {
		if old != nil {
			c.removeLocked(old)
		}
		c.unlock(old != nil)
		return
	}
	use := h.Use
	var guess *v1.Pod
	var guessReq *device.Request
	if h.State == podgpu.Unrecorded {
		guess, guessReq = pod, h.Request
	}
	if old != nil && old.node == pod.Spec.NodeName && old.state == h.State && sameUse(old.use, use) {
		// Confirmation of an assumed pod, or a repeated event.
		old.assumed = false
		old.identify(pod)
		kick := c.noExecute[old.node]
		c.unlock(false)
		if kick {
			c.evictKick()
		}
		return
	}
	rec := &podRecord{uid: pod.UID, key: klog.KObj(pod).String(), node: pod.Spec.NodeName, use: use,
		requested: requestedGPUs(pod), state: h.State, guess: guess, guessReq: guessReq}
	rec.identify(pod)
	if old != nil && !old.assumed && old.node == rec.node && old.use != nil && use != nil {
		// A bound pod's assignment was rewritten, normally by the device
		// plugin recording what the kubelet did. When two pods exchanged
		// GPUs, their rewrites arrive one at a time; in between, one GPU
		// would look free while both still use it. So the old devices stay
		// held for a grace period.
		rec.held, rec.heldUntil = old.use, c.now().Add(rewriteGrace)
		if old.held != nil && c.now().Before(old.heldUntil) {
			rec.held = mergeUse(old.held, old.use)
		}
		uid := pod.UID
		time.AfterFunc(rewriteGrace, func() { c.release(uid) })
	}
	// A pod that stays on its node is overwritten in place by addLocked:
	// removing it first would drop a node record that only this pod keeps
	// (its GPUNode deleted), and with the record the deleted
	// resourceVersion that keeps a late GPUNode event from bringing the
	// inventory back.
	if old != nil && old.node != rec.node {
		c.removeLocked(old)
	}
	c.addLocked(rec)
	// Only pods on nodes with NoExecute taints concern the evictor.
	kick := c.noExecute[rec.node]
	// A corrected assignment may free devices (once the grace ends).
	c.unlock(old != nil)
	if kick {
		c.evictKick()
	}
}

// identify records what the NoExecute evictor needs of the pod.
func (p *podRecord) identify(pod *v1.Pod) {
	p.namespace, p.name = pod.Namespace, pod.Name
	p.tolerations = pod.Spec.Tolerations
	p.deleting = pod.DeletionTimestamp != nil
}

// reportProblemLocked logs and records an event, once per pod and
// problem, when a bound pod's annotation is ignored or not trusted, saying
// how the pod is counted instead.
func (c *gpuCache) reportProblemLocked(pod *v1.Pod, h podgpu.Hold) {
	if h.Problem == "" {
		delete(c.reported, pod.UID)
		return
	}
	if c.reported[pod.UID] == h.Problem {
		return
	}
	c.reported[pod.UID] = h.Problem
	var counted string
	switch h.State {
	case podgpu.None:
		counted = "it holds no GPU"
	case podgpu.Recorded:
		counted = "it holds the GPUs named for the containers that ask for them"
	case podgpu.Unrecorded:
		counted = fmt.Sprintf("it counts as the GPUs it asks for on node %s until the node's device plugin records which it holds", pod.Spec.NodeName)
	default:
		counted = fmt.Sprintf("all GPUs of node %s count as taken until this pod goes", pod.Spec.NodeName)
	}
	c.logger.Info("Pod's GPU assignment is not used as written", "pod", klog.KObj(pod), "node", pod.Spec.NodeName, "problem", h.Problem, "state", h.State)
	c.warn(pod, "InvalidGPUAssignment", truncate(h.Problem+"; "+counted))
}

// rewriteGrace is how long a rewritten assignment keeps its old devices
// held. Exchanges are written back within a reconcile interval or two.
const rewriteGrace = 30 * time.Second

// release ends the grace period of a rewritten assignment.
func (c *gpuCache) release(uid types.UID) {
	c.mu.Lock()
	p := c.pods[uid]
	if p == nil || p.held == nil || c.now().Before(p.heldUntil) {
		c.unlock(false)
		return
	}
	p.held = nil
	if r := (*c.nodes.Load())[p.node]; r != nil {
		c.publishLocked(r)
	}
	c.unlock(true)
}

// mergeUse is the larger use of each device.
func mergeUse(a, b map[string]int) map[string]int {
	out := make(map[string]int, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = max(out[k], v)
	}
	return out
}

// removePod forgets a pod and reports the node it held devices on.
func (c *gpuCache) removePod(uid types.UID) (string, bool) {
	c.mu.Lock()
	delete(c.reported, uid)
	p := c.pods[uid]
	if p == nil {
		c.unlock(false)
		return "", false
	}
	c.removeLocked(p)
	c.unlock(true)
	return p.node, true
}

// assume records the devices chosen in Reserve, after checking under the
// lock that they are still free: a pod placed concurrently, or an informer
// event since Filter, fails the check instead of being double-booked.
func (c *gpuCache) assume(pod *v1.Pod, node string, a assignment.Assignment) error {
	use, err := podgpu.PeakUse(pod, a)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.pods[pod.UID]; old != nil {
		c.removeLocked(old)
	}
	r := (*c.nodes.Load())[node]
	if r == nil || r.inv == nil {
		return fmt.Errorf("node %s has no gpu inventory", node)
	}
	st := r.current()
	if st.unknown > 0 {
		return fmt.Errorf("node %s has gpu pods of unknown assignment", node)
	}
	for uuid, units := range use {
		i, ok := r.inv.IndexOf(uuid)
		if !ok {
			return fmt.Errorf("gpu %s is no longer in node %s's inventory", uuid, node)
		}
		if free := device.FullUnits - st.used[i]; units > free {
			return fmt.Errorf("gpu %s on node %s has %d%% free, %d%% needed", uuid, node, free, units)
		}
	}
	rec := &podRecord{uid: pod.UID, key: klog.KObj(pod).String(), node: node, use: use, assumed: true,
		requested: requestedGPUs(pod), state: podgpu.Recorded}
	rec.identify(pod)
	c.addLocked(rec)
	return nil
}

// forget drops an assumed pod; it is a no-op for pods already confirmed.
func (c *gpuCache) forget(uid types.UID) {
	c.mu.Lock()
	p := c.pods[uid]
	if p != nil && p.assumed {
		c.removeLocked(p)
	}
	c.unlock(p != nil && p.assumed)
}

func (c *gpuCache) addLocked(p *podRecord) {
	c.pods[p.uid] = p
	r := c.recordLocked(p.node)
	r.pods[p.uid] = p
	c.publishLocked(r)
}

func (c *gpuCache) removeLocked(p *podRecord) {
	delete(c.pods, p.uid)
	r := (*c.nodes.Load())[p.node]
	if r == nil {
		return
	}
	delete(r.pods, p.uid)
	c.publishLocked(r)
	c.dropRecordLocked(r)
}

// publishLocked recomputes a node's state from its inventory and pods.
func (c *gpuCache) publishLocked(r *nodeRecord) {
	st := newNodeState(r.inv)
	var guessed []*podRecord
	for _, p := range r.pods {
		if p.guess != nil {
			guessed = append(guessed, p)
			continue
		}
		h := p.hold(r.inv)
		if h.unknown && p.use != nil {
			// The pod holds a GPU this inventory does not list (it
			// vanished, or the annotation names another node's GPU):
			// which GPU it really holds is unknown.
			c.logger.V(4).Info("Pod holds a GPU the inventory does not list", "pod", p.key, "node", r.name)
		}
		st.count(p, h)
	}
	// Pods whose GPUs are not recorded take what they ask on the GPUs
	// left, in a fixed order so that every publish guesses alike.
	slices.SortFunc(guessed, func(a, b *podRecord) int { return strings.Compare(string(a.uid), string(b.uid)) })
	for _, p := range guessed {
		p.guessUse = st.guess(p.guess, p.guessReq)
		st.count(p, p.hold(r.inv))
	}
	// The new state is counted in before the old one is counted out, so
	// that a model on this node alone keeps its tally entry.
	sl := r.slot.Load()
	c.tally.count(st, r.stale.Load(), 1)
	c.tally.count(sl.state.Load(), r.stale.Load(), -1)
	sl.state.Store(st)
}

// newNodeState returns an empty state of a node with inventory inv (nil
// when none is known): nothing used, no unknown pods.
func newNodeState(inv *device.Inventory) *nodeState {
	st := &nodeState{}
	if inv != nil {
		inv.CopyTo(&st.own)
		st.inv = &st.own
		if n := inv.Len(); n <= len(st.usedBuf) {
			st.used = st.usedBuf[:n]
		} else {
			st.used = make([]int, n)
		}
	}
	return st
}

// clone returns a copy of the state that can be changed.
func (st *nodeState) clone() *nodeState {
	c := newNodeState(st.inv)
	copy(c.used, st.used)
	c.unknown, c.holders, c.requested = st.unknown, st.holders, st.requested
	return c
}

// agreed returns the node's state counting only the pods that the
// scheduler's snapshot of the node (ni) has, or nil when st, the state the
// cache published, counts no other pod. The plugin's informer handlers
// and the scheduler's run apart, so for a moment after a pod goes the
// snapshot can show the node free while the cache still counts the pod;
// judged on the cache alone, the node would then look full and preemption
// would go looking for victims elsewhere. The pod also, when set, counts
// as in the snapshot.
func (c *gpuCache) agreed(st *nodeState, ni fwk.NodeInfo, also types.UID) *nodeState {
	if st == nil || st.inv == nil || len(st.holders) == 0 {
		return nil
	}
	if req := ni.GetRequested().GetScalarResources(); also == "" &&
		req[gpu.ResourceGPU] >= st.requested[0] && req[gpu.ResourcePercent] >= st.requested[1] {
		// The snapshot asks at least as much of the node's GPUs as the
		// pods the cache counts: none of them can be missing from it
		// (short of one added elsewhere at the same moment).
		return nil
	}
	pods := ni.GetPods()
	inSnapshot := func(uid types.UID) bool {
		if uid == also && also != "" {
			return true
		}
		for _, pi := range pods {
			if pi.GetPod().UID == uid {
				return true
			}
		}
		return false
	}
	lagging := false
	for _, uid := range st.holders {
		if !inSnapshot(uid) {
			lagging = true
			break
		}
	}
	if !lagging {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := (*c.nodes.Load())[ni.Node().Name]
	if r == nil || r.inv == nil {
		return nil
	}
	out := newNodeState(r.inv)
	for _, p := range r.pods {
		if inSnapshot(p.uid) {
			out.count(p, p.hold(r.inv))
		}
	}
	return out
}

// podHold is what one pod takes of a node's state: the capacity it holds
// per device UUID, and whether it also makes the node's use unknown.
type podHold struct {
	use     map[string]int
	unknown bool
}

// hold is what the pod takes of a node with inventory inv. A pod without
// a readable assignment, or one naming a GPU the inventory does not list,
// makes the node's use unknown; devices of a rewritten assignment still in
// their grace period count as held.
func (p *podRecord) hold(inv *device.Inventory) podHold {
	if p.guess != nil {
		if p.guessUse == nil {
			return podHold{unknown: true}
		}
		return podHold{use: p.guessUse}
	}
	if p.use == nil {
		return podHold{unknown: true}
	}
	h := podHold{use: p.use}
	if p.held != nil {
		h.use = mergeUse(p.use, p.held)
	}
	if inv != nil {
		for uuid := range p.use {
			if _, ok := inv.IndexOf(uuid); !ok {
				h.unknown = true
				break
			}
		}
	}
	return h
}

// guess places a pod whose GPUs are not recorded on the state's free
// capacity, as binpack would, on any GPU (the kubelet gave it GPUs without
// regard to health, device taints or models), and returns what it takes;
// nil when it does not fit or the node's inventory is unknown.
func (st *nodeState) guess(pod *v1.Pod, asked *device.Request) map[string]int {
	if st.inv == nil || st.inv.Len() == 0 || asked.Empty() {
		return nil
	}
	req := *asked
	req.Models, req.Tolerations = nil, nil
	all := uint64(1)<<st.inv.Len() - 1
	if st.inv.Len() == 64 {
		all = ^uint64(0)
	}
	p, ok := device.Plan(st.inv, st.used, &req, all, 0, device.Binpack)
	if !ok {
		return nil
	}
	use, err := podgpu.PeakUse(pod, placed(st.inv, &req, p))
	if err != nil {
		return nil
	}
	return use
}

// count counts in a pod of the node, which takes h of it.
func (st *nodeState) count(p *podRecord, h podHold) {
	st.add(h, 1)
	st.holders = append(st.holders, p.uid)
	st.requested[0] += p.requested[0]
	st.requested[1] += p.requested[1]
}

// requestedGPUs is what a pod asks of the GPU resources, as the
// scheduler's NodeInfo counts it. The apiserver defaults the requests of
// extended resources to their limits; the limits count for a pod not
// defaulted.
func requestedGPUs(pod *v1.Pod) [2]int64 {
	opts := resourcehelper.PodResourcesOptions{}
	req, lim := resourcehelper.PodRequests(pod, opts), resourcehelper.PodLimits(pod, opts)
	var out [2]int64
	for i, name := range []v1.ResourceName{gpu.ResourceGPU, gpu.ResourcePercent} {
		out[i] = max(req.Name(name, resource.DecimalSI).Value(), lim.Name(name, resource.DecimalSI).Value())
	}
	return out
}

// add counts a pod's hold into the state (sign 1) or out of it (sign -1).
func (st *nodeState) add(h podHold, sign int) {
	if h.unknown {
		st.unknown += sign
	}
	if st.inv == nil {
		return
	}
	for uuid, units := range h.use {
		if i, ok := st.inv.IndexOf(uuid); ok {
			st.used[i] += sign * units
		}
	}
}

// holdOf returns what the pod holds on the node by the cache's records,
// and false when the cache has no record of the pod there.
func (c *gpuCache) holdOf(uid types.UID, node string) (podHold, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pods[uid]
	if p == nil || p.node != node {
		return podHold{}, false
	}
	var inv *device.Inventory
	if r := (*c.nodes.Load())[node]; r != nil {
		inv = r.inv
	}
	return p.hold(inv), true
}

func sameUse(a, b map[string]int) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// maxNote keeps event notes under the 1 kB the events API accepts.
const maxNote = 1000

func truncate(s string) string {
	if len(s) <= maxNote {
		return s
	}
	return s[:maxNote-3] + "..."
}
