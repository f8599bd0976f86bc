// Package gpucache is the TesseraGPU plugin's view of the cluster's GPUs:
// each node's inventory, from its GPUNode, and the GPUs each pod holds,
// from its assignment annotation or, between Reserve and the informer
// seeing the pod bound, from what Reserve assumed.
//
// Informer handlers feed it (SetGPUNode, DeleteGPUNode, UpsertPod,
// RemovePod). The scheduling extension points see it through Interface:
// they read each node's state without locks (a NodeState is never changed
// once published), assume and forget the GPUs of the pods they place, and
// read a generation that counts the changes that may let a rejected pod
// fit. The rest (the NoExecute evictor's view, the metrics' Summary, the
// hooks for events) is for the plugin's wiring.
package gpucache

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/assignment"
)

// Interface is what the plugin's extension points ask of the cache.
type Interface interface {
	// IndexNodes prepares SlotOf for the NodeInfo objects of the
	// scheduler's node list, as PreFilter is handed it.
	IndexNodes(list []fwk.NodeInfo)
	// SlotOf returns the slot of the node ni describes, and Slot that of
	// the named node; nil when nothing is known of the node.
	SlotOf(ni fwk.NodeInfo) *Slot
	Slot(node string) *Slot
	// Agreed returns the node's state counting only the pods the
	// scheduler's snapshot of it (ni) has, or nil when that is st.
	Agreed(st *NodeState, ni fwk.NodeInfo, also types.UID) *NodeState
	// HoldOf returns what the pod holds on the node, and false when the
	// cache has no record of it there.
	HoldOf(uid types.UID, node string) (Hold, bool)
	// StaleNow reports whether the node's inventory counts as stale.
	StaleNow(node string) bool
	// NodesWithRoom returns the nodes whose state HasRoom for the request,
	// or false when more than limit could have it.
	NodesWithRoom(whole, share, limit int) (sets.Set[string], bool)
	// LowestHolderPriority returns the lowest priority of a pod holding
	// GPUs, and false when none does.
	LowestHolderPriority() (int32, bool)
	// LargestNode returns the most devices any node has.
	LargestNode() int
	// ModelCapacity returns the device count by model and its generation,
	// and ModelsGeneration that generation alone.
	ModelCapacity() (map[string]int, uint64)
	ModelsGeneration() uint64

	// Assume records the GPUs Reserve chose for the pod on the node, after
	// checking that they are still free; Forget drops them again unless
	// the informer has confirmed the pod since.
	Assume(pod *v1.Pod, node string, a assignment.Assignment) error
	Forget(uid types.UID)

	// Generation counts the changes that may let a rejected pod fit, and
	// Touch counts one without a change.
	Generation() uint64
	Touch()
}

var _ Interface = &Cache{}
