// Package handoff makes the kubelet's device allocation agree with the GPUs
// tessera-scheduler chose, without a node lock. See deviceplugin/README.md
// for the algorithm, why it is race-free, and its limits.
//
// The kubelet never says which pod an allocation is for. The ledger keeps
// three views of the node and derives everything from them:
//
//   - claims: what the scheduler assigned each container of the pods bound
//     to this node (the tessera.io/gpu-assignment annotation);
//   - the kubelet's record: which device IDs each container got, from the
//     PodResources API, plus allocations made since the last listing;
//   - GPU health.
//
// From them it answers GetPreferredAllocation (steer the kubelet to the
// GPUs of the oldest not-yet-admitted container with that request shape),
// computes which device IDs to report unhealthy so that the kubelet's two
// resources never count one GPU twice, and lists the pods whose annotation
// must be corrected to what the kubelet actually did.
package handoff

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/podgpu"
)

// owner is one container of one pod.
type owner struct {
	pod       types.UID
	container string
}

// claim is the scheduler's choice for one container.
type claim struct {
	owner
	pod     string // namespace/name, for logs
	created time.Time
	// seen orders the pods the ledger learnt of (see podRecord.seen).
	seen     uint64
	resource Resource
	// uuids are the GPUs: several whole GPUs, or the one GPU a share is on.
	uuids []string
	// size is the device count the kubelet will ask for: the number of
	// whole GPUs, or the percent.
	size int
	// init marks a regular init container. The PodResources API never
	// lists those, so such a claim counts as admitted once any container
	// of its pod is listed.
	init bool
	// order is the container's place in the pod spec (init containers
	// first), the order in which the kubelet allocates a pod's containers.
	order int
}

// podRecord is what the ledger knows of a pod bound to this node.
type podRecord struct {
	uid       types.UID
	namespace string
	name      string
	created   time.Time
	// seen is the order in which the ledger first saw the pod bound. The
	// kubelet admits pods in the order its watch delivers them, which is
	// the order this node's informer delivers them too; creation times have
	// one-second resolution, so in a burst this is what tells them apart.
	seen uint64
	// annotation is the raw assignment annotation; valid is false when it
	// is missing or unreadable.
	annotation string
	valid      bool
	claims     []*claim
	// exchanged is set when the ledger swapped one of the pod's claims
	// with another pod's; the annotation is then rewritten to match.
	exchanged bool
}

// ContainerDevices is the kubelet's record of one container's devices. The
// PodResources API names pods, it does not give their UIDs.
type ContainerDevices struct {
	Namespace string
	Pod       string
	Container string
	Resource  Resource
	IDs       []string
}

// allocation is an Allocate the kubelet made that its PodResources listing
// has not shown yet.
type allocation struct {
	resource Resource
	ids      []string
	owner    *owner // the container it was steered for, if any
	at       time.Time
}

// Ledger is the device plugin's hand-off state. It is safe for concurrent
// use; every method holds its lock only for in-memory work.
type Ledger struct {
	mu        sync.Mutex
	now       func() time.Time
	gpus      map[string]bool // known GPU UUIDs
	unhealthy map[string]bool
	pods      map[types.UID]*podRecord
	// kubelet is the last PodResources listing, by container.
	kubelet map[owner][]ContainerDevices
	// inflight are allocations newer than the listing.
	inflight []allocation
	// offered maps the exact ID set last offered by Preferred to the
	// container it was meant for, to attribute the Allocate that follows.
	offered map[string]owner
	// steered are containers an Allocate has matched since the listing.
	steered map[owner]bool
	// seq numbers the pods in the order the ledger first saw them.
	seq uint64
	// podsChanged is closed and replaced at every pod update.
	podsChanged chan struct{}
	// ghosts are pods gone from the API that the kubelet may still list,
	// by namespace/name: the device IDs it listed for them when they went.
	// PodResources names pods, not UIDs, so without them the devices of a
	// deleted pod would be credited to a new pod of the same name.
	ghosts map[string]ghost
}

// ghost is a pod deleted from the API whose devices the kubelet may still
// list for a moment.
type ghost struct {
	ids map[string]bool // resource/id
}

// inflightTTL bounds how long an allocation the kubelet never reports is
// kept. The kubelet lists a pod as soon as its admission ends, which is
// milliseconds after its last Allocate; an allocation still not shown after
// this long belongs to a pod whose admission failed, and the kubelet frees
// its devices at its next allocation. Keeping it longer would keep the GPU
// out of the other resource's count for nothing. Allocations for regular
// init containers, which the kubelet never lists, are kept while their pod
// exists instead (see keepLocked).
const inflightTTL = 10 * time.Second

