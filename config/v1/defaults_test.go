package v1

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/config"
)

func defaultWeights() *ScoringWeights {
	return &ScoringWeights{Node: ptr.To[int32](1), GPU: ptr.To[int32](1), Topology: ptr.To[int32](1), DeviceTaint: ptr.To[int32](1)}
}

func TestSetDefaultsTesseraGPUArgs(t *testing.T) {
	tests := []struct {
		name string
		in   *TesseraGPUArgs
		want *TesseraGPUArgs
	}{
		{
			name: "empty gets every default",
			in:   &TesseraGPUArgs{},
			want: &TesseraGPUArgs{
				ScoringStrategy:    &ScoringStrategy{Type: ScoringStrategyBinpack},
				InventoryStaleness: &metav1.Duration{Duration: 2 * time.Minute},
				Weights:            defaultWeights(),
			},
		},
		{
			name: "strategy object without type gets binpack",
			in:   &TesseraGPUArgs{ScoringStrategy: &ScoringStrategy{}},
			want: &TesseraGPUArgs{
				ScoringStrategy:    &ScoringStrategy{Type: ScoringStrategyBinpack},
				InventoryStaleness: &metav1.Duration{Duration: 2 * time.Minute},
				Weights:            defaultWeights(),
			},
		},
		{
			name: "explicit values are kept",
			in: &TesseraGPUArgs{
				ScoringStrategy:    &ScoringStrategy{Type: ScoringStrategySpread},
				InventoryStaleness: &metav1.Duration{Duration: 30 * time.Second},
				Weights:            &ScoringWeights{Node: ptr.To[int32](7), GPU: ptr.To[int32](8), Topology: ptr.To[int32](9), DeviceTaint: ptr.To[int32](10)},
			},
			want: &TesseraGPUArgs{
				ScoringStrategy:    &ScoringStrategy{Type: ScoringStrategySpread},
				InventoryStaleness: &metav1.Duration{Duration: 30 * time.Second},
				Weights:            &ScoringWeights{Node: ptr.To[int32](7), GPU: ptr.To[int32](8), Topology: ptr.To[int32](9), DeviceTaint: ptr.To[int32](10)},
			},
		},
		{
			name: "explicit zero weight is kept, unset ones default per field",
			in:   &TesseraGPUArgs{Weights: &ScoringWeights{Topology: ptr.To[int32](0), GPU: ptr.To[int32](5)}},
			want: &TesseraGPUArgs{
				ScoringStrategy:    &ScoringStrategy{Type: ScoringStrategyBinpack},
				InventoryStaleness: &metav1.Duration{Duration: 2 * time.Minute},
				Weights:            &ScoringWeights{Node: ptr.To[int32](1), GPU: ptr.To[int32](5), Topology: ptr.To[int32](0), DeviceTaint: ptr.To[int32](1)},
			},
		},
		{
			name: "explicit zero staleness is kept for validation to reject",
			in:   &TesseraGPUArgs{InventoryStaleness: &metav1.Duration{}},
			want: &TesseraGPUArgs{
				ScoringStrategy:    &ScoringStrategy{Type: ScoringStrategyBinpack},
				InventoryStaleness: &metav1.Duration{},
				Weights:            defaultWeights(),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			SetDefaults_TesseraGPUArgs(tc.in)
			if diff := cmp.Diff(tc.want, tc.in); diff != "" {
				t.Errorf("defaulted args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetDefaultsTesseraTaintTolerationArgs(t *testing.T) {
	tests := []struct {
		name string
		in   *TesseraTaintTolerationArgs
		want *TesseraTaintTolerationArgs
	}{
		{
			name: "empty gets every default",
			in:   &TesseraTaintTolerationArgs{},
			want: &TesseraTaintTolerationArgs{
				GPUNodeTaintKey:  ptr.To("nvidia.com/gpu"),
				GPUResourceNames: []string{"nvidia.com/gpu", "tessera.io/gpu-percent"},
				GuardGPUNodes:    ptr.To(false),
			},
		},
		{
			name: "empty list means the default list",
			in:   &TesseraTaintTolerationArgs{GPUResourceNames: []string{}},
			want: &TesseraTaintTolerationArgs{
				GPUNodeTaintKey:  ptr.To("nvidia.com/gpu"),
				GPUResourceNames: []string{"nvidia.com/gpu", "tessera.io/gpu-percent"},
				GuardGPUNodes:    ptr.To(false),
			},
		},
		{
			name: "explicit values are kept, including an empty key for validation to reject",
			in: &TesseraTaintTolerationArgs{
				GPUNodeTaintKey:  ptr.To(""),
				GPUResourceNames: []string{"amd.com/gpu"},
				GuardGPUNodes:    ptr.To(true),
			},
			want: &TesseraTaintTolerationArgs{
				GPUNodeTaintKey:  ptr.To(""),
				GPUResourceNames: []string{"amd.com/gpu"},
				GuardGPUNodes:    ptr.To(true),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			SetDefaults_TesseraTaintTolerationArgs(tc.in)
			if diff := cmp.Diff(tc.want, tc.in); diff != "" {
				t.Errorf("defaulted args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefaultGPUResourceNamesIsFresh(t *testing.T) {
	a := &TesseraTaintTolerationArgs{}
	SetDefaults_TesseraTaintTolerationArgs(a)
	a.GPUResourceNames[0] = "changed"
	if got := DefaultGPUResourceNames()[0]; got != "nvidia.com/gpu" {
		t.Fatalf("defaulted objects share the default list: got %q", got)
	}
}

// newScheme returns a scheme with only this package's registrations, so the
// tests exercise RegisterDefaults and RegisterConversions through the scheme
// API the scheduler uses.
func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := config.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSchemeDefaultAndConvert(t *testing.T) {
	s := newScheme(t)

	gpu := &TesseraGPUArgs{ScoringStrategy: &ScoringStrategy{Type: ScoringStrategySpread}, Weights: &ScoringWeights{Node: ptr.To[int32](0)}}
	s.Default(gpu)
	gotGPU, err := s.ConvertToVersion(gpu, config.SchemeGroupVersion)
	if err != nil {
		t.Fatal(err)
	}
	wantGPU := &config.TesseraGPUArgs{
		ScoringStrategy:    config.ScoringStrategy{Type: config.ScoringStrategySpread},
		InventoryStaleness: metav1.Duration{Duration: 2 * time.Minute},
		Weights:            config.ScoringWeights{Node: 0, GPU: 1, Topology: 1, DeviceTaint: 1},
	}
	if diff := cmp.Diff(wantGPU, gotGPU); diff != "" {
		t.Errorf("internal TesseraGPUArgs (-want +got):\n%s", diff)
	}

	taint := &TesseraTaintTolerationArgs{GuardGPUNodes: ptr.To(true)}
	s.Default(taint)
	gotTaint, err := s.ConvertToVersion(taint, config.SchemeGroupVersion)
	if err != nil {
		t.Fatal(err)
	}
	wantTaint := &config.TesseraTaintTolerationArgs{
		GPUNodeTaintKey:  "nvidia.com/gpu",
		GPUResourceNames: []string{"nvidia.com/gpu", "tessera.io/gpu-percent"},
		GuardGPUNodes:    true,
	}
	if diff := cmp.Diff(wantTaint, gotTaint); diff != "" {
		t.Errorf("internal TesseraTaintTolerationArgs (-want +got):\n%s", diff)
	}
}

func TestConversionRoundTrip(t *testing.T) {
	s := newScheme(t)
	tests := []runtime.Object{
		&TesseraGPUArgs{
			ScoringStrategy:    &ScoringStrategy{Type: ScoringStrategySpread},
			InventoryStaleness: &metav1.Duration{Duration: 45 * time.Second},
			Weights:            &ScoringWeights{Node: ptr.To[int32](0), GPU: ptr.To[int32](2), Topology: ptr.To[int32](3), DeviceTaint: ptr.To[int32](100)},
		},
		&TesseraTaintTolerationArgs{
			GPUNodeTaintKey:  ptr.To("example.com/accelerator"),
			GPUResourceNames: []string{"example.com/gpu"},
			GuardGPUNodes:    ptr.To(true),
		},
	}
	for _, in := range tests {
		t.Run(typeName(in), func(t *testing.T) {
			internal, err := s.ConvertToVersion(in.DeepCopyObject(), config.SchemeGroupVersion)
			if err != nil {
				t.Fatal(err)
			}
			back, err := s.ConvertToVersion(internal, SchemeGroupVersion)
			if err != nil {
				t.Fatal(err)
			}
			back.GetObjectKind().SetGroupVersionKind(in.GetObjectKind().GroupVersionKind())
			if diff := cmp.Diff(in, back); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func typeName(o runtime.Object) string {
	switch o.(type) {
	case *TesseraGPUArgs:
		return "TesseraGPUArgs"
	case *TesseraTaintTolerationArgs:
		return "TesseraTaintTolerationArgs"
	}
	return "unknown"
}

func TestDeepCopyIsIndependent(t *testing.T) {
	gpu := &TesseraGPUArgs{}
	SetDefaults_TesseraGPUArgs(gpu)
	c := gpu.DeepCopy()
	*c.Weights.Node = 50
	c.ScoringStrategy.Type = ScoringStrategySpread
	c.InventoryStaleness.Duration = time.Hour
	if *gpu.Weights.Node != 1 || gpu.ScoringStrategy.Type != ScoringStrategyBinpack || gpu.InventoryStaleness.Duration != 2*time.Minute {
		t.Errorf("TesseraGPUArgs copy shares memory with the original: %+v", gpu)
	}

	taint := &TesseraTaintTolerationArgs{}
	SetDefaults_TesseraTaintTolerationArgs(taint)
	tc := taint.DeepCopy()
	*tc.GPUNodeTaintKey = "x"
	*tc.GuardGPUNodes = true
	tc.GPUResourceNames[0] = "y"
	if *taint.GPUNodeTaintKey != "nvidia.com/gpu" || *taint.GuardGPUNodes || taint.GPUResourceNames[0] != "nvidia.com/gpu" {
		t.Errorf("TesseraTaintTolerationArgs copy shares memory with the original: %+v", taint)
	}
}
