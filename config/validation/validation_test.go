package validation

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/tessera-gpu/tessera/config"
)

func validGPUArgs() *config.TesseraGPUArgs {
	return &config.TesseraGPUArgs{
		ScoringStrategy:    config.ScoringStrategy{Type: config.ScoringStrategyBinpack},
		InventoryStaleness: metav1.Duration{Duration: 2 * time.Minute},
		Weights:            config.ScoringWeights{Node: 1, GPU: 1, Topology: 1, DeviceTaint: 1},
	}
}

func validTaintArgs() *config.TesseraTaintTolerationArgs {
	return &config.TesseraTaintTolerationArgs{
		GPUNodeTaintKey:  "nvidia.com/gpu",
		GPUResourceNames: []string{"nvidia.com/gpu", "tessera.io/gpu-percent"},
	}
}

// wantErr describes one expected field error: its type, its full path and a
// piece of its message.
type wantErr struct {
	typ    field.ErrorType
	path   string
	detail string
}

// checkErrs asserts that err is an aggregate of exactly the wanted field
// errors, in order.
func checkErrs(t *testing.T, err error, want []wantErr) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("want errors %+v, got none", want)
	}
	agg, ok := err.(utilerrors.Aggregate)
	if !ok {
		t.Fatalf("want an aggregate of field errors, got %T: %v", err, err)
	}
	errs := agg.Errors()
	if len(errs) != len(want) {
		t.Fatalf("want %d errors, got %d: %v", len(want), len(errs), err)
	}
	for i, e := range errs {
		fe, ok := e.(*field.Error)
		if !ok {
			t.Fatalf("error %d is %T, not *field.Error: %v", i, e, e)
		}
		if fe.Type != want[i].typ || fe.Field != want[i].path || !strings.Contains(fe.Error(), want[i].detail) {
			t.Errorf("error %d = %q (type %q, field %q); want type %q, field %q, containing %q",
				i, fe.Error(), fe.Type, fe.Field, want[i].typ, want[i].path, want[i].detail)
		}
	}
}