// NewLedger returns a ledger for the node's GPUs.
func NewLedger(uuids []string) *Ledger {
	l := &Ledger{now: time.Now, unhealthy: map[string]bool{}, pods: map[types.UID]*podRecord{},
		kubelet: map[owner][]ContainerDevices{}, offered: map[string]owner{}, steered: map[owner]bool{},
		podsChanged: make(chan struct{}), ghosts: map[string]ghost{}}
	l.SetGPUs(uuids)
	return l
}

// SetGPUs replaces the set of GPUs, e.g. after rediscovery.
func (l *Ledger) SetGPUs(uuids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gpus = make(map[string]bool, len(uuids))
	for _, u := range uuids {
		l.gpus[u] = true
	}
}

// SetHealth records a GPU's health.
func (l *Ledger) SetHealth(uuid string, healthy bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if healthy {
		delete(l.unhealthy, uuid)
	} else {
		l.unhealthy[uuid] = true
	}
}

// UpsertPod records a pod bound to this node. It returns an error when the
// pod's assignment annotation is present but unusable; the pod then has no
// claims, and the kubelet's record will be written back as its truth.
func (l *Ledger) UpsertPod(pod *v1.Pod) error {
	_, err := l.upsert(pod, false)
	return err
}

// AddPodIfUnknown records a pod the ledger has not seen, as UpsertPod
// would, and leaves a known one as it is: it serves a direct listing of
// the API made because the informer may be behind, and a listing must not
// undo what a newer event, or an exchange, recorded. It reports whether
// the pod was added.
func (l *Ledger) AddPodIfUnknown(pod *v1.Pod) (bool, error) {
	if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		return false, nil
	}
	return l.upsert(pod, true)
}

// upsert is UpsertPod; with onlyNew it leaves a pod the ledger knows as it
// is, deciding that under the same lock as the write, so that an informer
// event landing in between is never overwritten. It reports whether it
// recorded the pod.
func (l *Ledger) upsert(pod *v1.Pod, onlyNew bool) (bool, error) {
	rec := &podRecord{uid: pod.UID, namespace: pod.Namespace, name: pod.Name, created: pod.CreationTimestamp.Time}
	var err error
	raw, ok := pod.Annotations[assignment.Annotation]
	if ok {
		rec.annotation = raw
		rec.claims, err = claimsOf(pod)
		rec.valid = err == nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.pods[pod.UID]
	if onlyNew && old != nil {
		return false, nil
	}
	close(l.podsChanged)
	l.podsChanged = make(chan struct{})
	if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		l.forgetLocked(pod.UID)
		return true, nil
	}
	if old != nil {
		rec.seen = old.seen
	} else {
		l.seq++
		rec.seen = l.seq
	}
	for _, c := range rec.claims {
		c.seen = rec.seen
	}
	// An exchange lives in the claims until the correction it causes
	// rewrites the annotation; an update that leaves the annotation as it
	// was (a status change) must not undo it.
	if old != nil && old.exchanged && old.annotation == rec.annotation && rec.valid {
		rec.claims, rec.exchanged = old.claims, true
	}
	l.pods[pod.UID] = rec
	return true, err
}

// DeletePod forgets a pod.
func (l *Ledger) DeletePod(uid types.UID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetLocked(uid)
}

// forgetLocked drops a pod that is gone from the API or has ended, and
// with it the devices the kubelet's last listing showed for it and the
// allocations steered to it. The kubelet drops the devices of a pod it no
// longer runs at its next admission, and the scheduler counts them free
// from the same event, so the next pod the scheduler places there may be
// admitted at once: holding them until the next listing would report the
// GPU unavailable to the kubelet for that admission, which then takes
// other GPUs than the scheduler chose. If a later listing still shows the
// devices (the kubelet had not processed the deletion yet), they are
// still not held, only kept apart as the ghost's: they are not a new
// same-name pod's.
func (l *Ledger) forgetLocked(uid types.UID) {
	p := l.pods[uid]
	delete(l.pods, uid)
	l.releaseInflightLocked(uid)
	ids := map[string]bool{}
	for o, ds := range l.kubelet {
		if o.pod != uid {
			continue
		}
		for _, d := range ds {
			for _, id := range d.IDs {
				ids[string(d.Resource)+"/"+id] = true
			}
		}
		delete(l.kubelet, o)
	}
	if p != nil && len(ids) > 0 {
		l.ghosts[p.namespace+"/"+p.name] = ghost{ids: ids}
	}
}

