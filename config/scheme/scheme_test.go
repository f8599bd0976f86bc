package scheme

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/config"
	configv1 "github.com/tessera-gpu/tessera/config/v1"
)

func defaultGPU() *config.TesseraGPUArgs {
	return &config.TesseraGPUArgs{
		ScoringStrategy:    config.ScoringStrategy{Type: config.ScoringStrategyBinpack},
		InventoryStaleness: metav1.Duration{Duration: 2 * time.Minute},
		Weights:            config.ScoringWeights{Node: 1, GPU: 1, Topology: 1, DeviceTaint: 1},
	}
}

func defaultTaint() *config.TesseraTaintTolerationArgs {
	return &config.TesseraTaintTolerationArgs{
		GPUNodeTaintKey:  "nvidia.com/gpu",
		GPUResourceNames: []string{"nvidia.com/gpu", "tessera.io/gpu-percent"},
	}
}

func TestDefaultArgs(t *testing.T) {
	if diff := cmp.Diff(defaultGPU(), DefaultTesseraGPUArgs()); diff != "" {
		t.Errorf("DefaultTesseraGPUArgs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(defaultTaint(), DefaultTesseraTaintTolerationArgs()); diff != "" {
		t.Errorf("DefaultTesseraTaintTolerationArgs (-want +got):\n%s", diff)
	}
}

func unknown(raw string) *runtime.Unknown {
	return &runtime.Unknown{Raw: []byte(raw), ContentType: runtime.ContentTypeJSON}
}

func TestDecodeTesseraGPUArgs(t *testing.T) {
	spread := defaultGPU()
	spread.ScoringStrategy.Type = config.ScoringStrategySpread
	frag := defaultGPU()
	frag.ScoringStrategy = config.ScoringStrategy{Type: config.ScoringStrategyFragmentation, Fragmentation: &config.FragmentationArgs{
		WindowPods: 5000, Coverage: 95, SeedPods: 100, CPUStarvation: 100,
		Seed: []config.WorkloadClass{{CPUMilli: 11300, GPUs: 1, GPUPercent: 100, Weight: 5}, {CPUMilli: 3152, GPUs: 1, GPUPercent: 81, Models: []string{"T4"}, Weight: 2}},
	}}

	tests := []struct {
		name    string
		in      runtime.Object
		want    *config.TesseraGPUArgs
		wantErr string // substring; empty means success
	}{
		{name: "nil gives defaults", in: nil, want: defaultGPU()},
		{name: "typed nil gives defaults", in: (*config.TesseraGPUArgs)(nil), want: defaultGPU()},
		{name: "internal args pass through", in: spread.DeepCopy(), want: spread},
		{
			name: "v1 args are defaulted and converted",
			in:   &configv1.TesseraGPUArgs{ScoringStrategy: &configv1.ScoringStrategy{Type: configv1.ScoringStrategySpread}},
			want: spread,
		},
		{name: "unknown JSON", in: unknown(`{"scoringStrategy":{"type":"spread"}}`), want: spread},
		{name: "unknown YAML", in: unknown("scoringStrategy:\n  type: spread\n"), want: spread},
		{
			name: "unknown with apiVersion and kind",
			in:   unknown(`{"apiVersion":"kubescheduler.config.k8s.io/v1","kind":"TesseraGPUArgs","scoringStrategy":{"type":"spread"}}`),
			want: spread,
		},
		{name: "empty unknown gives defaults", in: unknown(""), want: defaultGPU()},
		{
			name: "fragmentation settings are defaulted and converted",
			in:   unknown(`{"scoringStrategy":{"type":"fragmentation","fragmentation":{"seed":[{"cpu":"11300m","gpus":1,"weight":5},{"cpu":"3152m","gpus":1,"gpuPercent":81,"models":["T4"],"weight":2}]}}}`),
			want: frag,
		},
		{
			name: "unknown with explicit values",
			in:   unknown(`{"inventoryStaleness":"30s","weights":{"node":0,"topology":5}}`),
			want: &config.TesseraGPUArgs{
				ScoringStrategy:    config.ScoringStrategy{Type: config.ScoringStrategyBinpack},
				InventoryStaleness: metav1.Duration{Duration: 30 * time.Second},
				Weights:            config.ScoringWeights{Node: 0, GPU: 1, Topology: 5, DeviceTaint: 1},
			},
		},
		{name: "unknown field is rejected", in: unknown(`{"scoringStrategy":{"type":"spread","mode":"x"}}`), wantErr: `unknown field "scoringStrategy.mode"`},
		{name: "misspelt top-level field is rejected", in: unknown(`{"inventoryStalenes":"1m"}`), wantErr: `unknown field "inventoryStalenes"`},
		{name: "duplicate field is rejected", in: unknown("weights:\n  node: 1\n  node: 2\n"), wantErr: `"node" already set`},
		{name: "wrong kind is rejected", in: unknown(`{"apiVersion":"kubescheduler.config.k8s.io/v1","kind":"TesseraTaintTolerationArgs"}`), wantErr: "TesseraGPUArgs"},
		{name: "malformed value is rejected", in: unknown(`{"inventoryStaleness":"soon"}`), wantErr: "soon"},
		{name: "invalid strategy is rejected", in: unknown(`{"scoringStrategy":{"type":"roundrobin"}}`), wantErr: `scoringStrategy.type: Unsupported value: "roundrobin"`},
		{name: "fragmentation without a workload is rejected", in: unknown(`{"scoringStrategy":{"type":"fragmentation","fragmentation":{"windowPods":0}}}`), wantErr: "scoringStrategy.fragmentation.seed: Required value"},
		{name: "fragmentation seed with a bad share is rejected", in: unknown(`{"scoringStrategy":{"type":"fragmentation","fragmentation":{"seed":[{"cpu":"4","gpus":2,"gpuPercent":50,"weight":1}]}}}`), wantErr: "seed[0].gpuPercent"},
		{
			name:    "invalid internal args are rejected",
			in:      &config.TesseraGPUArgs{ScoringStrategy: config.ScoringStrategy{Type: config.ScoringStrategyBinpack}},
			wantErr: "inventoryStaleness",
		},
		{name: "other types are rejected", in: &config.TesseraTaintTolerationArgs{}, wantErr: "want args of type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeTesseraGPUArgs(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				if got != nil {
					t.Errorf("want nil args with an error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
			if tc.in != nil && got == tc.in {
				t.Error("result aliases the input")
			}
		})
	}
}

func TestDecodeTesseraTaintTolerationArgs(t *testing.T) {
	guarded := defaultTaint()
	guarded.GuardGPUNodes = true

	tests := []struct {
		name    string
		in      runtime.Object
		want    *config.TesseraTaintTolerationArgs
		wantErr string
	}{
		{name: "nil gives defaults", in: nil, want: defaultTaint()},
		{name: "typed nil gives defaults", in: (*config.TesseraTaintTolerationArgs)(nil), want: defaultTaint()},
		{name: "internal args pass through", in: guarded.DeepCopy(), want: guarded},
		{name: "v1 args are defaulted and converted", in: &configv1.TesseraTaintTolerationArgs{GuardGPUNodes: ptr.To(true)}, want: guarded},
		{name: "unknown JSON", in: unknown(`{"guardGPUNodes":true}`), want: guarded},
		{
			name: "unknown YAML with explicit values",
			in:   unknown("gpuNodeTaintKey: example.com/accel\ngpuResourceNames: [example.com/gpu]\n"),
			want: &config.TesseraTaintTolerationArgs{GPUNodeTaintKey: "example.com/accel", GPUResourceNames: []string{"example.com/gpu"}},
		},
		{name: "unknown field is rejected", in: unknown(`{"guardGpuNodes":true}`), wantErr: `unknown field "guardGpuNodes"`},
		{name: "invalid resource name is rejected", in: unknown(`{"gpuResourceNames":["gpu"]}`), wantErr: "gpuResourceNames[0]"},
		{name: "empty taint key is rejected", in: unknown(`{"gpuNodeTaintKey":""}`), wantErr: "gpuNodeTaintKey: Required value"},
		{name: "other types are rejected", in: &config.TesseraGPUArgs{}, wantErr: "want args of type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeTesseraTaintTolerationArgs(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeReturnsValidationAggregate(t *testing.T) {
	_, err := DecodeTesseraGPUArgs(unknown(`{"weights":{"node":0,"gpu":0,"topology":0,"deviceTaint":0}}`))
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) {
		t.Fatalf("want a field error aggregate, got %T: %v", err, err)
	}
}
