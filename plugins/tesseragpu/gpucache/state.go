package gpucache

import (
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podgpu"
)

// NodeState is an immutable view of one node's GPUs. Writers build a new one
// and swap it in, so Filter and Score read it without locks or copies.
type NodeState struct {
	// inv is nil until the node's GPUNode, or the ResourceSlices of a DRA
	// driver, are seen.
	Inv *device.Inventory
	// DRA is set when Inv comes from ResourceSlices: Used is what
	// allocated ResourceClaims hold, the inventory has no heartbeat, and a
	// DRA allocator, not Tessera, picks the devices.
	DRA bool
	// used is the capacity in use per device index.
	Used []int
	// holders are the pods counted in used and unknown. Filter compares
	// them with the scheduler's snapshot when the node looks full (see
	// Cache.agreed).
	holders []types.UID
	// requested is what the holders ask of the node's extended GPU
	// resources (whole GPUs, percent), as the scheduler's NodeInfo sums
	// them: the cheap first test of agreed.
	requested [2]int64
	// unknown counts pods on the node that hold GPUs the cache cannot pin
	// to devices (no readable assignment). While any exist, every GPU of
	// the node counts as taken, so nothing can be double-booked.
	Unknown int
	// usedBuf holds used for nodes of up to 8 devices, so that Filter
	// finds it in the cache lines it has already loaded.
	usedBuf [8]int
	// room is what the state has free, for PreFilter's pruning; set when
	// the state is published.
	room room
	// own is the copy of the node's inventory that inv points to, in the
	// same allocation: Filter then reads the state and the inventory's
	// hot words (device.Inventory.CopyTo) from neighbouring cache lines
	// instead of following a pointer to a second object on every node.
	own device.Inventory
}

// State returns the node's current state.
func (r *nodeRecord) State() *NodeState { return r.slot.Load().State() }

// publishLocked recomputes a node's state from its inventory and pods.
func (c *Cache) publishLocked(r *nodeRecord) {
	st := newNodeState(r.Inv)
	var guessed []*podRecord
	pods := r.pods
	if r.dra {
		// Pods hold a DRA node's GPUs through their claims.
		st.publishDRA(r.claimed)
		pods = nil
	}
	for _, p := range pods {
		if p.guess != nil {
			guessed = append(guessed, p)
			continue
		}
		h := p.hold(r.Inv)
		if h.Unknown && p.Use != nil {
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
		st.count(p, p.hold(r.Inv))
	}
	// The new state is counted in before the old one is counted out, so
	// that a model on this node alone keeps its tally entry.
	st.room = roomOf(st)
	sl := r.slot.Load()
	old := sl.state.Load()
	c.tally.count(st, r.stale.Load(), 1)
	c.tally.count(old, r.stale.Load(), -1)
	c.room.move(r, old, st)
	sl.state.Store(st)
}

// newNodeState returns an empty state of a node with inventory inv (nil
// when none is known): nothing used, no unknown pods.
func newNodeState(inv *device.Inventory) *NodeState {
	st := &NodeState{}
	if inv != nil {
		inv.CopyTo(&st.own)
		st.Inv = &st.own
		if n := inv.Len(); n <= len(st.usedBuf) {
			st.Used = st.usedBuf[:n]
		} else {
			st.Used = make([]int, n)
		}
	}
	return st
}

// Holders returns the pods the state counts, none for a nil state. The
// slice is shared: it must not be changed.
func (st *NodeState) Holders() []types.UID {
	if st == nil {
		return nil
	}
	return st.holders
}

// Clone returns a copy of the state that can be changed.
func (st *NodeState) Clone() *NodeState {
	c := newNodeState(st.Inv)
	copy(c.Used, st.Used)
	c.Unknown, c.holders, c.requested, c.DRA = st.Unknown, st.holders, st.requested, st.DRA
	return c
}

// Agreed returns the node's state counting only the pods that the
// scheduler's snapshot of the node (ni) has, or nil when st, the state the
// cache published, counts no other pod. The plugin's informer handlers
// and the scheduler's run apart, so for a moment after a pod goes the
// snapshot can show the node free while the cache still counts the pod;
// judged on the cache alone, the node would then look full and preemption
// would go looking for victims elsewhere. The pod also, when set, counts
// as in the snapshot.
func (c *Cache) Agreed(st *NodeState, ni fwk.NodeInfo, also types.UID) *NodeState {
	if st == nil || st.Inv == nil || len(st.holders) == 0 {
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
	if r == nil || r.Inv == nil {
		return nil
	}
	out := newNodeState(r.Inv)
	for _, p := range r.pods {
		if inSnapshot(p.uid) {
			out.count(p, p.hold(r.Inv))
		}
	}
	return out
}

// Hold is what one pod takes of a node's state: the capacity it holds
// per device UUID, and whether it also makes the node's use unknown.
type Hold struct {
	Use     map[string]int
	Unknown bool
}

// guess places a pod whose GPUs are not recorded on the state's free
// capacity, as binpack would, on any GPU (the kubelet gave it GPUs without
// regard to health, device taints or models), and returns what it takes;
// nil when it does not fit or the node's inventory is unknown.
func (st *NodeState) guess(pod *v1.Pod, asked *device.Request) map[string]int {
	if st.Inv == nil || st.Inv.Len() == 0 || asked.Empty() {
		return nil
	}
	req := *asked
	req.Models, req.Tolerations = nil, nil
	all := uint64(1)<<st.Inv.Len() - 1
	if st.Inv.Len() == 64 {
		all = ^uint64(0)
	}
	p, ok := device.Plan(st.Inv, st.Used, &req, all, 0, device.Binpack)
	if !ok {
		return nil
	}
	use, err := podgpu.PeakUse(pod, AssignmentOf(st.Inv, &req, p))
	if err != nil {
		return nil
	}
	return use
}

// count counts in a pod of the node, which takes h of it.
func (st *NodeState) count(p *podRecord, h Hold) {
	st.Add(h, 1)
	st.holders = append(st.holders, p.uid)
	st.requested[0] += p.requested[0]
	st.requested[1] += p.requested[1]
}

// Add counts a pod's hold into the state (sign 1) or out of it (sign -1).
func (st *NodeState) Add(h Hold, sign int) {
	if h.Unknown {
		st.Unknown += sign
	}
	if st.Inv == nil {
		return
	}
	for uuid, units := range h.Use {
		if i, ok := st.Inv.IndexOf(uuid); ok {
			st.Used[i] += sign * units
		}
	}
}
