package config

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Plugin names as they appear in a KubeSchedulerConfiguration. The scheduler
// derives the args kind from the plugin name ("<name>Args"), so a plugin name
// and the kind of its args type must change together or decoding breaks.
const (
	// TesseraGPUName is the name of the plugin that places GPU pods.
	TesseraGPUName = "TesseraGPU"
	// TesseraTaintTolerationName is the name of the plugin that replaces the
	// in-tree TaintToleration plugin with GPU-aware taint handling.
	TesseraTaintTolerationName = "TesseraTaintToleration"
)

// ScoringStrategyType names the policy TesseraGPU uses to rank nodes and the
// GPUs inside a node.
type ScoringStrategyType string

const (
	// ScoringStrategyBinpack prefers the fullest nodes and GPUs that still fit
	// the pod, keeping whole GPUs and whole nodes free for large requests.
	ScoringStrategyBinpack ScoringStrategyType = "binpack"
	// ScoringStrategySpread prefers the emptiest nodes and GPUs, trading
	// packing density for less contention between co-located pods.
	ScoringStrategySpread ScoringStrategyType = "spread"
	// ScoringStrategyFragmentation is fragmentation gradient descent (FGD):
	// prefer the placement that least increases expected GPU fragmentation.
	// The name is reserved so that configuration written for it gets a clear
	// "not implemented yet" error instead of a generic one; it becomes valid
	// once it is added to supportedScoringStrategies.
	ScoringStrategyFragmentation ScoringStrategyType = "fragmentation"
)

// supportedScoringStrategies lists the strategies this build implements.
// Adding a strategy here is what makes validation accept it.
var supportedScoringStrategies = [...]ScoringStrategyType{
	ScoringStrategyBinpack,
	ScoringStrategySpread,
}

// SupportedScoringStrategies returns the scoring strategies this build
// implements, in a fresh slice so that callers cannot change the list that
// validation relies on.
func SupportedScoringStrategies() []ScoringStrategyType {
	return slices.Clone(supportedScoringStrategies[:])
}

// IsSupported reports whether t is a strategy this build implements.
func (t ScoringStrategyType) IsSupported() bool {
	return slices.Contains(supportedScoringStrategies[:], t)
}

// TesseraGPUArgs holds the arguments of the TesseraGPU plugin.
type TesseraGPUArgs struct {
	metav1.TypeMeta

	// ScoringStrategy selects how nodes and GPUs are ranked.
	ScoringStrategy ScoringStrategy
	// InventoryStaleness is the age after which a node's GPUNode heartbeat is
	// considered too old to trust. Such a node gets no new GPU pods, because
	// its inventory (health, device taints, GPU count) may no longer be true.
	InventoryStaleness metav1.Duration
	// Weights combine the partial scores TesseraGPU computes for a node into
	// its final score.
	Weights ScoringWeights
}

// ScoringStrategy configures the ranking policy of TesseraGPU. It is a struct
// rather than a bare string so that strategy-specific parameters (such as a
// seed workload mix for fragmentation scoring) can be added without breaking
// existing configuration files.
type ScoringStrategy struct {
	// Type is the strategy to use.
	Type ScoringStrategyType
}

// ScoringWeights weigh the partial scores of TesseraGPU against each other.
// Each is in [0, 100]; 0 turns a term off, and at least one must be positive
// so that the plugin's score means something.
type ScoringWeights struct {
	// Node weighs the strategy's view of the node as a whole (how full its
	// GPUs are in total).
	Node int32
	// GPU weighs the strategy's view of the best GPUs for the pod inside the
	// node (how well the request fits the individual GPUs).
	GPU int32
	// Topology weighs locality for multi-GPU requests: GPUs on one NVLink
	// island first, then on one NUMA node.
	Topology int32
	// DeviceTaint weighs the penalty for using GPUs whose PreferNoSchedule
	// device taints the pod does not tolerate.
	DeviceTaint int32
}

// TesseraTaintTolerationArgs holds the arguments of the TesseraTaintToleration
// plugin.
type TesseraTaintTolerationArgs struct {
	metav1.TypeMeta

	// GPUNodeTaintKey is the key of the node taint that marks GPU nodes. Pods
	// that request a GPU resource are treated as tolerating it, so existing pod
	// specs need no explicit toleration.
	GPUNodeTaintKey string
	// GPUResourceNames are the extended resources that make a pod a GPU pod
	// (when it requests any of them) and a node a GPU node (when it advertises
	// any of them). Keeping the list in configuration keeps vendor names out
	// of the plugin code.
	GPUResourceNames []string
	// GuardGPUNodes keeps pods that request no GPU off GPU nodes even when a
	// node lacks the GPU node taint, so a forgotten taint cannot let CPU-only
	// pods take a GPU node's CPU and memory. Pods that explicitly tolerate the
	// GPU node taint may still go there.
	GuardGPUNodes bool
}
