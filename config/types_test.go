package config

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestScoringStrategyTypeIsSupported(t *testing.T) {
	tests := []struct {
		in   ScoringStrategyType
		want bool
	}{
		{ScoringStrategyBinpack, true},
		{ScoringStrategySpread, true},
		{ScoringStrategyFragmentation, true},
		{"", false},
		{"Binpack", false}, // names are case-sensitive, like other Kubernetes enums
	}
	for _, tc := range tests {
		if got := tc.in.IsSupported(); got != tc.want {
			t.Errorf("%q.IsSupported() = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestSupportedScoringStrategiesReturnsCopy(t *testing.T) {
	got := SupportedScoringStrategies()
	if len(got) != 3 || got[0] != ScoringStrategyBinpack || got[1] != ScoringStrategySpread || got[2] != ScoringStrategyFragmentation {
		t.Fatalf("SupportedScoringStrategies() = %v", got)
	}
	got[0] = "mutated"
	if !ScoringStrategyBinpack.IsSupported() {
		t.Fatal("changing the returned slice changed the supported list")
	}
}

func TestDeepCopyIsIndependent(t *testing.T) {
	gpu := &TesseraGPUArgs{
		ScoringStrategy:    ScoringStrategy{Type: ScoringStrategySpread},
		InventoryStaleness: metav1.Duration{Duration: time.Minute},
		Weights:            ScoringWeights{Node: 1, GPU: 2, Topology: 3, DeviceTaint: 4},
	}
	gpuCopy := gpu.DeepCopyObject().(*TesseraGPUArgs)
	gpuCopy.Weights.Node = 99
	if gpu.Weights.Node != 1 {
		t.Error("TesseraGPUArgs copy shares weights with the original")
	}

	frag := &TesseraGPUArgs{ScoringStrategy: ScoringStrategy{Type: ScoringStrategyFragmentation, Fragmentation: &FragmentationArgs{
		WindowPods: 10, Seed: []WorkloadClass{{GPUs: 1, GPUPercent: 50, Models: []string{"T4"}, Weight: 1}},
	}}}
	fragCopy := frag.DeepCopy()
	fragCopy.ScoringStrategy.Fragmentation.WindowPods = 20
	fragCopy.ScoringStrategy.Fragmentation.Seed[0].Models[0] = "changed"
	if f := frag.ScoringStrategy.Fragmentation; f.WindowPods != 10 || f.Seed[0].Models[0] != "T4" {
		t.Error("TesseraGPUArgs copy shares fragmentation settings with the original")
	}

	taint := &TesseraTaintTolerationArgs{GPUNodeTaintKey: "k", GPUResourceNames: []string{"a.io/b"}}
	taintCopy := taint.DeepCopyObject().(*TesseraTaintTolerationArgs)
	taintCopy.GPUResourceNames[0] = "changed"
	if taint.GPUResourceNames[0] != "a.io/b" {
		t.Error("TesseraTaintTolerationArgs copy shares gpuResourceNames with the original")
	}

	var nilArgs *TesseraGPUArgs
	if nilArgs.DeepCopy() != nil || nilArgs.DeepCopyObject() != nil {
		t.Error("deep copy of a nil *TesseraGPUArgs is not nil")
	}
}

func TestSupportedScoringStrategyNamesMatchTypes(t *testing.T) {
	types := SupportedScoringStrategies()
	names := SupportedScoringStrategyNames()
	if len(names) != len(types) {
		t.Fatalf("SupportedScoringStrategyNames() = %v, want one name per strategy in %v", names, types)
	}
	for i := range types {
		if names[i] != string(types[i]) {
			t.Errorf("name %d = %q, want %q", i, names[i], types[i])
		}
	}
	names[0] = "mutated"
	if SupportedScoringStrategyNames()[0] != string(ScoringStrategyBinpack) {
		t.Fatal("changing the returned names changed the next call's result")
	}
}
