package scheme_test

// These tests decode configuration the way the tessera-scheduler binary does:
// through the kube-scheduler's own config file loader, with this package
// imported for its registration side effect.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	kubeschedulerconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	kubeschedulerscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"
	kubeschedulerconfigv1 "k8s.io/kubernetes/pkg/scheduler/apis/config/v1"
	kubeschedulervalidation "k8s.io/kubernetes/pkg/scheduler/apis/config/validation"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/config/scheme"
	configv1 "github.com/tessera-gpu/tessera/config/v1"
)

const examplePath = "../examples/tessera-scheduler.yaml"

func loadFile(t *testing.T, path string) (*kubeschedulerconfig.KubeSchedulerConfiguration, error) {
	t.Helper()
	return options.LoadConfigFromFile(klog.Background(), path)
}

func loadString(t *testing.T, content string) (*kubeschedulerconfig.KubeSchedulerConfiguration, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return loadFile(t, path)
}

func profile(t *testing.T, cfg *kubeschedulerconfig.KubeSchedulerConfiguration, name string) *kubeschedulerconfig.KubeSchedulerProfile {
	t.Helper()
	for i := range cfg.Profiles {
		if cfg.Profiles[i].SchedulerName == name {
			return &cfg.Profiles[i]
		}
	}
	t.Fatalf("no profile %q in %d profiles", name, len(cfg.Profiles))
	return nil
}

func pluginArgs(t *testing.T, prof *kubeschedulerconfig.KubeSchedulerProfile, plugin string) runtime.Object {
	t.Helper()
	for _, pc := range prof.PluginConfig {
		if pc.Name == plugin {
			return pc.Args
		}
	}
	t.Fatalf("profile %q has no pluginConfig for %s", prof.SchedulerName, plugin)
	return nil
}

func names(ps []kubeschedulerconfig.Plugin) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestLoadExample(t *testing.T) {
	cfg, err := loadFile(t, examplePath)
	if err != nil {
		t.Fatalf("loading %s: %v", examplePath, err)
	}
	if err := kubeschedulervalidation.ValidateKubeSchedulerConfiguration(cfg); err != nil {
		t.Fatalf("the scheduler's own validation rejects %s: %v", examplePath, err)
	}
	if !cfg.LeaderElection.LeaderElect || cfg.LeaderElection.ResourceName != "tessera-scheduler" {
		t.Errorf("leader election = %+v; want enabled with a lease of its own", cfg.LeaderElection)
	}
	if len(cfg.Profiles) != 1 {
		t.Fatalf("want exactly one profile, got %d", len(cfg.Profiles))
	}
	prof := profile(t, cfg, "tessera-scheduler")

	// The plugins receive typed, defaulted internal args.
	gpuArgs, ok := pluginArgs(t, prof, config.TesseraGPUName).(*config.TesseraGPUArgs)
	if !ok {
		t.Fatalf("TesseraGPU args are %T, want *config.TesseraGPUArgs", pluginArgs(t, prof, config.TesseraGPUName))
	}
	if diff := cmp.Diff(scheme.DefaultTesseraGPUArgs(), gpuArgs); diff != "" {
		t.Errorf("TesseraGPU args (-want +got):\n%s", diff)
	}
	taintArgs, ok := pluginArgs(t, prof, config.TesseraTaintTolerationName).(*config.TesseraTaintTolerationArgs)
	if !ok {
		t.Fatalf("TesseraTaintToleration args are %T, want *config.TesseraTaintTolerationArgs", pluginArgs(t, prof, config.TesseraTaintTolerationName))
	}
	if diff := cmp.Diff(scheme.DefaultTesseraTaintTolerationArgs(), taintArgs); diff != "" {
		t.Errorf("TesseraTaintToleration args (-want +got):\n%s", diff)
	}
	// What the plugin factories do with them.
	if _, err := scheme.DecodeTesseraGPUArgs(gpuArgs); err != nil {
		t.Errorf("DecodeTesseraGPUArgs: %v", err)
	}
	if _, err := scheme.DecodeTesseraTaintTolerationArgs(taintArgs); err != nil {
		t.Errorf("DecodeTesseraTaintTolerationArgs: %v", err)
	}

	// The in-tree TaintToleration is off wherever it would run, and ours is on.
	p := prof.Plugins
	for _, pt := range []struct {
		point   string
		set     kubeschedulerconfig.PluginSet
		enabled []string
	}{
		{"preFilter", p.PreFilter, []string{config.TesseraTaintTolerationName, config.TesseraGPUName}},
		{"filter", p.Filter, []string{config.TesseraTaintTolerationName, config.TesseraGPUName}},
		{"preScore", p.PreScore, []string{config.TesseraTaintTolerationName, config.TesseraGPUName}},
		{"score", p.Score, []string{config.TesseraTaintTolerationName, config.TesseraGPUName}},
		{"reserve", p.Reserve, []string{config.TesseraGPUName}},
		{"bind", p.Bind, []string{config.TesseraGPUName}},
	} {
		enabled, disabled := names(pt.set.Enabled), names(pt.set.Disabled)
		for _, want := range pt.enabled {
			if !contains(enabled, want) {
				t.Errorf("%s: %s not enabled (enabled: %v)", pt.point, want, enabled)
			}
		}
		if pt.point != "reserve" && pt.point != "bind" && !contains(disabled, "TaintToleration") {
			t.Errorf("%s: in-tree TaintToleration not disabled (disabled: %v)", pt.point, disabled)
		}
	}
	// Binding with TesseraGPU writes the assignment in the Binding; at
	// preBind it would patch the pod first, a second write for nothing.
	if contains(names(p.PreBind.Enabled), config.TesseraGPUName) {
		t.Errorf("preBind: TesseraGPU enabled next to bind")
	}
}