// releaseInflightLocked drops the allocations steered to a pod that has
// ended. A pod that fails admission (UnexpectedAdmissionError) ends without
// ever running a container, and the kubelet takes its devices back at its
// next allocation; waiting out inflightTTL would keep the GPU out of the
// other resource's count for nothing. A finished pod's containers have
// stopped, so its devices are free too.
func (l *Ledger) releaseInflightLocked(uid types.UID) {
	kept := l.inflight[:0]
	for _, a := range l.inflight {
		if a.owner != nil && a.owner.pod == uid {
			delete(l.steered, *a.owner)
			continue
		}
		kept = append(kept, a)
	}
	l.inflight = kept
}

// claimsOf turns a pod's assignment into per-container claims. Which part
// of an annotation is trusted is pkg/podgpu's rule, the one the scheduler
// follows: only containers that ask for GPUs, each given exactly what it
// asks; anything else is an error, and the pod gets no claims, so an
// annotation cannot reserve GPUs nobody will use. A share recorded in
// parts over several GPUs (the kubelet's truth, written back by the
// reconciler) is one claim on those GPUs.
func claimsOf(pod *v1.Pod) ([]*claim, error) {
	h := podgpu.Of(pod)
	if h.State != podgpu.Recorded {
		if h.Problem == "" {
			return nil, fmt.Errorf("%s cannot be used", assignment.Annotation)
		}
		return nil, errors.New(h.Problem)
	}
	init := map[string]bool{}
	order := map[string]int{}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		init[c.Name] = c.RestartPolicy == nil || *c.RestartPolicy != v1.ContainerRestartPolicyAlways
		order[c.Name] = i
	}
	for i := range pod.Spec.Containers {
		order[pod.Spec.Containers[i].Name] = len(pod.Spec.InitContainers) + i
	}
	var out []*claim
	for _, name := range h.Assignment.Containers() {
		devs := h.Assignment[name]
		c := &claim{owner: owner{pod.UID, name}, pod: pod.Namespace + "/" + pod.Name, created: pod.CreationTimestamp.Time, init: init[name], order: order[name]}
		c.resource = Whole
		if devs[0].Percent < 100 {
			c.resource = Percent
		}
		for _, d := range devs {
			c.uuids = append(c.uuids, d.UUID)
			if c.resource == Whole {
				c.size++
			} else {
				c.size += d.Percent
			}
		}
		sort.Strings(c.uuids)
		out = append(out, c)
	}
	return out, nil
}

// ObserveKubelet replaces the kubelet's record with a fresh PodResources
// listing of this node's GPU devices. Allocations the listing now shows, and
// those too old to still be coming, are dropped from the in-flight list.
func (l *Ledger) ObserveKubelet(devs []ContainerDevices) {
	devs = MergeContainerDevices(devs)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kubelet = map[owner][]ContainerDevices{}
	listed := map[string]bool{}
	byName := make(map[string]types.UID, len(l.pods))
	for _, p := range l.pods {
		byName[p.namespace+"/"+p.name] = p.uid
	}
	ghostListed := map[string]bool{}
	for _, d := range devs {
		name := d.Namespace + "/" + d.Pod
		uid, ok := byName[name]
		if !ok {
			// A pod the informer has not shown yet still holds its devices.
			uid = types.UID("name:" + name)
		}
		// The IDs a deleted pod of this name held are its own, not those
		// of a pod that now has the name, and they are not held: the
		// kubelet lists a pod until it has processed the pod's deletion,
		// and frees the devices of a pod it no longer runs at its next
		// admission, which comes after.
		if g, haunted := l.ghosts[name]; haunted {
			var mine []string
			for _, id := range d.IDs {
				if g.ids[string(d.Resource)+"/"+id] {
					listed[string(d.Resource)+"/"+id] = true
					ghostListed[name] = true
				} else {
					mine = append(mine, id)
				}
			}
			d.IDs = mine
		}
		for _, id := range d.IDs {
			listed[string(d.Resource)+"/"+id] = true
		}
		if len(d.IDs) == 0 {
			continue
		}
		o := owner{uid, d.Container}
		l.kubelet[o] = append(l.kubelet[o], d)
	}
	// A ghost whose devices the kubelet no longer lists is gone for good.
	for name := range l.ghosts {
		if !ghostListed[name] {
			delete(l.ghosts, name)
		}
	}
	now := l.now()
	kept := l.inflight[:0]
	for _, a := range l.inflight {
		shown := true
		for _, id := range a.ids {
			if !listed[string(a.resource)+"/"+id] {
				shown = false
				break
			}
		}
		if !shown && (now.Sub(a.at) < inflightTTL || l.keepLocked(a)) {
			kept = append(kept, a)
			continue
		}
		// The listing now speaks for these IDs (or they are never coming):
		// the container the allocation was steered for is admitted only if
		// the listing says so, since the kubelet may have been admitting a
		// different pod of the same shape.
		if a.owner != nil {
			delete(l.steered, *a.owner)
		}
	}
	l.inflight = kept
	// Steering marks are only needed until the listing speaks for the
	// container.
	for o := range l.steered {
		if _, ok := l.kubelet[o]; ok {
			delete(l.steered, o)
		}
	}
	l.exchangeLocked()
}

