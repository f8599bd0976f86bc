package v1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ScoringStrategyType names the policy TesseraGPU uses to rank nodes and
// GPUs. See the constants of the same names in package config for meanings
// and for which values are implemented.
type ScoringStrategyType string

const (
	// ScoringStrategyBinpack prefers the fullest nodes and GPUs that fit.
	ScoringStrategyBinpack ScoringStrategyType = "binpack"
	// ScoringStrategySpread prefers the emptiest nodes and GPUs.
	ScoringStrategySpread ScoringStrategyType = "spread"
	// ScoringStrategyFragmentation prefers the node and GPUs where the pod
	// least increases the GPU capacity the expected workload cannot use.
	ScoringStrategyFragmentation ScoringStrategyType = "fragmentation"
)

// TesseraGPUArgs holds the arguments of the TesseraGPU plugin.
type TesseraGPUArgs struct {
	metav1.TypeMeta `json:",inline"`

	// ScoringStrategy selects how nodes and GPUs are ranked.
	// Defaults to {type: binpack}.
	ScoringStrategy *ScoringStrategy `json:"scoringStrategy,omitempty"`
	// InventoryStaleness is how long the scheduler waits to see a node's
	// GPUNode heartbeat change before it stops trusting the inventory; such
	// nodes get no new GPU pods. Timed on the scheduler's clock, so a node's
	// clock skew does not matter. At least 1s.
	// Defaults to 2m.
	InventoryStaleness *metav1.Duration `json:"inventoryStaleness,omitempty"`
	// Weights combine TesseraGPU's partial scores. Each unset weight
	// defaults to 1.
	Weights *ScoringWeights `json:"weights,omitempty"`
}

// ScoringStrategy configures the ranking policy of TesseraGPU.
type ScoringStrategy struct {
	// Type is the strategy: "binpack", "spread" or "fragmentation".
	// Defaults to "binpack".
	Type ScoringStrategyType `json:"type,omitempty"`
	// Fragmentation tunes the fragmentation strategy. Only valid with
	// type "fragmentation"; defaulted for it.
	Fragmentation *FragmentationArgs `json:"fragmentation,omitempty"`
}

// FragmentationArgs tune the fragmentation strategy's estimate of the
// workload mix.
type FragmentationArgs struct {
	// WindowPods is the memory of the online workload estimate in pods: a
	// pod's weight fades by a factor e for every WindowPods pods seen after
	// it. 0 turns online estimation off and requires a seed. At most
	// 1000000. Defaults to 5000.
	WindowPods *int32 `json:"windowPods,omitempty"`
	// Coverage is the percentage (1-100) of the workload's weight that the
	// most common pod shapes must cover; rarer shapes are left out of the
	// fragmentation score, though model pressure still counts them.
	// Defaults to 95.
	Coverage *int32 `json:"coverage,omitempty"`
	// SeedPods is how many observed pods the seed is worth. Defaults to 100.
	SeedPods *int32 `json:"seedPods,omitempty"`
	// Seed is the workload assumed before pods are seen. Optional.
	Seed []WorkloadClass `json:"seed,omitempty"`
	// CPUStarvation weighs, in percent of a fragment (0-1000), the free GPU
	// capacity of a node that its free CPU could not feed at the
	// workload's CPU per GPU; such GPUs stay idle whatever arrives. 0
	// scores fragmentation as published. Defaults to 100.
	CPUStarvation *int32 `json:"cpuStarvation,omitempty"`
}

// WorkloadClass is one pod shape of a seed workload.
type WorkloadClass struct {
	// CPU is the pod's CPU request, as a quantity ("11300m", "4").
	CPU resource.Quantity `json:"cpu"`
	// GPUs is the number of GPUs; 0 for a pod without GPUs.
	GPUs int32 `json:"gpus,omitempty"`
	// GPUPercent is the share of each GPU, 1-100; below 100 only with one
	// GPU. Defaults to 100 when gpus is set.
	GPUPercent *int32 `json:"gpuPercent,omitempty"`
	// Models restricts the GPU models; empty means any.
	Models []string `json:"models,omitempty"`
	// Weight is the shape's relative frequency, at least 1.
	Weight int32 `json:"weight"`
}

// ScoringWeights weigh the partial scores of TesseraGPU. Each is in
// [0, 100], an explicit 0 turns that term off, and at least one must be
// positive.
type ScoringWeights struct {
	// Node weighs the strategy's view of the node as a whole. Defaults to 1.
	Node *int32 `json:"node,omitempty"`
	// GPU weighs the strategy's view of the GPUs chosen inside the node.
	// Defaults to 1.
	GPU *int32 `json:"gpu,omitempty"`
	// Topology weighs NVLink and NUMA locality of multi-GPU requests.
	// Defaults to 1.
	Topology *int32 `json:"topology,omitempty"`
	// DeviceTaint weighs the penalty for untolerated PreferNoSchedule device
	// taints. Defaults to 1.
	DeviceTaint *int32 `json:"deviceTaint,omitempty"`
}

// TesseraTaintTolerationArgs holds the arguments of the
// TesseraTaintToleration plugin.
type TesseraTaintTolerationArgs struct {
	metav1.TypeMeta `json:",inline"`

	// GPUNodeTaintKey is the key of the node taint that marks GPU nodes; pods
	// requesting a GPU resource tolerate it implicitly. Must be a qualified
	// name. Defaults to "nvidia.com/gpu".
	GPUNodeTaintKey *string `json:"gpuNodeTaintKey,omitempty"`
	// GPUResourceNames are the extended resources that make a pod a GPU pod
	// and a node a GPU node. An empty or absent list means the default,
	// ["nvidia.com/gpu", "tessera.io/gpu-percent"], because a list that
	// matches no resource would silently treat every pod as CPU-only.
	GPUResourceNames []string `json:"gpuResourceNames,omitempty"`
	// GuardGPUNodes keeps pods that request no GPU off GPU nodes even when
	// the GPU node taint is missing. Defaults to false.
	GuardGPUNodes *bool `json:"guardGPUNodes,omitempty"`
}
