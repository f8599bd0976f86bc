package tesseragpu

import (
	"sync"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// draFeed turns the ResourceSlices of GPU drivers and the allocated
// ResourceClaims into each node's DRA inventory and claimed devices for
// the cache (gpucache.Cache.SetDRA). It reads the informers the scheduler
// already runs for DynamicResources, so it adds no watch.
type draFeed struct {
	store *gpucache.Cache

	mu sync.Mutex
	// slices are the GPU drivers' node-local slices by node, then name.
	slices map[string]map[string]*resourceapi.ResourceSlice
	// inv is each node's inventory from its slices, rebuilt only when
	// they change: claims change with every pod, slices seldom.
	inv map[string]*device.Inventory
	// poolNode is the node of each driver/pool those slices name.
	poolNode map[string]string
	// claimed is what each allocated claim holds of GPU drivers' devices,
	// by driver/pool, then claim.
	claimed map[string]map[types.UID][]drainventory.Held
	// claimPools are the pools each claim holds devices of.
	claimPools map[types.UID][]string
	// pending are the claims whose allocation DynamicResources has made
	// but not yet written (TesseraDynamicResources reports them): their
	// devices are held although the informer's claim shows none.
	pending map[types.UID]bool
}

func newDRAFeed(store *gpucache.Cache) *draFeed {
	return &draFeed{store: store, slices: map[string]map[string]*resourceapi.ResourceSlice{}, inv: map[string]*device.Inventory{}, poolNode: map[string]string{},
		claimed: map[string]map[types.UID][]drainventory.Held{}, claimPools: map[types.UID][]string{}, pending: map[types.UID]bool{}}
}

func sliceNode(s *resourceapi.ResourceSlice) string {
	if s.Spec.NodeName == nil || !drainventory.IsGPUDriver(s.Spec.Driver) {
		return ""
	}
	return *s.Spec.NodeName
}

// setSlice records a slice (nil old for an addition, nil s for a deletion)
// and republishes the nodes it concerns.
func (f *draFeed) setSlice(old, s *resourceapi.ResourceSlice) {
	f.mu.Lock()
	defer f.mu.Unlock()
	nodes := map[string]bool{}
	if old != nil {
		if n := sliceNode(old); n != "" {
			delete(f.slices[n], old.Name)
			if len(f.slices[n]) == 0 {
				delete(f.slices, n)
			}
			nodes[n] = true
		}
	}
	if s != nil {
		if n := sliceNode(s); n != "" {
			if f.slices[n] == nil {
				f.slices[n] = map[string]*resourceapi.ResourceSlice{}
			}
			f.slices[n][s.Name] = s
			f.poolNode[drainventory.PoolID(s.Spec.Driver, s.Spec.Pool.Name)] = n
			nodes[n] = true
		}
	}
	for n := range nodes {
		f.inventoryLocked(n)
		f.publishLocked(n)
	}
}

// inventoryLocked rebuilds the node's inventory from its slices, and
// forgets the pools of a node left without slices.
func (f *draFeed) inventoryLocked(node string) {
	var list []*resourceapi.ResourceSlice
	for _, s := range f.slices[node] {
		list = append(list, s)
	}
	if len(list) == 0 {
		delete(f.inv, node)
		for p, n := range f.poolNode {
			if n == node {
				delete(f.poolNode, p)
			}
		}
		return
	}
	f.inv[node], _ = drainventory.Inventory(node, list)
}

// setClaim records what the informer's claim holds (nothing for a deleted
// or unallocated one). An unallocated claim whose allocation is pending
// keeps the pending devices: the informer has not caught up with them.
func (f *draFeed) setClaim(uid types.UID, claim *resourceapi.ResourceClaim) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if claim != nil && claim.Status.Allocation == nil && f.pending[uid] {
		return
	}
	delete(f.pending, uid)
	var held []drainventory.Held
	if claim != nil {
		held = drainventory.Allocated(claim)
	}
	f.holdLocked(uid, held)
}

// setPending records an allocation DynamicResources has made in Reserve
// and not yet written.
func (f *draFeed) setPending(claim *resourceapi.ResourceClaim) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending[claim.UID] = true
	f.holdLocked(claim.UID, drainventory.Allocated(claim))
}

// settle ends a pending allocation: now is the claim as the scheduler
// knows it afterwards (nil when it knows none). An allocation written by
// the scheduler stays held until the informer brings it; one given up
// (Unreserve) is released.
func (f *draFeed) settle(uid types.UID, now *resourceapi.ResourceClaim) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var held []drainventory.Held
	if now != nil && now.Status.Allocation != nil {
		held = drainventory.Allocated(now)
	}
	if held == nil {
		delete(f.pending, uid)
	}
	f.holdLocked(uid, held)
}

// holdLocked records the devices a claim holds and republishes the nodes
// whose devices changed.
func (f *draFeed) holdLocked(uid types.UID, held []drainventory.Held) {
	pools := map[string]bool{}
	for _, p := range f.claimPools[uid] {
		delete(f.claimed[p], uid)
		if len(f.claimed[p]) == 0 {
			delete(f.claimed, p)
		}
		pools[p] = true
	}
	delete(f.claimPools, uid)
	for _, h := range held {
		p := drainventory.PoolOf(h.ID)
		if f.claimed[p] == nil {
			f.claimed[p] = map[types.UID][]drainventory.Held{}
		}
		if len(f.claimed[p][uid]) == 0 {
			f.claimPools[uid] = append(f.claimPools[uid], p)
		}
		f.claimed[p][uid] = append(f.claimed[p][uid], h)
		pools[p] = true
	}
	nodes := map[string]bool{}
	for p := range pools {
		if n, ok := f.poolNode[p]; ok {
			nodes[n] = true
		}
	}
	for n := range nodes {
		f.publishLocked(n)
	}
}

// publishLocked hands the node's inventory and the devices claims hold in
// its pools to the cache.
func (f *draFeed) publishLocked(node string) {
	var claimed []drainventory.Held
	pools := map[string]bool{}
	for _, s := range f.slices[node] {
		pools[drainventory.PoolID(s.Spec.Driver, s.Spec.Pool.Name)] = true
	}
	for p := range pools {
		for _, ids := range f.claimed[p] {
			claimed = append(claimed, ids...)
		}
	}
	f.store.SetDRA(node, f.inv[node], claimed)
}

// sliceHandler and claimHandler adapt informer callbacks.
func (f *draFeed) sliceHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if s, ok := obj.(*resourceapi.ResourceSlice); ok {
				f.setSlice(nil, s)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*resourceapi.ResourceSlice)
			s, ok2 := newObj.(*resourceapi.ResourceSlice)
			if ok1 && ok2 {
				f.setSlice(old, s)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if s, ok := obj.(*resourceapi.ResourceSlice); ok {
				f.setSlice(s, nil)
			}
		},
	}
}

func (f *draFeed) claimHandler() cache.ResourceEventHandler {
	set := func(obj any) {
		if c, ok := obj.(*resourceapi.ResourceClaim); ok {
			f.setClaim(c.UID, c)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, newObj any) { set(newObj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if c, ok := obj.(*resourceapi.ResourceClaim); ok {
				f.setClaim(c.UID, nil)
			}
		},
	}
}