func TestValidateTesseraGPUArgs(t *testing.T) {
	root := field.NewPath("profiles").Index(0).Child("pluginConfig").Index(1).Child("args")
	tests := []struct {
		name   string
		path   *field.Path
		modify func(*config.TesseraGPUArgs)
		want   []wantErr
	}{
		{name: "defaults are valid", modify: func(*config.TesseraGPUArgs) {}},
		{name: "spread is valid", modify: func(a *config.TesseraGPUArgs) { a.ScoringStrategy.Type = config.ScoringStrategySpread }},
		{name: "minimum staleness is valid", modify: func(a *config.TesseraGPUArgs) { a.InventoryStaleness.Duration = time.Second }},
		{name: "weights at the bounds are valid", modify: func(a *config.TesseraGPUArgs) {
			a.Weights = config.ScoringWeights{Node: 0, GPU: 100, Topology: 0, DeviceTaint: 0}
		}},
		{
			name:   "unknown strategy",
			modify: func(a *config.TesseraGPUArgs) { a.ScoringStrategy.Type = "roundrobin" },
			want:   []wantErr{{field.ErrorTypeNotSupported, "scoringStrategy.type", `supported values: "binpack", "spread", "fragmentation"`}},
		},
		{
			name:   "strategy names are case-sensitive",
			modify: func(a *config.TesseraGPUArgs) { a.ScoringStrategy.Type = "Spread" },
			want:   []wantErr{{field.ErrorTypeNotSupported, "scoringStrategy.type", `"Spread"`}},
		},
		{name: "fragmentation with online estimate is valid", modify: func(a *config.TesseraGPUArgs) {
			a.ScoringStrategy = config.ScoringStrategy{Type: config.ScoringStrategyFragmentation, Fragmentation: validFragmentation()}
		}},
		{name: "fragmentation with a fixed seed is valid", modify: func(a *config.TesseraGPUArgs) {
			f := validFragmentation()
			f.WindowPods = 0
			f.Seed = []config.WorkloadClass{{CPUMilli: 4000, GPUs: 1, GPUPercent: 30, Weight: 3}, {CPUMilli: 8000, GPUs: 8, GPUPercent: 100, Models: []string{"T4"}, Weight: 1}, {CPUMilli: 1000, Weight: 1}}
			a.ScoringStrategy = config.ScoringStrategy{Type: config.ScoringStrategyFragmentation, Fragmentation: f}
		}},
		{
			name:   "fragmentation without settings",
			modify: func(a *config.TesseraGPUArgs) { a.ScoringStrategy.Type = config.ScoringStrategyFragmentation },
			want:   []wantErr{{field.ErrorTypeRequired, "scoringStrategy.fragmentation", "defaulting"}},
		},
		{
			name: "fragmentation settings with another strategy",
			modify: func(a *config.TesseraGPUArgs) {
				a.ScoringStrategy.Fragmentation = validFragmentation()
			},
			want: []wantErr{{field.ErrorTypeForbidden, "scoringStrategy.fragmentation", `only valid with type "fragmentation"`}},
		},
		{
			name: "bad fragmentation settings",
			modify: func(a *config.TesseraGPUArgs) {
				a.ScoringStrategy = config.ScoringStrategy{Type: config.ScoringStrategyFragmentation, Fragmentation: &config.FragmentationArgs{
					WindowPods: 0, Coverage: 0, SeedPods: -1, CPUStarvation: 1001,
				}}
			},
			want: []wantErr{
				{field.ErrorTypeRequired, "scoringStrategy.fragmentation.seed", "must not be empty"},
				{field.ErrorTypeInvalid, "scoringStrategy.fragmentation.coverage", "between 1 and 100"},
				{field.ErrorTypeInvalid, "scoringStrategy.fragmentation.cpuStarvation", "between 0 and 1000"},
				{field.ErrorTypeInvalid, "scoringStrategy.fragmentation.seedPods", "must not be negative"},
			},
		},
		{
			name: "bad seed classes",
			modify: func(a *config.TesseraGPUArgs) {
				f := validFragmentation()
				f.Seed = []config.WorkloadClass{
					{CPUMilli: -1, GPUs: 1, GPUPercent: 30, Weight: 1},
					{GPUs: 2, GPUPercent: 50, Weight: 1},
					{GPUs: 1, GPUPercent: 0, Weight: 1},
					{GPUs: 0, GPUPercent: 20, Weight: 1},
					{GPUs: 1, GPUPercent: 20, Models: []string{" "}, Weight: 0},
				}
				a.ScoringStrategy = config.ScoringStrategy{Type: config.ScoringStrategyFragmentation, Fragmentation: f}
			},
			want: []wantErr{
				{field.ErrorTypeInvalid, "scoringStrategy.fragmentation.seed[0].cpu", "must not be negative"},
				{field.ErrorTypeInvalid, "scoringStrategy.fragmentation.seed[1].gpuPercent", "take them whole"},
				{field.ErrorTypeInvalid, "scoringStrategy.fragmentation.seed[2].gpuPercent", "between 1 and 100"},
				{field.ErrorTypeInvalid, "scoringStrategy.fragmentation.seed[3].gpuPercent", "must be unset"},
				{field.ErrorTypeInvalid, "scoringStrategy.fragmentation.seed[4].models[0]", "must not be empty"},
				{field.ErrorTypeInvalid, "scoringStrategy.fragmentation.seed[4].weight", "at least 1"},
			},
		},
		{
			name:   "empty strategy",
			modify: func(a *config.TesseraGPUArgs) { a.ScoringStrategy.Type = "" },
			want:   []wantErr{{field.ErrorTypeRequired, "scoringStrategy.type", `"binpack", "spread", "fragmentation"`}},
		},
		{
			name:   "zero staleness",
			modify: func(a *config.TesseraGPUArgs) { a.InventoryStaleness.Duration = 0 },
			want:   []wantErr{{field.ErrorTypeInvalid, "inventoryStaleness", "must be at least 1s"}},
		},
		{
			name:   "negative staleness",
			modify: func(a *config.TesseraGPUArgs) { a.InventoryStaleness.Duration = -time.Minute },
			want:   []wantErr{{field.ErrorTypeInvalid, "inventoryStaleness", `"-1m0s"`}},
		},
		{
			name:   "sub-second staleness",
			modify: func(a *config.TesseraGPUArgs) { a.InventoryStaleness.Duration = 500 * time.Millisecond },
			want:   []wantErr{{field.ErrorTypeInvalid, "inventoryStaleness", "must be at least 1s"}},
		},
		{
			name:   "negative node weight",
			modify: func(a *config.TesseraGPUArgs) { a.Weights.Node = -1 },
			want:   []wantErr{{field.ErrorTypeInvalid, "weights.node", "[0, 100]"}},
		},
		{
			name:   "gpu weight too large",
			modify: func(a *config.TesseraGPUArgs) { a.Weights.GPU = 101 },
			want:   []wantErr{{field.ErrorTypeInvalid, "weights.gpu", "[0, 100]"}},
		},
		{
			name:   "topology weight too large",
			modify: func(a *config.TesseraGPUArgs) { a.Weights.Topology = 1000 },
			want:   []wantErr{{field.ErrorTypeInvalid, "weights.topology", "[0, 100]"}},
		},
		{
			name:   "negative device taint weight",
			modify: func(a *config.TesseraGPUArgs) { a.Weights.DeviceTaint = -5 },
			want:   []wantErr{{field.ErrorTypeInvalid, "weights.deviceTaint", "[0, 100]"}},
		},
		{
			name:   "all weights zero",
			modify: func(a *config.TesseraGPUArgs) { a.Weights = config.ScoringWeights{} },
			want:   []wantErr{{field.ErrorTypeInvalid, "weights", "at least one weight must be positive"}},
		},
		{
			name: "every error is reported, under the given path",
			path: root,
			modify: func(a *config.TesseraGPUArgs) {
				a.ScoringStrategy.Type = "roundrobin"
				a.InventoryStaleness.Duration = 0
				a.Weights = config.ScoringWeights{Node: 101}
			},
			want: []wantErr{
				{field.ErrorTypeNotSupported, "profiles[0].pluginConfig[1].args.scoringStrategy.type", "roundrobin"},
				{field.ErrorTypeInvalid, "profiles[0].pluginConfig[1].args.inventoryStaleness", "at least 1s"},
				{field.ErrorTypeInvalid, "profiles[0].pluginConfig[1].args.weights.node", "[0, 100]"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := validGPUArgs()
			tc.modify(args)
			checkErrs(t, ValidateTesseraGPUArgs(tc.path, args), tc.want)
		})
	}
}

func TestValidateTesseraTaintTolerationArgs(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*config.TesseraTaintTolerationArgs)
		want   []wantErr
	}{
		{name: "defaults are valid", modify: func(*config.TesseraTaintTolerationArgs) {}},
		{name: "guarding is valid", modify: func(a *config.TesseraTaintTolerationArgs) { a.GuardGPUNodes = true }},
		{name: "unprefixed taint key is valid", modify: func(a *config.TesseraTaintTolerationArgs) { a.GPUNodeTaintKey = "gpu" }},
		{name: "other vendor resources are valid", modify: func(a *config.TesseraTaintTolerationArgs) {
			a.GPUResourceNames = []string{"amd.com/gpu", "gpu.intel.com/i915"}
		}},
		{
			name:   "empty taint key",
			modify: func(a *config.TesseraTaintTolerationArgs) { a.GPUNodeTaintKey = "" },
			want:   []wantErr{{field.ErrorTypeRequired, "gpuNodeTaintKey", "GPU nodes"}},
		},
		{
			name:   "taint key with a space",
			modify: func(a *config.TesseraTaintTolerationArgs) { a.GPUNodeTaintKey = "nvidia.com/g pu" },
			want:   []wantErr{{field.ErrorTypeInvalid, "gpuNodeTaintKey", "name part must consist of"}},
		},
		{
			name:   "taint key with a bad prefix",
			modify: func(a *config.TesseraTaintTolerationArgs) { a.GPUNodeTaintKey = "Nvidia_com/gpu" },
			want:   []wantErr{{field.ErrorTypeInvalid, "gpuNodeTaintKey", "prefix part"}},
		},
		{
			name:   "no resource names",
			modify: func(a *config.TesseraTaintTolerationArgs) { a.GPUResourceNames = nil },
			want:   []wantErr{{field.ErrorTypeRequired, "gpuResourceNames", "at least one resource"}},
		},
		{
			name:   "empty resource name",
			modify: func(a *config.TesseraTaintTolerationArgs) { a.GPUResourceNames = []string{"nvidia.com/gpu", ""} },
			want:   []wantErr{{field.ErrorTypeRequired, "gpuResourceNames[1]", "must not be empty"}},
		},
		{
			name:   "native resource",
			modify: func(a *config.TesseraTaintTolerationArgs) { a.GPUResourceNames = []string{"cpu"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "gpuResourceNames[0]", "domain-prefixed"}},
		},
		{
			name:   "kubernetes.io namespace",
			modify: func(a *config.TesseraTaintTolerationArgs) { a.GPUResourceNames = []string{"example.kubernetes.io/gpu"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "gpuResourceNames[0]", "reserved for native resources"}},
		},
		{
			name:   "quota prefix",
			modify: func(a *config.TesseraTaintTolerationArgs) { a.GPUResourceNames = []string{"requests.nvidia.com/gpu"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "gpuResourceNames[0]", "reserved for quota"}},
		},
		{
			name: "malformed extended resource",
			modify: func(a *config.TesseraTaintTolerationArgs) {
				a.GPUResourceNames = []string{"nvidia.com/gpu", "nvidia.com/-gpu"}
			},
			want: []wantErr{{field.ErrorTypeInvalid, "gpuResourceNames[1]", "name part must consist of"}},
		},
		{
			name: "duplicate resource",
			modify: func(a *config.TesseraTaintTolerationArgs) {
				a.GPUResourceNames = []string{"nvidia.com/gpu", "nvidia.com/gpu"}
			},
			want: []wantErr{{field.ErrorTypeDuplicate, "gpuResourceNames[1]", "nvidia.com/gpu"}},
		},
		{
			name: "every error is reported",
			modify: func(a *config.TesseraTaintTolerationArgs) {
				a.GPUNodeTaintKey = "bad key"
				a.GPUResourceNames = []string{"memory", "tessera.io/gpu-percent", "tessera.io/gpu-percent"}
			},
			want: []wantErr{
				{field.ErrorTypeInvalid, "gpuNodeTaintKey", "name part must consist of"},
				{field.ErrorTypeInvalid, "gpuResourceNames[0]", "domain-prefixed"},
				{field.ErrorTypeDuplicate, "gpuResourceNames[2]", "tessera.io/gpu-percent"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := validTaintArgs()
			tc.modify(args)
			checkErrs(t, ValidateTesseraTaintTolerationArgs(nil, args), tc.want)
		})
	}
}

func TestValidateNilArgs(t *testing.T) {
	if err := ValidateTesseraGPUArgs(nil, nil); err == nil {
		t.Error("ValidateTesseraGPUArgs(nil) returned no error")
	}
	if err := ValidateTesseraTaintTolerationArgs(nil, nil); err == nil {
		t.Error("ValidateTesseraTaintTolerationArgs(nil) returned no error")
	}
}

func validFragmentation() *config.FragmentationArgs {
	return &config.FragmentationArgs{WindowPods: 5000, Coverage: 95, SeedPods: 100, CPUStarvation: 100}
}
