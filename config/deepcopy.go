package config

import (
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
)

// Deep-copy functions are hand-written (rather than generated) to keep this
// package out of the repository's single code-generation script. Keep them in
// step with the types when fields are added.

// DeepCopyInto copies the receiver into out.
func (in *TesseraGPUArgs) DeepCopyInto(out *TesseraGPUArgs) {
	*out = *in
	in.ScoringStrategy.DeepCopyInto(&out.ScoringStrategy)
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
	if in.Fragmentation != nil {
		f := *in.Fragmentation
		f.Seed = make([]WorkloadClass, len(in.Fragmentation.Seed))
		for i, c := range in.Fragmentation.Seed {
			c.Models = slices.Clone(c.Models)
			f.Seed[i] = c
		}
		if in.Fragmentation.Seed == nil {
			f.Seed = nil
		}
		out.Fragmentation = &f
	}
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
	*out = *in
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
	if in.GPUResourceNames != nil {
		out.GPUResourceNames = make([]string, len(in.GPUResourceNames))
		copy(out.GPUResourceNames, in.GPUResourceNames)
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
