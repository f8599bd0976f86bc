package tesseradra

import (
	"context"
	"sync"
	"sync/atomic"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// handle is the framework handle DynamicResources is built with: the
// profile's own, but for the DRA manager.
type handle struct {
	fwk.Handle
	manager *manager
}

// SharedDRAManager returns Tessera's view of the DRA objects.
func (h *handle) SharedDRAManager() fwk.SharedDRAManager { return h.manager }

// manager is the profile's DRA manager with two changes: the slices list
// each node's GPUs in the order TesseraGPU prefers for the pod in
// PreFilter, and the claims tracker tells TesseraGPU of allocations as the
// allocator makes them.
type manager struct {
	// fh is the profile's handle: the key to its TesseraGPU, and the source
	// of the real DRA manager.
	fh fwk.Handle

	// mu is held from forPod until its end function: one pod's order at a
	// time.
	mu sync.Mutex
	// order is the current pod's order; nil when there is none. It is
	// atomic so that a lister called outside PreFilter reads it safely.
	order  atomic.Pointer[func(node string) []string]
	memoMu sync.Mutex
	// memo is what ordered returned for the previous pod.
	memo map[*resourceapi.ResourceSlice]reorder
	// preferred is each node's preferred GPUs for the pod last listed,
	// which Reserve's pending allocations are compared with.
	preferred map[string][]string

	pendingMu sync.Mutex
	// pending names the claims with a pending allocation, to look them up
	// when it ends.
	pending map[types.UID]types.NamespacedName
}

func newManager(fh fwk.Handle) *manager {
	return &manager{fh: fh, pending: map[types.UID]types.NamespacedName{}}
}

func (m *manager) inner() fwk.SharedDRAManager { return m.fh.SharedDRAManager() }

// ResourceClaims returns the profile's tracker, which tells TesseraGPU of
// pending allocations.
func (m *manager) ResourceClaims() fwk.ResourceClaimTracker {
	return &tracker{ResourceClaimTracker: m.inner().ResourceClaims(), manager: m}
}

// ResourceSlices returns the slices in the current pod's order.
func (m *manager) ResourceSlices() fwk.ResourceSliceLister {
	return &sliceLister{inner: m.inner().ResourceSlices(), manager: m}
}

// DeviceClasses returns the profile's DeviceClasses unchanged.
func (m *manager) DeviceClasses() fwk.DeviceClassLister { return m.inner().DeviceClasses() }

// DeviceClassResolver returns the profile's resolver unchanged.
func (m *manager) DeviceClassResolver() fwk.DeviceClassResolver {
	return m.inner().DeviceClassResolver()
}

// forPod sets the order of the pod's devices until the returned function
// is called.
func (m *manager) forPod(ctx context.Context, pod *v1.Pod) func() {
	m.mu.Lock()
	m.memoMu.Lock()
	m.preferred = nil
	m.memoMu.Unlock()
	if p := preferencesOf(m.fh); p != nil {
		if order := p.DeviceOrder(ctx, pod); order != nil {
			m.order.Store(&order)
		}
	} else {
		klog.FromContext(ctx).V(5).Info("No TesseraGPU in this profile: devices in the drivers' order", "pod", klog.KObj(pod))
	}
	return func() {
		m.order.Store(nil)
		m.mu.Unlock()
	}
}

// sliceLister lists the slices with the current order applied.
type sliceLister struct {
	inner   fwk.ResourceSliceLister
	manager *manager
}

// ListWithDeviceTaintRules lists the slices as the profile's lister does
// (device taint rules applied), with each GPU node's preferred devices
// first. DynamicResources calls it from PreFilter, within forPod.
func (l *sliceLister) ListWithDeviceTaintRules() ([]*resourceapi.ResourceSlice, error) {
	all, err := l.inner.ListWithDeviceTaintRules()
	order := l.manager.order.Load()
	if err != nil || order == nil {
		return all, err
	}
	m := l.manager
	m.memoMu.Lock()
	defer m.memoMu.Unlock()
	var out []*resourceapi.ResourceSlice
	out, m.memo, m.preferred = ordered(all, *order, m.memo)
	return out, nil
}

// tracker is the profile's claim tracker, reporting pending allocations
// to TesseraGPU.
type tracker struct {
	fwk.ResourceClaimTracker
	manager *manager
}

// SignalClaimPendingAllocation records the allocation, then tells
// TesseraGPU, so that the next pod's order already counts these devices.
func (t *tracker) SignalClaimPendingAllocation(uid types.UID, claim *resourceapi.ResourceClaim) error {
	if err := t.ResourceClaimTracker.SignalClaimPendingAllocation(uid, claim); err != nil {
		return err
	}
	m := t.manager
	m.pendingMu.Lock()
	m.pending[uid] = types.NamespacedName{Namespace: claim.Namespace, Name: claim.Name}
	m.pendingMu.Unlock()
	// Reserve follows the pod's PreFilter: the last preferences listed
	// are this pod's.
	m.memoMu.Lock()
	outcome, ok := choiceOf(claim, m.preferred)
	m.memoMu.Unlock()
	if ok {
		deviceChoices.WithLabelValues(outcome).Inc()
	}
	if p := preferencesOf(m.fh); p != nil {
		p.ClaimPending(claim)
	}
	return nil
}

// MaybeRemoveClaimPendingAllocation ends the pending allocation and tells
// TesseraGPU what the tracker knows of the claim afterwards.
func (t *tracker) MaybeRemoveClaimPendingAllocation(uid types.UID, forceRemove bool) bool {
	if !t.ResourceClaimTracker.MaybeRemoveClaimPendingAllocation(uid, forceRemove) {
		return false
	}
	m := t.manager
	m.pendingMu.Lock()
	name, ok := m.pending[uid]
	delete(m.pending, uid)
	m.pendingMu.Unlock()
	if p := preferencesOf(m.fh); p != nil {
		var now *resourceapi.ResourceClaim
		if ok && name.Name != "" {
			if c, err := t.ResourceClaimTracker.Get(name.Namespace, name.Name); err == nil && c.UID == uid {
				now = c
			}
		}
		p.ClaimSettled(uid, now)
	}
	return true
}