// MergeContainerDevices folds the kubelet's PodResources entries into one
// per container and resource. The kubelet reports one entry per device ID
// (and one per NUMA node of a device that has several), so a 25% share
// arrives as 25 entries; read one at a time, they would look like 25
// containers or one GPU named 25 times. IDs come out sorted, without
// repeats, and the entries in a fixed order.
func MergeContainerDevices(devs []ContainerDevices) []ContainerDevices {
	type k struct {
		ns, pod, container string
		r                  Resource
	}
	idx := map[k]int{}
	var out []ContainerDevices
	seen := map[k]map[string]bool{}
	for _, d := range devs {
		key := k{d.Namespace, d.Pod, d.Container, d.Resource}
		i, ok := idx[key]
		if !ok {
			i = len(out)
			idx[key] = i
			seen[key] = map[string]bool{}
			out = append(out, ContainerDevices{Namespace: d.Namespace, Pod: d.Pod, Container: d.Container, Resource: d.Resource})
		}
		for _, id := range d.IDs {
			if !seen[key][id] {
				seen[key][id] = true
				out[i].IDs = append(out[i].IDs, id)
			}
		}
	}
	for i := range out {
		sort.Strings(out[i].IDs)
	}
	sort.Slice(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.Namespace+"/"+x.Pod != y.Namespace+"/"+y.Pod {
			return x.Namespace+"/"+x.Pod < y.Namespace+"/"+y.Pod
		}
		if x.Container != y.Container {
			return x.Container < y.Container
		}
		return x.Resource < y.Resource
	})
	return out
}

// keepLocked reports whether an allocation the listing does not show is
// still held past inflightTTL: one steered to a regular init container
// (never listed) of a pod that exists and that the listing does not show
// yet (once it does, heldLocked counts the pod's init claims).
func (l *Ledger) keepLocked(a allocation) bool {
	if a.owner == nil {
		return false
	}
	p := l.pods[a.owner.pod]
	if p == nil || l.listedPodsLocked()[p.uid] {
		return false
	}
	for _, c := range p.claims {
		if c.owner == *a.owner {
			return c.init
		}
	}
	return false
}

// exchangeLocked repairs steering that served the wrong pod. When the
// kubelet gave container X the devices claimed by a container Y of the same
// shape that is not yet admitted, X and Y swap claims: Y now waits for the
// devices X left, so the per-GPU totals the scheduler accounts stay exact
// and Y is steered to them when its turn comes.
func (l *Ledger) exchangeLocked() {
	byOwner := map[owner]*claim{}
	for _, p := range l.pods {
		for _, c := range p.claims {
			byOwner[c.owner] = c
		}
	}
	for o, ds := range l.kubelet {
		cx := byOwner[o]
		if cx == nil {
			continue
		}
		for _, d := range ds {
			if d.Resource != cx.resource {
				continue
			}
			got := truthGPUs(d)
			if sameStrings(got, cx.uuids) {
				continue
			}
			for _, cy := range byOwner {
				if cy == cx || cy.resource != cx.resource || cy.size != cx.size || l.admittedLocked(cy) || !sameStrings(got, cy.uuids) {
					continue
				}
				cx.uuids, cy.uuids = cy.uuids, cx.uuids
				l.pods[cy.owner.pod].exchanged = true
				break
			}
		}
	}
}

