package v1

import (
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
)

// Deep-copy functions are hand-written (rather than generated) to keep this
// package out of the repository's single code-generation script. Keep them in
// step with the types when fields are added: every pointer and slice must be
// copied, or a defaulted copy would share memory with its source.

// DeepCopyInto copies the receiver into out.
func (in *TesseraGPUArgs) DeepCopyInto(out *TesseraGPUArgs) {
	*out = *in
	out.ScoringStrategy = in.ScoringStrategy.DeepCopy()
	if in.InventoryStaleness != nil {
		d := *in.InventoryStaleness
		out.InventoryStaleness = &d
	}
	out.Weights = in.Weights.DeepCopy()
}

// DeepCopy returns a deep copy of the receiver, or nil for a nil receiver.
func (in *TesseraGPUArgs) DeepCopy() *TesseraGPUArgs {
	if in == nil {
		return nil
	}
	out := new(TesseraGPUArgs)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *TesseraGPUArgs) DeepCopyObject() runtime.Object {
	if c := in.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// DeepCopyInto copies the receiver into out.
func (in *ScoringStrategy) DeepCopyInto(out *ScoringStrategy) {
	*out = *in
	if f := in.Fragmentation; f != nil {
		c := FragmentationArgs{
			WindowPods: clonePtr(f.WindowPods),
			Coverage:   clonePtr(f.Coverage),
			SeedPods:   clonePtr(f.SeedPods),

			CPUStarvation: clonePtr(f.CPUStarvation),
		}
		if f.Seed != nil {
			c.Seed = make([]WorkloadClass, len(f.Seed))
			for i, w := range f.Seed {
				c.Seed[i] = WorkloadClass{CPU: w.CPU.DeepCopy(), GPUs: w.GPUs, GPUPercent: clonePtr(w.GPUPercent),
					Models: slices.Clone(w.Models), Weight: w.Weight}
			}
		}
		out.Fragmentation = &c
	}
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// DeepCopy returns a deep copy of the receiver, or nil for a nil receiver.
func (in *ScoringStrategy) DeepCopy() *ScoringStrategy {
	if in == nil {
		return nil
	}
	out := new(ScoringStrategy)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies the receiver into out.
func (in *ScoringWeights) DeepCopyInto(out *ScoringWeights) {
	*out = ScoringWeights{
		Node:        copyInt32(in.Node),
		GPU:         copyInt32(in.GPU),
		Topology:    copyInt32(in.Topology),
		DeviceTaint: copyInt32(in.DeviceTaint),
	}
}

// DeepCopy returns a deep copy of the receiver, or nil for a nil receiver.
func (in *ScoringWeights) DeepCopy() *ScoringWeights {
	if in == nil {
		return nil
	}
	out := new(ScoringWeights)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies the receiver into out.
func (in *TesseraTaintTolerationArgs) DeepCopyInto(out *TesseraTaintTolerationArgs) {
	*out = *in
	if in.GPUNodeTaintKey != nil {
		k := *in.GPUNodeTaintKey
		out.GPUNodeTaintKey = &k
	}
	out.GPUResourceNames = slices.Clone(in.GPUResourceNames)
	if in.GuardGPUNodes != nil {
		g := *in.GuardGPUNodes
		out.GuardGPUNodes = &g
	}
}

// DeepCopy returns a deep copy of the receiver, or nil for a nil receiver.
func (in *TesseraTaintTolerationArgs) DeepCopy() *TesseraTaintTolerationArgs {
	if in == nil {
		return nil
	}
	out := new(TesseraTaintTolerationArgs)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *TesseraTaintTolerationArgs) DeepCopyObject() runtime.Object {
	if c := in.DeepCopy(); c != nil {
		return c
	}
	return nil
}

func copyInt32(p *int32) *int32 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
