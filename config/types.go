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
	// TesseraDynamicResourcesName is the name of the plugin that runs the
	// in-tree DynamicResources with Tessera's choice of GPUs.
	TesseraDynamicResourcesName = "TesseraDynamicResources"
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
	// prefer the node and GPUs where the pod least increases the GPU
	// capacity that the expected workload could not use.
	// The workload is estimated online from the pods the scheduler sees.
	ScoringStrategyFragmentation ScoringStrategyType = "fragmentation"
)

// supportedScoringStrategies lists the strategies this build implements.
// Adding a strategy here is what makes validation accept it.
var supportedScoringStrategies = [...]ScoringStrategyType{
	ScoringStrategyBinpack,
	ScoringStrategySpread,
	ScoringStrategyFragmentation,
}

// SupportedScoringStrategies returns the scoring strategies this build
// implements, in a fresh slice so that callers cannot change the list that
// validation relies on.
func SupportedScoringStrategies() []ScoringStrategyType {
	return slices.Clone(supportedScoringStrategies[:])
}

// SupportedScoringStrategyNames returns the names of the scoring strategies
// this build implements, in the same order as SupportedScoringStrategies, for
// help texts and error messages.
func SupportedScoringStrategyNames() []string {
	names := make([]string, len(supportedScoringStrategies))
	for i, t := range supportedScoringStrategies {
		names[i] = string(t)
	}
	return names
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
	// InventoryStaleness is how long the scheduler waits to see a node's
	// GPUNode heartbeat change, on its own clock, before it stops trusting
	// the inventory. Such a node gets no new GPU pods, because
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
	// Fragmentation tunes the fragmentation strategy; it is nil for the
	// other strategies.
	Fragmentation *FragmentationArgs
}

// FragmentationArgs tune the fragmentation strategy's estimate of the
// workload: the mix of pod shapes whose needs decide which leftover GPU
// capacity counts as wasted.
type FragmentationArgs struct {
	// WindowPods is the memory of the online estimate, in pods: each pod the
	// scheduler sees counts once, and its weight fades by a factor e for
	// every WindowPods pods seen after it. 0 turns online estimation off, so
	// the seed alone is the workload.
	WindowPods int32
	// Coverage is the percentage of the estimated workload's weight that
	// the most common shapes must cover; rarer shapes are left out of the
	// fragmentation score, which keeps scoring cheap and ignores one-off
	// pods. Model pressure still counts every shape: restricted pods are
	// spread over many rare shapes.
	Coverage int32
	// SeedPods is how many observed pods the seed is worth: the seed rules
	// until about that many pods have been seen, then fades like them.
	SeedPods int32
	// Seed is the workload assumed before any pod is seen.
	Seed []WorkloadClass
	// CPUStarvation is the weight, in percent of a fragment's, of the free
	// GPU capacity that a node's free CPU could not feed at the workload's
	// CPU per GPU. 0 leaves it out: fragmentation is then the published
	// measure, which asks only whether one pod of each shape fits.
	CPUStarvation int32
}

// WorkloadClass is one pod shape of a seed workload.
type WorkloadClass struct {
	// CPUMilli is the pod's CPU request in millicores.
	CPUMilli int64
	// GPUs is the number of GPUs the pod takes; 0 for a pod without GPUs,
	// which still competes for the CPU of GPU nodes.
	GPUs int32
	// GPUPercent is the share of each GPU the pod takes, 1-100. Shares
	// below 100 are for single-GPU pods only.
	GPUPercent int32
	// Models restricts the GPU models the pod accepts; empty means any.
	Models []string
	// Weight is the shape's relative frequency.
	Weight int32
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