// truthGPUs are the GPUs behind a container's device IDs, sorted.
func truthGPUs(d ContainerDevices) []string {
	set := map[string]bool{}
	for _, id := range d.IDs {
		if d.Resource == Percent {
			if u, _, ok := ParsePercentID(id); ok {
				set[u] = true
			}
		} else {
			set[id] = true
		}
	}
	out := make([]string, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// admitted reports whether the kubelet has allocated the claim's resource
// to its container.
func (l *Ledger) admittedLocked(c *claim) bool {
	if l.steered[c.owner] {
		return true
	}
	for o, ds := range l.kubelet {
		if o.pod != c.owner.pod {
			continue
		}
		if c.init {
			return true
		}
		if o.container != c.container {
			continue
		}
		for _, d := range ds {
			if d.Resource == c.resource {
				return true
			}
		}
	}
	return false
}

// usage is which GPUs are held whole and which by shares, by the kubelet's
// record, in-flight allocations and the claims not yet admitted.
type usage struct {
	whole, shared map[string]bool
}

// claim marks the GPUs of a claim as held in its mode.
func (u usage) claim(c *claim) {
	for _, uuid := range c.uuids {
		if c.resource == Whole {
			u.whole[uuid] = true
		} else {
			u.shared[uuid] = true
		}
	}
}

func (l *Ledger) usageLocked() usage {
	u := l.heldLocked()
	for _, p := range l.pods {
		for _, c := range p.claims {
			if !l.admittedLocked(c) {
				u.claim(c)
			}
		}
	}
	return u
}

// heldLocked is what the kubelet has really given out: its record plus the
// allocations since.
func (l *Ledger) heldLocked() usage {
	u := usage{whole: map[string]bool{}, shared: map[string]bool{}}
	mark := func(r Resource, ids []string) {
		for _, id := range ids {
			if r == Whole {
				u.whole[id] = true
			} else if uuid, _, ok := ParsePercentID(id); ok {
				u.shared[uuid] = true
			}
		}
	}
	for _, ds := range l.kubelet {
		for _, d := range ds {
			mark(d.Resource, d.IDs)
		}
	}
	for _, a := range l.inflight {
		mark(a.resource, a.ids)
	}
	// The kubelet keeps a regular init container's devices for its pod's
	// whole life, but PodResources never lists them, and the in-flight
	// record of their Allocate expires (or is lost with a restart of this
	// plugin). So, for every pod the listing shows, its init containers'
	// claims count as held: derived from the pods and the listing, they
	// survive both.
	listed := l.listedPodsLocked()
	for _, p := range l.pods {
		if !listed[p.uid] {
			continue
		}
		for _, c := range p.claims {
			if c.init {
				u.claim(c)
			}
		}
	}
	return u
}

// Allocated is how much of each GPU the kubelet has given out, in percent:
// 100 for a GPU held whole, else the percent IDs held. It counts the
// kubelet's record and the allocations since, and the devices of init
// containers of listed pods, which the record never shows (a share an init
// container handed on to a later container of its pod is in the record
// already and is not counted twice). Every known GPU has an entry.
func (l *Ledger) Allocated() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	whole := map[string]bool{}
	ids := map[string]map[string]bool{} // GPU -> percent IDs
	sharesOf := map[types.UID]map[string]bool{}
	mark := func(pod types.UID, r Resource, list []string) {
		for _, id := range list {
			if r == Whole {
				whole[id] = true
				continue
			}
			u, _, ok := ParsePercentID(id)
			if !ok {
				continue
			}
			if ids[u] == nil {
				ids[u] = map[string]bool{}
			}
			ids[u][id] = true
			if pod != "" {
				if sharesOf[pod] == nil {
					sharesOf[pod] = map[string]bool{}
				}
				sharesOf[pod][u] = true
			}
		}
	}
	for o, ds := range l.kubelet {
		for _, d := range ds {
			mark(o.pod, d.Resource, d.IDs)
		}
	}
	for _, a := range l.inflight {
		var pod types.UID
		if a.owner != nil {
			pod = a.owner.pod
		}
		mark(pod, a.resource, a.ids)
	}
	extra := map[string]int{}
	listed := l.listedPodsLocked()
	for _, p := range l.pods {
		if !listed[p.uid] {
			continue
		}
		for _, c := range p.claims {
			if !c.init {
				continue
			}
			for _, u := range c.uuids {
				switch {
				case c.resource == Whole:
					whole[u] = true
				case !sharesOf[p.uid][u]:
					extra[u] += c.size
				}
			}
		}
	}
	out := make(map[string]int, len(l.gpus))
	for u := range l.gpus {
		if whole[u] {
			out[u] = 100
		} else {
			out[u] = min(100, len(ids[u])+extra[u])
		}
	}
	return out
}

// listedPodsLocked is the set of pods the kubelet's record shows a
// container of.
func (l *Ledger) listedPodsLocked() map[types.UID]bool {
	listed := map[types.UID]bool{}
	for o := range l.kubelet {
		listed[o.pod] = true
	}
	return listed
}

// conflictLocked names the first GPU behind ids that is already given out
// in the other mode: a whole GPU that shares hold, or a share of a GPU held
// whole. The health lever normally keeps the kubelet from offering such
// IDs, but it reaches the kubelet asynchronously; this is the hard guard.
// An ID already given out in the same mode is no conflict: the kubelet
// never hands one device to two pods, and it passes an init container's
// devices on to the containers after it, calling Allocate again with the
// same IDs.
func (l *Ledger) conflictLocked(r Resource, ids []string, held usage) string {
	for _, id := range ids {
		if r == Whole && held.shared[id] {
			return id
		}
		if r == Percent {
			if u, _, ok := ParsePercentID(id); ok && held.whole[u] {
				return u
			}
		}
	}
	return ""
}

// Unhealthy returns the device IDs of a resource to report unhealthy: those
// of unhealthy GPUs, and those that would let the kubelet count a GPU twice
// (a GPU held by shares offers no whole device; a GPU held whole offers no
// shares).
func (l *Ledger) Unhealthy(r Resource) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.usageLocked()
	out := map[string]bool{}
	for uuid := range l.gpus {
		bad := l.unhealthy[uuid]
		switch r {
		case Whole:
			if bad || u.shared[uuid] {
				out[uuid] = true
			}
		case Percent:
			if bad || u.whole[uuid] {
				for n := 0; n < PercentIDs; n++ {
					out[PercentID(uuid, n)] = true
				}
			}
		}
	}
	return out
}

