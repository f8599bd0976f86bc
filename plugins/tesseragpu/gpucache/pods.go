package gpucache

import (
	"fmt"
	"time"

	corev1helpers "k8s.io/component-helpers/scheduling/corev1"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podgpu"
)

// podRecord is one pod's hold on a node's devices.
type podRecord struct {
	uid  types.UID
	key  string
	node string
	// priority is the pod's priority, for LowestHolderPriority.
	priority int32
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
	Use map[string]int
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

// UpsertPod applies a pod seen by the informer.
func (c *Cache) UpsertPod(pod *v1.Pod) {
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
	if old != nil && old.node == pod.Spec.NodeName && old.state == h.State && sameUse(old.Use, use) {
		// Confirmation of an assumed pod, or a repeated event.
		old.assumed = false
		old.identify(pod)
		kick := c.noExecute[old.node]
		c.unlock(false)
		if kick {
			c.EvictKick()
		}
		return
	}
	rec := &podRecord{uid: pod.UID, key: klog.KObj(pod).String(), node: pod.Spec.NodeName, Use: use, priority: corev1helpers.PodPriority(pod),
		requested: RequestedGPUs(pod), state: h.State, guess: guess, guessReq: guessReq}
	rec.identify(pod)
	if old != nil && !old.assumed && old.node == rec.node && old.Use != nil && use != nil {
		// A bound pod's assignment was rewritten, normally by the device
		// plugin recording what the kubelet did. When two pods exchanged
		// GPUs, their rewrites arrive one at a time; in between, one GPU
		// would look free while both still use it. So the old devices stay
		// held for a grace period.
		rec.held, rec.heldUntil = old.Use, c.Now().Add(rewriteGrace)
		if old.held != nil && c.Now().Before(old.heldUntil) {
			rec.held = mergeUse(old.held, old.Use)
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
		c.EvictKick()
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
func (c *Cache) reportProblemLocked(pod *v1.Pod, h podgpu.Hold) {
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
	c.Warn(pod, "InvalidGPUAssignment", EventNote(h.Problem+"; "+counted))
}

// rewriteGrace is how long a rewritten assignment keeps its old devices
// held. Exchanges are written back within a reconcile interval or two.
const rewriteGrace = 30 * time.Second

// release ends the grace period of a rewritten assignment.
func (c *Cache) release(uid types.UID) {
	c.mu.Lock()
	p := c.pods[uid]
	if p == nil || p.held == nil || c.Now().Before(p.heldUntil) {
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

// RemovePod forgets a pod and reports the node it held devices on.
func (c *Cache) RemovePod(uid types.UID) (string, bool) {
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

// Assume records the devices chosen in Reserve, after checking under the
// lock that they are still free: a pod placed concurrently, or an informer
// event since Filter, fails the check instead of being double-booked.
func (c *Cache) Assume(pod *v1.Pod, node string, a assignment.Assignment) error {
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
	if r == nil || r.Inv == nil {
		return fmt.Errorf("node %s has no gpu inventory", node)
	}
	st := r.State()
	if st.Unknown > 0 {
		return fmt.Errorf("node %s has gpu pods of unknown assignment", node)
	}
	for uuid, units := range use {
		i, ok := r.Inv.IndexOf(uuid)
		if !ok {
			return fmt.Errorf("gpu %s is no longer in node %s's inventory", uuid, node)
		}
		if free := device.FullUnits - st.Used[i]; units > free {
			return fmt.Errorf("gpu %s on node %s has %d%% free, %d%% needed", uuid, node, free, units)
		}
	}
	rec := &podRecord{uid: pod.UID, key: klog.KObj(pod).String(), node: node, Use: use, assumed: true, priority: corev1helpers.PodPriority(pod),
		requested: RequestedGPUs(pod), state: podgpu.Recorded}
	rec.identify(pod)
	c.addLocked(rec)
	return nil
}

// Forget drops an assumed pod; it is a no-op for pods already confirmed.
func (c *Cache) Forget(uid types.UID) {
	c.mu.Lock()
	p := c.pods[uid]
	if p != nil && p.assumed {
		c.removeLocked(p)
	}
	c.unlock(p != nil && p.assumed)
}

func (c *Cache) addLocked(p *podRecord) {
	if old := c.pods[p.uid]; old != nil {
		c.uncountPriorityLocked(old)
	}
	c.pods[p.uid] = p
	c.priorities[p.priority]++
	r := c.recordLocked(p.node)
	r.pods[p.uid] = p
	c.publishLocked(r)
}

func (c *Cache) removeLocked(p *podRecord) {
	if c.pods[p.uid] == p {
		c.uncountPriorityLocked(p)
	}
	delete(c.pods, p.uid)
	r := (*c.nodes.Load())[p.node]
	if r == nil {
		return
	}
	delete(r.pods, p.uid)
	c.publishLocked(r)
	c.dropRecordLocked(r)
}

// uncountPriorityLocked takes p out of the count of holders by priority.
func (c *Cache) uncountPriorityLocked(p *podRecord) {
	if c.priorities[p.priority]--; c.priorities[p.priority] <= 0 {
		delete(c.priorities, p.priority)
	}
}

// LowestHolderPriority returns the lowest priority of the pods the cache
// counts as holding GPUs (assumed ones included), and false when none
// does. A pod of at most that priority cannot take GPUs from any of them
// by preemption.
func (c *Cache) LowestHolderPriority() (int32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	lowest, any := int32(0), false
	for p := range c.priorities {
		if !any || p < lowest {
			lowest, any = p, true
		}
	}
	return lowest, any
}

// hold is what the pod takes of a node with inventory inv. A pod without
// a readable assignment, or one naming a GPU the inventory does not list,
// makes the node's use unknown; devices of a rewritten assignment still in
// their grace period count as held.
func (p *podRecord) hold(inv *device.Inventory) Hold {
	if p.guess != nil {
		if p.guessUse == nil {
			return Hold{Unknown: true}
		}
		return Hold{Use: p.guessUse}
	}
	if p.Use == nil {
		return Hold{Unknown: true}
	}
	h := Hold{Use: p.Use}
	if p.held != nil {
		h.Use = mergeUse(p.Use, p.held)
	}
	if inv != nil {
		for uuid := range p.Use {
			if _, ok := inv.IndexOf(uuid); !ok {
				h.Unknown = true
				break
			}
		}
	}
	return h
}

// RequestedGPUs is what a pod asks of the GPU resources, as the
// scheduler's NodeInfo counts it. The apiserver defaults the requests of
// extended resources to their limits; the limits count for a pod not
// defaulted.
func RequestedGPUs(pod *v1.Pod) [2]int64 {
	opts := resourcehelper.PodResourcesOptions{}
	req, lim := resourcehelper.PodRequests(pod, opts), resourcehelper.PodLimits(pod, opts)
	var out [2]int64
	for i, name := range []v1.ResourceName{gpu.ResourceGPU, gpu.ResourcePercent} {
		out[i] = max(req.Name(name, resource.DecimalSI).Value(), lim.Name(name, resource.DecimalSI).Value())
	}
	return out
}

// HoldOf returns what the pod holds on the node by the cache's records,
// and false when the cache has no record of the pod there.
func (c *Cache) HoldOf(uid types.UID, node string) (Hold, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pods[uid]
	if p == nil || p.node != node {
		return Hold{}, false
	}
	var inv *device.Inventory
	if r := (*c.nodes.Load())[node]; r != nil {
		inv = r.Inv
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
