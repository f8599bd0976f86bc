/*
Copyright The Tessera Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package manifests

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
	"github.com/tessera-gpu/tessera/internal/chartdoc"
)

// TestChartValuesDocumented checks that the values table of the chart's
// README is the one hack/chartdoc renders from values.yaml (every value has
// a "# --" comment there, or it fails to render).
func TestChartValuesDocumented(t *testing.T) {
	raw, err := os.ReadFile("charts/tessera/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := chartdoc.Rows(raw)
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("charts/tessera/README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := chartdoc.Replace(string(readme), chartdoc.Table(rows))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, string(readme)); diff != "" {
		t.Errorf("the README's values table is out of date; run make manifests (-want +got):\n%s", diff)
	}
}

// TestChartSchemaEnums checks that the lists values.schema.json accepts
// are the binaries' own: the scheduler's strategies, the device plugin's
// fake machines and health taint effects.
func TestChartSchemaEnums(t *testing.T) {
	raw, err := os.ReadFile("charts/tessera/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	enum := func(path ...string) []string {
		var node any = schema
		for _, p := range path {
			m, ok := node.(map[string]any)
			if !ok {
				t.Fatalf("values.schema.json has no %v", path)
			}
			node = m[p]
		}
		list, _ := node.([]any)
		var out []string
		for _, v := range list {
			out = append(out, v.(string))
		}
		return out
	}
	gpuArgs := []string{"properties", "scheduler", "properties", "pluginArgs", "properties", "TesseraGPU", "properties"}
	strategies := enum(append(gpuArgs, "scoringStrategy", "properties", "type", "enum")...)
	if diff := cmp.Diff([]string{string(config.ScoringStrategyBinpack), string(config.ScoringStrategySpread), string(config.ScoringStrategyFragmentation)}, strategies); diff != "" {
		t.Errorf("strategies (-binaries +schema):\n%s", diff)
	}
	fake := enum("properties", "devicePlugin", "properties", "fakeMode", "enum")
	if diff := cmp.Diff(append([]string{""}, fakegpu.Kinds()...), fake); diff != "" {
		t.Errorf("fake machines (-device plugin +schema):\n%s", diff)
	}
	effects := enum("properties", "devicePlugin", "properties", "healthTaintEffect", "enum")
	if !slices.Equal(effects, []string{"NoSchedule", "NoExecute"}) {
		t.Errorf("health taint effects %v", effects)
	}
}

// TestKrewManifest checks the krew manifest template: it parses, names the
// plugin's binary for every platform, and leaves only the placeholders the
// release fills in.
func TestKrewManifest(t *testing.T) {
	raw, err := os.ReadFile("krew/tessera.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Version          string `json:"version"`
			Homepage         string `json:"homepage"`
			ShortDescription string `json:"shortDescription"`
			Description      string `json:"description"`
			Platforms        []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				URI    string `json:"uri"`
				Sha256 string `json:"sha256"`
				Bin    string `json:"bin"`
			} `json:"platforms"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(raw, &m); err != nil {
		t.Fatalf("krew/tessera.yaml: %v", err)
	}
	if m.Kind != "Plugin" || m.Metadata.Name != "tessera" || m.Spec.Version != "VERSION" || len(m.Spec.Platforms) < 4 {
		t.Errorf("manifest %+v", m)
	}
	for _, p := range m.Spec.Platforms {
		if !strings.HasPrefix(p.Bin, "kubectl-tessera") || !strings.Contains(p.URI, "VERSION") || !strings.HasPrefix(p.Sha256, "SHA256_") {
			t.Errorf("platform %+v", p)
		}
	}
}