// Preferred answers GetPreferredAllocation for one container: the IDs of
// the oldest not-yet-admitted container whose claim has this resource and
// size and whose GPUs are available; failing that, IDs that keep clear of
// other pods' claims. It never returns IDs outside available.
func (l *Ledger) Preferred(r Resource, available, mustInclude []string, size int) []string {
	ids, _ := l.prefer(r, available, mustInclude, size, true)
	return ids
}

// Match is Preferred without the fallback: it reports false when no claim
// fits, so that a caller can wait for the pod informer to catch up.
func (l *Ledger) Match(r Resource, available, mustInclude []string, size int) ([]string, bool) {
	return l.prefer(r, available, mustInclude, size, false)
}

// Pending reports whether any claim for the resource awaits admission: only
// then is it worth waiting for the pod informer when nothing matches.
func (l *Ledger) Pending(r Resource) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.pods {
		for _, c := range p.claims {
			if c.resource == r && !l.admittedLocked(c) {
				return true
			}
		}
	}
	return false
}

// PodsChanged returns a channel closed at the next pod update.
func (l *Ledger) PodsChanged() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.podsChanged
}

func (l *Ledger) prefer(r Resource, available, mustInclude []string, size int, fallback bool) ([]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	avail := map[string]bool{}
	for _, id := range available {
		avail[id] = true
	}
	// Only the latest offer can be the one the next Allocate answers: the
	// kubelet allocates one container at a time.
	clear(l.offered)
	if c, ids := l.matchLocked(r, avail, mustInclude, size); c != nil {
		l.offered[key(r, ids)] = c.owner
		return ids, true
	}
	if !fallback {
		return nil, false
	}
	return l.fallbackLocked(r, available, avail, mustInclude, size), false
}

// matchLocked finds the claim to serve.
func (l *Ledger) matchLocked(r Resource, avail map[string]bool, must []string, size int) (*claim, []string) {
	var cands []*claim
	for _, p := range l.pods {
		for _, c := range p.claims {
			if c.resource == r && c.size == size && !l.admittedLocked(c) {
				cands = append(cands, c)
			}
		}
	}
	// The kubelet admits pods oldest first, pods of one second in the order
	// its watch showed them (the order this ledger saw them), and a pod's
	// containers in spec order; the name settles what is left, so the choice
	// is deterministic.
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if !a.created.Equal(b.created) {
			return a.created.Before(b.created)
		}
		if a.seen != b.seen {
			return a.seen < b.seen
		}
		if a.pod != b.pod {
			return a.pod < b.pod
		}
		return a.order < b.order
	})
	reserved := l.reservedLocked()
	for _, c := range cands {
		if ids := l.idsForLocked(c, avail, must, reserved); ids != nil {
			return c, ids
		}
	}
	return nil, nil
}

