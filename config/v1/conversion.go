package v1

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/config"
)

// Conversions are hand-written (rather than generated) to keep this package
// out of the repository's single code-generation script. The v1 -> internal
// direction runs on every scheduler start; the internal -> v1 direction runs
// when the scheduler logs or writes its effective configuration.
//
// Unset (nil) v1 fields convert to the internal zero value. The scheduler
// always defaults before converting, so plugins never see those zeros from a
// configuration file; callers that convert by hand must default first.

// Convert_v1_TesseraGPUArgs_To_config_TesseraGPUArgs converts versioned
// TesseraGPUArgs to the internal form.
func Convert_v1_TesseraGPUArgs_To_config_TesseraGPUArgs(in *TesseraGPUArgs, out *config.TesseraGPUArgs, _ conversion.Scope) error {
	*out = config.TesseraGPUArgs{}
	if in.ScoringStrategy != nil {
		out.ScoringStrategy.Type = config.ScoringStrategyType(in.ScoringStrategy.Type)
		if f := in.ScoringStrategy.Fragmentation; f != nil {
			out.ScoringStrategy.Fragmentation = &config.FragmentationArgs{
				WindowPods: ptr.Deref(f.WindowPods, 0),
				Coverage:   ptr.Deref(f.Coverage, 0),
				SeedPods:   ptr.Deref(f.SeedPods, 0),

				CPUStarvation: ptr.Deref(f.CPUStarvation, 0),
			}
			for _, c := range f.Seed {
				out.ScoringStrategy.Fragmentation.Seed = append(out.ScoringStrategy.Fragmentation.Seed, config.WorkloadClass{
					CPUMilli: c.CPU.MilliValue(), GPUs: c.GPUs, GPUPercent: ptr.Deref(c.GPUPercent, 0),
					Models: slices.Clone(c.Models), Weight: c.Weight,
				})
			}
		}
	}
	if in.InventoryStaleness != nil {
		out.InventoryStaleness = *in.InventoryStaleness
	}
	if w := in.Weights; w != nil {
		out.Weights = config.ScoringWeights{
			Node:        ptr.Deref(w.Node, 0),
			GPU:         ptr.Deref(w.GPU, 0),
			Topology:    ptr.Deref(w.Topology, 0),
			DeviceTaint: ptr.Deref(w.DeviceTaint, 0),
		}
	}
	return nil
}

// Convert_config_TesseraGPUArgs_To_v1_TesseraGPUArgs converts internal
// TesseraGPUArgs to the versioned form. Every field is set, so the result
// shows the effective values when the configuration is printed.
func Convert_config_TesseraGPUArgs_To_v1_TesseraGPUArgs(in *config.TesseraGPUArgs, out *TesseraGPUArgs, _ conversion.Scope) error {
	*out = TesseraGPUArgs{
		ScoringStrategy:    &ScoringStrategy{Type: ScoringStrategyType(in.ScoringStrategy.Type)},
		InventoryStaleness: &metav1.Duration{Duration: in.InventoryStaleness.Duration},
		Weights: &ScoringWeights{
			Node:        ptr.To(in.Weights.Node),
			GPU:         ptr.To(in.Weights.GPU),
			Topology:    ptr.To(in.Weights.Topology),
			DeviceTaint: ptr.To(in.Weights.DeviceTaint),
		},
	}
	if f := in.ScoringStrategy.Fragmentation; f != nil {
		v := &FragmentationArgs{WindowPods: ptr.To(f.WindowPods), Coverage: ptr.To(f.Coverage), SeedPods: ptr.To(f.SeedPods),
			CPUStarvation: ptr.To(f.CPUStarvation)}
		for _, c := range f.Seed {
			v.Seed = append(v.Seed, WorkloadClass{
				CPU: *resource.NewMilliQuantity(c.CPUMilli, resource.DecimalSI), GPUs: c.GPUs,
				GPUPercent: ptr.To(c.GPUPercent), Models: slices.Clone(c.Models), Weight: c.Weight,
			})
		}
		out.ScoringStrategy.Fragmentation = v
	}
	return nil
}

// Convert_v1_TesseraTaintTolerationArgs_To_config_TesseraTaintTolerationArgs
// converts versioned TesseraTaintTolerationArgs to the internal form.
func Convert_v1_TesseraTaintTolerationArgs_To_config_TesseraTaintTolerationArgs(in *TesseraTaintTolerationArgs, out *config.TesseraTaintTolerationArgs, _ conversion.Scope) error {
	*out = config.TesseraTaintTolerationArgs{
		GPUNodeTaintKey:  ptr.Deref(in.GPUNodeTaintKey, ""),
		GPUResourceNames: slices.Clone(in.GPUResourceNames),
		GuardGPUNodes:    ptr.Deref(in.GuardGPUNodes, false),
	}
	return nil
}

// Convert_config_TesseraTaintTolerationArgs_To_v1_TesseraTaintTolerationArgs
// converts internal TesseraTaintTolerationArgs to the versioned form.
func Convert_config_TesseraTaintTolerationArgs_To_v1_TesseraTaintTolerationArgs(in *config.TesseraTaintTolerationArgs, out *TesseraTaintTolerationArgs, _ conversion.Scope) error {
	*out = TesseraTaintTolerationArgs{
		GPUNodeTaintKey:  ptr.To(in.GPUNodeTaintKey),
		GPUResourceNames: slices.Clone(in.GPUResourceNames),
		GuardGPUNodes:    ptr.To(in.GuardGPUNodes),
	}
	return nil
}

// RegisterConversions adds the conversion functions of this package's types
// to a scheme; runtime.Scheme.Convert and ConvertToVersion look them up by
// the pair of Go types.
func RegisterConversions(s *runtime.Scheme) error {
	type pair struct {
		a, b interface{}
		fn   conversion.ConversionFunc
	}
	for _, p := range []pair{
		{(*TesseraGPUArgs)(nil), (*config.TesseraGPUArgs)(nil), func(a, b interface{}, scope conversion.Scope) error {
			return Convert_v1_TesseraGPUArgs_To_config_TesseraGPUArgs(a.(*TesseraGPUArgs), b.(*config.TesseraGPUArgs), scope)
		}},
		{(*config.TesseraGPUArgs)(nil), (*TesseraGPUArgs)(nil), func(a, b interface{}, scope conversion.Scope) error {
			return Convert_config_TesseraGPUArgs_To_v1_TesseraGPUArgs(a.(*config.TesseraGPUArgs), b.(*TesseraGPUArgs), scope)
		}},
		{(*TesseraTaintTolerationArgs)(nil), (*config.TesseraTaintTolerationArgs)(nil), func(a, b interface{}, scope conversion.Scope) error {
			return Convert_v1_TesseraTaintTolerationArgs_To_config_TesseraTaintTolerationArgs(a.(*TesseraTaintTolerationArgs), b.(*config.TesseraTaintTolerationArgs), scope)
		}},
		{(*config.TesseraTaintTolerationArgs)(nil), (*TesseraTaintTolerationArgs)(nil), func(a, b interface{}, scope conversion.Scope) error {
			return Convert_config_TesseraTaintTolerationArgs_To_v1_TesseraTaintTolerationArgs(a.(*config.TesseraTaintTolerationArgs), b.(*TesseraTaintTolerationArgs), scope)
		}},
	} {
		if err := s.AddConversionFunc(p.a, p.b, p.fn); err != nil {
			return fmt.Errorf("registering conversion %T -> %T: %w", p.a, p.b, err)
		}
	}
	return nil
}