// TestExampleSpellsOutEveryDefault keeps the example honest: every arg field
// is written out, with exactly its default value.
func TestExampleSpellsOutEveryDefault(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Profiles []struct {
			PluginConfig []struct {
				Name string          `json:"name"`
				Args json.RawMessage `json:"args"`
			} `json:"pluginConfig"`
		} `json:"profiles"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, pc := range doc.Profiles[0].PluginConfig {
		var written, defaulted runtime.Object
		switch pc.Name {
		case config.TesseraGPUName:
			w := &configv1.TesseraGPUArgs{}
			if err := yaml.UnmarshalStrict(pc.Args, w); err != nil {
				t.Fatal(err)
			}
			d := w.DeepCopy()
			configv1.SetDefaults_TesseraGPUArgs(d)
			all := &configv1.TesseraGPUArgs{}
			configv1.SetDefaults_TesseraGPUArgs(all)
			if diff := cmp.Diff(all, d); diff != "" {
				t.Errorf("%s: example values differ from the defaults (-default +example):\n%s", pc.Name, diff)
			}
			written, defaulted = w, d
		case config.TesseraTaintTolerationName:
			w := &configv1.TesseraTaintTolerationArgs{}
			if err := yaml.UnmarshalStrict(pc.Args, w); err != nil {
				t.Fatal(err)
			}
			d := w.DeepCopy()
			configv1.SetDefaults_TesseraTaintTolerationArgs(d)
			all := &configv1.TesseraTaintTolerationArgs{}
			configv1.SetDefaults_TesseraTaintTolerationArgs(all)
			if diff := cmp.Diff(all, d); diff != "" {
				t.Errorf("%s: example values differ from the defaults (-default +example):\n%s", pc.Name, diff)
			}
			written, defaulted = w, d
		default:
			continue
		}
		seen[pc.Name] = true
		// If defaulting changed anything, some field was left out.
		if diff := cmp.Diff(defaulted, written); diff != "" {
			t.Errorf("%s: example omits fields (-defaulted +example):\n%s", pc.Name, diff)
		}
	}
	for _, n := range []string{config.TesseraGPUName, config.TesseraTaintTolerationName} {
		if !seen[n] {
			t.Errorf("example has no pluginConfig for %s", n)
		}
	}
}

const configHead = `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: false
profiles:
- schedulerName: tessera-scheduler
  plugins:
    multiPoint:
      enabled:
      - name: TesseraGPU
      - name: TesseraTaintToleration
`

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name string
		// pluginConfig is appended to configHead.
		pluginConfig string
		// loadErr, if set, is a substring of the loader's error.
		loadErr string
		// gpuErr and taintErr, if set, are substrings of the errors the
		// plugin factories get from the Decode helpers.
		gpuErr, taintErr string
		wantGPU          *config.TesseraGPUArgs
		wantTaint        *config.TesseraTaintTolerationArgs
	}{
		{
			name:      "no pluginConfig: plugins still get typed defaults",
			wantGPU:   scheme.DefaultTesseraGPUArgs(),
			wantTaint: scheme.DefaultTesseraTaintTolerationArgs(),
		},
		{
			name: "spread",
			pluginConfig: `  pluginConfig:
  - name: TesseraGPU
    args:
      scoringStrategy: {type: spread}
`,
			wantGPU: func() *config.TesseraGPUArgs {
				a := scheme.DefaultTesseraGPUArgs()
				a.ScoringStrategy.Type = config.ScoringStrategySpread
				return a
			}(),
			wantTaint: scheme.DefaultTesseraTaintTolerationArgs(),
		},
		{
			name: "explicit apiVersion and kind in args",
			pluginConfig: `  pluginConfig:
  - name: TesseraTaintToleration
    args:
      apiVersion: kubescheduler.config.k8s.io/v1
      kind: TesseraTaintTolerationArgs
      guardGPUNodes: true
`,
			wantGPU: scheme.DefaultTesseraGPUArgs(),
			wantTaint: func() *config.TesseraTaintTolerationArgs {
				a := scheme.DefaultTesseraTaintTolerationArgs()
				a.GuardGPUNodes = true
				return a
			}(),
		},
		{
			name: "unknown field in TesseraGPU args",
			pluginConfig: `  pluginConfig:
  - name: TesseraGPU
    args:
      scoringStrategy: {type: spread, resources: [nvidia.com/gpu]}
`,
			loadErr: `decoding args for plugin TesseraGPU: strict decoding error: unknown field "scoringStrategy.resources"`,
		},
		{
			name: "unknown field in TesseraTaintToleration args",
			pluginConfig: `  pluginConfig:
  - name: TesseraTaintToleration
    args:
      guardGpuNodes: true
`,
			loadErr: `decoding args for plugin TesseraTaintToleration: strict decoding error: unknown field "guardGpuNodes"`,
		},
		{
			name: "wrong value type",
			pluginConfig: `  pluginConfig:
  - name: TesseraGPU
    args:
      weights: {node: high}
`,
			loadErr: "decoding args for plugin TesseraGPU",
		},
		{
			name: "invalid strategy",
			pluginConfig: `  pluginConfig:
  - name: TesseraGPU
    args:
      scoringStrategy: {type: roundrobin}
`,
			gpuErr: `scoringStrategy.type: Unsupported value: "roundrobin": supported values: "binpack", "spread", "fragmentation"`,
		},
		{
			name: "fragmentation seed with a negative weight",
			pluginConfig: `  pluginConfig:
  - name: TesseraGPU
    args:
      scoringStrategy:
        type: fragmentation
        fragmentation:
          seed: [{cpu: 500m, gpus: 1, gpuPercent: 30, weight: -2}]
`,
			gpuErr: "scoringStrategy.fragmentation.seed[0].weight: Invalid value: -2: must be at least 1",
		},
		{
			name: "invalid taint args",
			pluginConfig: `  pluginConfig:
  - name: TesseraTaintToleration
    args:
      gpuNodeTaintKey: "not a key"
      gpuResourceNames: [cpu]
`,
			taintErr: "gpuResourceNames[0]",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadString(t, configHead+tc.pluginConfig)
			if tc.loadErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.loadErr) {
					t.Fatalf("want load error containing %q, got %v", tc.loadErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			prof := profile(t, cfg, "tessera-scheduler")

			gpu, err := scheme.DecodeTesseraGPUArgs(pluginArgs(t, prof, config.TesseraGPUName))
			checkDecoded(t, "TesseraGPU", tc.gpuErr, err, tc.wantGPU, gpu)
			taint, err := scheme.DecodeTesseraTaintTolerationArgs(pluginArgs(t, prof, config.TesseraTaintTolerationName))
			checkDecoded(t, "TesseraTaintToleration", tc.taintErr, err, tc.wantTaint, taint)
		})
	}
}

func checkDecoded[T any](t *testing.T, plugin, wantErr string, err error, want, got *T) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: want error containing %q, got %v", plugin, wantErr, err)
		}
		return
	}
	if err != nil {
		t.Errorf("%s: %v", plugin, err)
		return
	}
	if want == nil {
		return
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s args (-want +got):\n%s", plugin, diff)
	}
}

// TestEncodeRoundTrip covers the internal -> v1 direction, which the
// scheduler uses when it logs or writes its effective configuration.
func TestEncodeRoundTrip(t *testing.T) {
	cfg, err := loadString(t, configHead+`  pluginConfig:
  - name: TesseraGPU
    args:
      scoringStrategy: {type: spread}
      inventoryStaleness: 45s
      weights: {node: 0, gpu: 3}
  - name: TesseraTaintToleration
    args:
      gpuResourceNames: [example.com/gpu]
      guardGPUNodes: true
`)
	if err != nil {
		t.Fatal(err)
	}
	info, ok := runtime.SerializerInfoForMediaType(kubeschedulerscheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeYAML)
	if !ok {
		t.Fatal("no YAML serializer")
	}
	var buf bytes.Buffer
	if err := kubeschedulerscheme.Codecs.EncoderForVersion(info.Serializer, kubeschedulerconfigv1.SchemeGroupVersion).Encode(cfg, &buf); err != nil {
		t.Fatalf("encoding: %v", err)
	}
	out := buf.String()
	for _, want := range []string{"kind: TesseraGPUArgs", "type: spread", "inventoryStaleness: 45s", "deviceTaint: 1", "guardGPUNodes: true", "example.com/gpu"} {
		if !strings.Contains(out, want) {
			t.Errorf("encoded configuration lacks %q:\n%s", want, out)
		}
	}
	again, err := loadString(t, out)
	if err != nil {
		t.Fatalf("reloading the encoded configuration: %v\n%s", err, out)
	}
	for _, plugin := range []string{config.TesseraGPUName, config.TesseraTaintTolerationName} {
		before := pluginArgs(t, profile(t, cfg, "tessera-scheduler"), plugin)
		after := pluginArgs(t, profile(t, again, "tessera-scheduler"), plugin)
		if diff := cmp.Diff(before, after); diff != "" {
			t.Errorf("%s args changed in the round trip (-before +after):\n%s", plugin, diff)
		}
	}
}