// reservedLocked sums, per GPU, the percent that claims not yet admitted
// will need. A share may only take what the others leave: after the kubelet
// admitted a pod on another pod's claim (two claims of the same shape
// exchanged), the displaced pod must not eat into a third pod's share of
// that GPU, but take the slot the first pod left.
func (l *Ledger) reservedLocked() map[string]int {
	reserved := map[string]int{}
	for _, p := range l.pods {
		for _, c := range p.claims {
			// Init claims reuse the pod's other devices; counting them too
			// would reserve the same units twice.
			if c.resource == Percent && !c.init && !l.admittedLocked(c) {
				reserved[c.uuids[0]] += c.size
			}
		}
	}
	return reserved
}

// idsForLocked returns the IDs that serve claim c from avail, or nil.
func (l *Ledger) idsForLocked(c *claim, avail map[string]bool, must []string, reserved map[string]int) []string {
	held := l.heldLocked()
	if c.resource == Whole {
		for _, u := range c.uuids {
			if !avail[u] || held.shared[u] {
				return nil
			}
		}
		for _, m := range must {
			if !contains(c.uuids, m) {
				return nil
			}
		}
		return append([]string(nil), c.uuids...)
	}
	gpu := c.uuids[0]
	if held.whole[gpu] {
		return nil
	}
	ids := []string{}
	for _, m := range must {
		if u, _, ok := ParsePercentID(m); !ok || u != gpu {
			return nil
		}
		ids = append(ids, m)
	}
	for n := 0; n < PercentIDs && len(ids) < c.size; n++ {
		id := PercentID(gpu, n)
		if avail[id] && !contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) < c.size {
		return nil
	}
	// What the other pending claims on this GPU need must stay available.
	free := 0
	for n := 0; n < PercentIDs; n++ {
		if avail[PercentID(gpu, n)] {
			free++
		}
	}
	if free-(reserved[gpu]-c.size) < c.size {
		return nil
	}
	return ids
}

