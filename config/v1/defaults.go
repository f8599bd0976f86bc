package v1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

// Default values of the plugin args. They are exported so that documentation,
// examples and tests can refer to them instead of repeating literals.
const (
	// DefaultScoringStrategy is the strategy used when none is configured.
	// Binpack keeps whole GPUs free for whole-GPU requests, which is what a
	// mixed cluster of shared and whole-GPU pods needs most.
	DefaultScoringStrategy = ScoringStrategyBinpack
	// DefaultInventoryStaleness is the default heartbeat age bound. It allows
	// several missed heartbeats of the device plugin before a node is
	// distrusted, without leaving a dead node schedulable for long.
	DefaultInventoryStaleness = 2 * time.Minute
	// DefaultScoringWeight is the default of each TesseraGPU score weight:
	// all terms count equally unless configured otherwise.
	DefaultScoringWeight int32 = 1
	// DefaultGPUNodeTaintKey is the default key of the GPU node taint, the
	// key used by the NVIDIA ecosystem, so clusters that already taint GPU
	// nodes need no change.
	DefaultGPUNodeTaintKey = "nvidia.com/gpu"
	// DefaultGuardGPUNodes is off by default: without the node taint, GPU
	// nodes behave like other nodes unless the operator opts in.
	DefaultGuardGPUNodes = false
	// DefaultFragmentationWindowPods is the default memory of the online
	// workload estimate: long enough that a burst of one shape does not
	// erase the mix, short enough to follow a day's drift in a busy cluster.
	DefaultFragmentationWindowPods int32 = 5000
	// DefaultFragmentationCoverage keeps the shapes covering 95% of the
	// workload, the threshold fragmentation gradient descent was published
	// with.
	DefaultFragmentationCoverage int32 = 95
	// DefaultFragmentationSeedPods makes a seed count as 100 pods.
	DefaultFragmentationSeedPods int32 = 100
	// DefaultFragmentationCPUStarvation counts a GPU stranded for want of
	// CPU like any other fragment. On the openb default trace it takes the
	// GPUs left unallocated from 4.8% to 4.2%; 50 and 200 do as well
	// (bench/results/trace/README.md).
	DefaultFragmentationCPUStarvation int32 = 100
)

// DefaultGPUResourceNames returns the default GPU resources: whole GPUs as
// advertised by the NVIDIA device plugin and Tessera's shared GPU percent.
// It returns a fresh slice each time so that defaulted objects never share
// (and never mutate) one backing array.
func DefaultGPUResourceNames() []string {
	return []string{"nvidia.com/gpu", "tessera.io/gpu-percent"}
}

// SetDefaults_TesseraGPUArgs (named after the Kubernetes defaulter
// convention) fills in the unset fields of TesseraGPUArgs.
// Explicit zero weights are kept: they switch a score term off.
func SetDefaults_TesseraGPUArgs(obj *TesseraGPUArgs) {
	if obj.ScoringStrategy == nil {
		obj.ScoringStrategy = &ScoringStrategy{}
	}
	if obj.ScoringStrategy.Type == "" {
		obj.ScoringStrategy.Type = DefaultScoringStrategy
	}
	if obj.ScoringStrategy.Type == ScoringStrategyFragmentation {
		if obj.ScoringStrategy.Fragmentation == nil {
			obj.ScoringStrategy.Fragmentation = &FragmentationArgs{}
		}
		f := obj.ScoringStrategy.Fragmentation
		if f.WindowPods == nil {
			f.WindowPods = ptr.To(DefaultFragmentationWindowPods)
		}
		if f.Coverage == nil {
			f.Coverage = ptr.To(DefaultFragmentationCoverage)
		}
		if f.SeedPods == nil {
			f.SeedPods = ptr.To(DefaultFragmentationSeedPods)
		}
		if f.CPUStarvation == nil {
			f.CPUStarvation = ptr.To(DefaultFragmentationCPUStarvation)
		}
		for i := range f.Seed {
			if f.Seed[i].GPUs > 0 && f.Seed[i].GPUPercent == nil {
				f.Seed[i].GPUPercent = ptr.To[int32](100)
			}
		}
	}
	if obj.InventoryStaleness == nil {
		obj.InventoryStaleness = &metav1.Duration{Duration: DefaultInventoryStaleness}
	}
	if obj.Weights == nil {
		obj.Weights = &ScoringWeights{}
	}
	w := obj.Weights
	for _, p := range []**int32{&w.Node, &w.GPU, &w.Topology, &w.DeviceTaint} {
		if *p == nil {
			*p = ptr.To(DefaultScoringWeight)
		}
	}
}

// SetDefaults_TesseraTaintTolerationArgs fills in the unset fields of
// TesseraTaintTolerationArgs. An explicitly empty taint key is kept, so that
// validation reports it instead of it being silently replaced.
func SetDefaults_TesseraTaintTolerationArgs(obj *TesseraTaintTolerationArgs) {
	if obj.GPUNodeTaintKey == nil {
		obj.GPUNodeTaintKey = ptr.To(DefaultGPUNodeTaintKey)
	}
	if len(obj.GPUResourceNames) == 0 {
		obj.GPUResourceNames = DefaultGPUResourceNames()
	}
	if obj.GuardGPUNodes == nil {
		obj.GuardGPUNodes = ptr.To(DefaultGuardGPUNodes)
	}
}

// RegisterDefaults adds the defaulting functions of this package's types to
// a scheme, so that scheme.Default (which the scheduler's config loader calls
// on every pluginConfig args object) applies them.
func RegisterDefaults(scheme *runtime.Scheme) error {
	scheme.AddTypeDefaultingFunc(&TesseraGPUArgs{}, func(obj interface{}) {
		SetDefaults_TesseraGPUArgs(obj.(*TesseraGPUArgs))
	})
	scheme.AddTypeDefaultingFunc(&TesseraTaintTolerationArgs{}, func(obj interface{}) {
		SetDefaults_TesseraTaintTolerationArgs(obj.(*TesseraTaintTolerationArgs))
	})
	return nil
}
