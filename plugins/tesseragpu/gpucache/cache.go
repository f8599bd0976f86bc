package gpucache

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

// nodeRecord is the mutable bookkeeping behind a node's state; it is
// guarded by cache.mu, except for slot, which Filter and Score read
// without it.
type nodeRecord struct {
	// slot holds the node's current state and Filter's memo. It is
	// replaced only under cache.mu, when an index of the snapshot's nodes
	// moves it into its own dense array (see infoIndex), and the state is
	// carried over.
	slot atomic.Pointer[Slot]

	name string
	rv   string
	// gn is the GPUNode the inventory was built from.
	gn   *v1alpha1.GPUNode
	Inv  *device.Inventory
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
	// dra is set while Inv is the node's DRA inventory (draInv): no
	// GPUNode, GPUs published in ResourceSlices (dra.go).
	dra bool
	// draInv is the node's GPUs as ResourceSlices list them, claimed the
	// devices allocated ResourceClaims hold, sorted.
	draInv  *device.Inventory
	claimed []drainventory.Held
}

// record returns the node's record, or nil when nothing is known.
func (c *Cache) record(node string) *nodeRecord {
	return (*c.nodes.Load())[node]
}

// Cache is the scheduler's view of every node's GPU inventory and of the
// GPUs held by pods. It is fed by informers, updated by Reserve and
// Unreserve, and rebuilt from pod annotations after a restart.
type Cache struct {
	logger klog.Logger
	// staleness is the inventory staleness bound, to tell when a heartbeat
	// brings a node back.
	staleness time.Duration
	Now       func() time.Time
	// changed is called, outside the lock, after a change that may let a
	// rejected pod fit: capacity freed, an inventory changed or came back.
	Changed func()
	// gen counts such changes.
	gen atomic.Uint64
	// warn records a Warning event about bad input on the object it
	// concerns; the recorder is asynchronous, so it may be called under mu.
	Warn func(regarding runtime.Object, reason, note string)
	// normal records a Normal event, likewise; the plugin sets it when it
	// starts watching.
	Normal func(regarding runtime.Object, reason, note string)
	// evictKick asks the NoExecute evictor for a pass; it never blocks.
	EvictKick func()
	// markStale sets the GPUNode's InventoryFresh condition to False with
	// the message; it never blocks. The plugin sets it when it starts
	// watching.
	MarkStale func(gn *v1alpha1.GPUNode, message string)
	// stop, once closed, ends the timers that watch heartbeats.
	Stop <-chan struct{}

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
	tally Summary
	// room files the nodes by what they have free, for PreFilter's
	// pruning. Guarded by mu.
	room roomIndex
	// priorities counts the pods holding GPUs by priority, for
	// LowestHolderPriority. Guarded by mu.
	priorities map[int32]int
}

// New returns an empty cache. staleness is the inventory staleness bound:
// a node whose heartbeat the cache has not seen change for that long is
// stale. The hooks (Warn, Normal, MarkStale, EvictKick, Changed, Stop,
// Now) are to be set before the cache is fed.
func New(logger klog.Logger, staleness time.Duration) *Cache {
	c := &Cache{logger: logger, staleness: staleness, Now: time.Now, Changed: func() {},
		Warn: func(runtime.Object, string, string) {}, Normal: func(runtime.Object, string, string) {},
		pods: map[types.UID]*podRecord{}, reported: map[types.UID]string{}, modelDevices: map[string]int{},
		noExecute: map[string]bool{}, EvictKick: func() {}, priorities: map[int32]int{},
		tally: Summary{Models: map[string]*ModelSummary{}}}
	c.nodes.Store(&map[string]*nodeRecord{})
	return c
}

// Generation returns the number of changes so far that may let a rejected
// pod fit.
func (c *Cache) Generation() uint64 { return c.gen.Load() }

// unlock releases the lock and reports a change that may let a rejected pod
// fit, if there was one.
func (c *Cache) unlock(changed bool) {
	if changed {
		c.gen.Add(1)
	}
	c.mu.Unlock()
	if changed {
		c.Changed()
	}
}

// Touch reports a change without making one, so that pods judged before it
// are retried.
func (c *Cache) Touch() {
	c.mu.Lock()
	c.unlock(true)
}

// State returns the node's current state, or nil when nothing is known.
func (c *Cache) State(node string) *NodeState {
	r := c.record(node)
	if r == nil {
		return nil
	}
	return r.State()
}

// LargestNode returns the most devices any node reports.
func (c *Cache) LargestNode() int { return int(c.largest.Load()) }

func (c *Cache) recordLocked(name string) *nodeRecord {
	old := *c.nodes.Load()
	if r := old[name]; r != nil {
		return r
	}
	r := &nodeRecord{name: name, pods: map[types.UID]*podRecord{}}
	sl := &Slot{}
	sl.state.Store(&NodeState{})
	r.slot.Store(sl)
	m := make(map[string]*nodeRecord, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[c.names.add(name)] = r
	c.nodes.Store(&m)
	return r
}

func (c *Cache) dropRecordLocked(r *nodeRecord) {
	if r.Inv != nil || len(r.pods) > 0 || r.draInv != nil || len(r.claimed) > 0 {
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
func (c *Cache) inventoryLocked(old, inv *device.Inventory) {
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

func (c *Cache) countModelsLocked(inv *device.Inventory, sign int) {
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

// ModelsGeneration counts the changes of the device count by model.
func (c *Cache) ModelsGeneration() uint64 { return c.modelsGen.Load() }

// ModelCapacity returns the device count by model and the generation it
// belongs to.
func (c *Cache) ModelCapacity() (map[string]int, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.modelDevices), c.modelsGen.Load()
}