// fallbackLocked serves a container the ledger cannot attribute (its pod is
// not known yet, or was not placed by tessera-scheduler). It keeps shares on
// one GPU, prefers GPUs no pending claim names, and packs shares onto GPUs
// that already have shares.
func (l *Ledger) fallbackLocked(r Resource, available []string, avail map[string]bool, must []string, size int) []string {
	held := l.heldLocked()
	usable := available[:0:0]
	for _, id := range available {
		if l.conflictLocked(r, []string{id}, held) == "" {
			usable = append(usable, id)
		}
	}
	available = usable
	claimed := map[string]bool{}
	for _, p := range l.pods {
		for _, c := range p.claims {
			if !l.admittedLocked(c) {
				for _, u := range c.uuids {
					claimed[u] = true
				}
			}
		}
	}
	if r == Whole {
		ids := append([]string(nil), must...)
		rest := append([]string(nil), available...)
		sort.SliceStable(rest, func(i, j int) bool { return !claimed[rest[i]] && claimed[rest[j]] })
		for _, id := range rest {
			if len(ids) >= size {
				break
			}
			if !contains(ids, id) {
				ids = append(ids, id)
			}
		}
		return ids
	}
	perGPU := map[string][]string{}
	for _, id := range available {
		if u, _, ok := ParsePercentID(id); ok {
			perGPU[u] = append(perGPU[u], id)
		}
	}
	u := l.usageLocked()
	reserved := l.reservedLocked()
	var gpus []string
	for g, ids := range perGPU {
		if len(ids) >= size {
			gpus = append(gpus, g)
		}
	}
	// Room left after the pending claims, which may be negative.
	room := func(g string) int { return len(perGPU[g]) - reserved[g] }
	mustGPU := ""
	if len(must) > 0 {
		mustGPU, _, _ = ParsePercentID(must[0])
	}
	sort.Slice(gpus, func(i, j int) bool {
		a, b := gpus[i], gpus[j]
		if (a == mustGPU) != (b == mustGPU) {
			return a == mustGPU
		}
		// Room that no pending claim needs comes first.
		if fa, fb := room(a) >= size, room(b) >= size; fa != fb {
			return fa
		}
		if claimed[a] != claimed[b] {
			return !claimed[a]
		}
		if u.shared[a] != u.shared[b] {
			return u.shared[a]
		}
		if len(perGPU[a]) != len(perGPU[b]) {
			return len(perGPU[a]) < len(perGPU[b])
		}
		return a < b
	})
	ids := append([]string(nil), must...)
	if len(gpus) > 0 {
		for _, id := range perGPU[gpus[0]] {
			if len(ids) >= size {
				break
			}
			if !contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	// No single GPU has room: let the kubelet choose; reconciliation
	// records what it did.
	if len(ids) < size {
		return nil
	}
	return ids
}

// Allocate records an allocation the kubelet is making and returns the
// GPUs behind the IDs. Unknown IDs are an error that names them.
func (l *Ledger) Allocate(r Resource, ids []string) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var unknown []string
	gpuSet := map[string]bool{}
	for _, id := range ids {
		uuid := id
		if r == Percent {
			var ok bool
			if uuid, _, ok = ParsePercentID(id); !ok {
				unknown = append(unknown, id)
				continue
			}
		}
		if !l.gpus[uuid] {
			unknown = append(unknown, id)
			continue
		}
		gpuSet[uuid] = true
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown %s device IDs: %s", r, strings.Join(unknown, ", "))
	}
	if g := l.conflictLocked(r, ids, l.heldLocked()); g != "" {
		if r == Percent {
			return nil, fmt.Errorf("GPU %s is already held whole; refusing to give out shares of it as %s too", g, r)
		}
		return nil, fmt.Errorf("GPU %s is already held by shares; refusing to give it out whole as %s too", g, r)
	}
	a := allocation{resource: r, ids: append([]string(nil), ids...), at: l.now()}
	if o, ok := l.offered[key(r, ids)]; ok {
		a.owner = &o
		l.steered[o] = true
		delete(l.offered, key(r, ids))
	}
	l.inflight = append(l.inflight, a)
	gpus := make([]string, 0, len(gpuSet))
	for g := range gpuSet {
		gpus = append(gpus, g)
	}
	sort.Strings(gpus)
	return gpus, nil
}

// Correction is a pod whose annotation must be rewritten to match what the
// kubelet allocated.
type Correction struct {
	Pod       types.UID
	Namespace string
	Name      string
	// Assignment is the annotation's new value: the kubelet's record for
	// every container it has allocated, the scheduler's for the others.
	Assignment assignment.Assignment
	// Was is the old annotation value ("" when missing).
	Was string
}

// Corrections lists the pods whose annotation disagrees with the kubelet's
// record. Only containers the kubelet has listed are compared.
func (l *Ledger) Corrections() []Correction {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Correction
	for _, p := range l.pods {
		truth := assignment.Assignment{}
		for o, ds := range l.kubelet {
			if o.pod != p.uid {
				continue
			}
			for _, d := range ds {
				truth[o.container] = append(truth[o.container], devicesOf(d)...)
			}
		}
		if len(truth) == 0 && !p.exchanged {
			continue
		}
		merged := assignment.Assignment{}
		if p.valid {
			for _, c := range p.claims {
				for _, u := range c.uuids {
					pct := 100
					if c.resource == Percent {
						pct = c.size
					}
					merged[c.container] = append(merged[c.container], assignment.Device{UUID: u, Percent: pct})
				}
			}
		}
		for name, devs := range truth {
			sort.Slice(devs, func(i, j int) bool { return devs[i].UUID < devs[j].UUID })
			merged[name] = devs
		}
		before := ""
		if p.annotation != "" {
			if a, err := assignment.Parse(p.annotation); err == nil {
				for _, devs := range a {
					sort.Slice(devs, func(i, j int) bool { return devs[i].UUID < devs[j].UUID })
				}
				before = a.String()
			}
		}
		if merged.Validate() != nil || merged.String() == before {
			continue
		}
		out = append(out, Correction{Pod: p.uid, Namespace: p.namespace, Name: p.name, Assignment: merged, Was: p.annotation})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name })
	return out
}

// devicesOf groups a container's device IDs into assignment entries.
func devicesOf(d ContainerDevices) []assignment.Device {
	if d.Resource == Whole {
		out := make([]assignment.Device, 0, len(d.IDs))
		for _, id := range d.IDs {
			out = append(out, assignment.Device{UUID: id, Percent: 100})
		}
		return out
	}
	count := map[string]int{}
	for _, id := range d.IDs {
		if u, _, ok := ParsePercentID(id); ok {
			count[u]++
		}
	}
	out := make([]assignment.Device, 0, len(count))
	for u, n := range count {
		out = append(out, assignment.Device{UUID: u, Percent: n})
	}
	return out
}

func key(r Resource, ids []string) string {
	s := append([]string(nil), ids...)
	sort.Strings(s)
	return string(r) + "|" + strings.Join(s, ",")
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}
