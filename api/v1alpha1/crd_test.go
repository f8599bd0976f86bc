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

package v1alpha1_test

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/manifests"
)

// designExample is the example GPUNode of docs/design.md (the YAML block
// after its "gpunode example" marker), so the example users read is the one
// the test decodes.
func designExample(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- gpunode example -->\n```yaml\n")
	if !ok {
		t.Fatal("docs/design.md has no gpunode example")
	}
	example, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("docs/design.md: the gpunode example does not end")
	}
	return example
}

// loadCRD parses the embedded CRD manifest strictly, applies the v1 defaults
// and returns it together with its internal form.
func loadCRD(t *testing.T) (*apiextensionsv1.CustomResourceDefinition, *apiextensions.CustomResourceDefinition) {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(manifests.GPUNodeCRD, crd); err != nil {
		t.Fatalf("parsing the GPUNode CRD: %v", err)
	}
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(crd)
	internal := &apiextensions.CustomResourceDefinition{}
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(crd, internal, nil); err != nil {
		t.Fatalf("converting the GPUNode CRD to the internal type: %v", err)
	}
	return crd, internal
}

func versionSchema(t *testing.T, crd *apiextensions.CustomResourceDefinition) *apiextensions.JSONSchemaProps {
	t.Helper()
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("want exactly one version, got %d", len(crd.Spec.Versions))
	}
	// The conversion to the internal type moves a schema shared by all
	// versions to spec.validation.
	v := crd.Spec.Versions[0]
	switch {
	case v.Schema != nil && v.Schema.OpenAPIV3Schema != nil:
		return v.Schema.OpenAPIV3Schema
	case crd.Spec.Validation != nil && crd.Spec.Validation.OpenAPIV3Schema != nil:
		return crd.Spec.Validation.OpenAPIV3Schema
	}
	t.Fatalf("version %s has no OpenAPI v3 schema", v.Name)
	return nil
}

// toUnstructured turns YAML or JSON into the generic form the apiserver
// validates, with integers as int64 as the apiserver decodes them.
func toUnstructured(t *testing.T, data []byte) map[string]any {
	t.Helper()
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("YAML to JSON: %v", err)
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(j, &obj); err != nil {
		t.Fatalf("decoding JSON: %v", err)
	}
	return obj
}

func TestCRDMetadata(t *testing.T) {
	crd, internal := loadCRD(t)

	if got, want := crd.Name, "gpunodes.tessera.io"; got != want {
		t.Errorf("name = %q, want %q", got, want)
	}
	if got, want := crd.Spec.Group, v1alpha1.GroupName; got != want {
		t.Errorf("group = %q, want %q", got, want)
	}
	if crd.Spec.Scope != apiextensionsv1.ClusterScoped {
		t.Errorf("scope = %q, want Cluster", crd.Spec.Scope)
	}
	n := crd.Spec.Names
	if n.Plural != "gpunodes" || n.Singular != "gpunode" || n.Kind != "GPUNode" || n.ListKind != "GPUNodeList" {
		t.Errorf("names = %+v, want gpunodes/gpunode/GPUNode/GPUNodeList", n)
	}
	if !slices.Equal(n.ShortNames, []string{"gpun"}) {
		t.Errorf("shortNames = %v, want [gpun]", n.ShortNames)
	}
	if !slices.Equal(n.Categories, []string{"tessera"}) {
		t.Errorf("categories = %v, want [tessera]", n.Categories)
	}

	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("want exactly one version, got %d", len(crd.Spec.Versions))
	}
	v := crd.Spec.Versions[0]
	if v.Name != v1alpha1.SchemeGroupVersion.Version || !v.Served || !v.Storage {
		t.Errorf("version %q served=%v storage=%v, want %q served and stored", v.Name, v.Served, v.Storage, v1alpha1.SchemeGroupVersion.Version)
	}
	if v.Subresources == nil || v.Subresources.Status == nil {
		t.Errorf("the status subresource is not enabled")
	}
	if v.Subresources != nil && v.Subresources.Scale != nil {
		t.Errorf("unexpected scale subresource")
	}

	type column struct{ name, typ, path string }
	var got []column
	for _, c := range v.AdditionalPrinterColumns {
		got = append(got, column{c.Name, c.Type, c.JSONPath})
	}
	want := []column{
		{"GPUs", "integer", ".status.gpuCount"},
		{"Healthy", "integer", ".status.healthyCount"},
		{"Models", "string", ".status.models"},
		{"Fresh", "string", `.status.conditions[?(@.type=="InventoryFresh")].status`},
		{"Heartbeat", "date", ".status.heartbeatTime"},
		{"Age", "date", ".metadata.creationTimestamp"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("printer columns = %v, want %v", got, want)
	}

	// Validate the CRD as the apiserver does on create. The apiserver fills
	// status.storedVersions before validating; do the same.
	internal.Status.StoredVersions = []string{v.Name}
	if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), internal); len(errs) > 0 {
		t.Errorf("the CRD would be rejected by the apiserver: %v", errs.ToAggregate())
	}
}

// TestCRDMatchesGoTypes walks the Go types and the schema together and
// checks that they have the same fields, with matching types, that fields the
// schema requires are always serialized by Go, and that the lists marked
// +listType=atomic are atomic in the schema.
func TestCRDMatchesGoTypes(t *testing.T) {
	crd, _ := loadCRD(t)
	s := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	compareShape(t, "", reflect.TypeFor[v1alpha1.GPUNode](), s)

	atomic := []string{
		"spec.deviceTaints",
		"status.gpus",
		"status.gpus[].nvlinkPeers",
		"status.gpus[].taints",
	}
	for _, p := range atomic {
		ps := schemaAt(t, s, p)
		if ps.XListType == nil || *ps.XListType != "atomic" {
			t.Errorf("%s: x-kubernetes-list-type is not atomic", p)
		}
	}
}

func schemaAt(t *testing.T, s *apiextensionsv1.JSONSchemaProps, path string) *apiextensionsv1.JSONSchemaProps {
	t.Helper()
	for _, part := range strings.Split(path, ".") {
		name, isItems := strings.CutSuffix(part, "[]")
		p, ok := s.Properties[name]
		if !ok {
			t.Fatalf("schema has no %s", path)
		}
		s = &p
		if isItems {
			if s.Items == nil || s.Items.Schema == nil {
				t.Fatalf("schema has no items at %s", path)
			}
			s = s.Items.Schema
		}
	}
	return s
}

type goField struct {
	typ       reflect.Type
	omitEmpty bool
}

// jsonFields returns the JSON fields of a struct type, flattening inlined
// and embedded structs as encoding/json does.
func jsonFields(typ reflect.Type) map[string]goField {
	fields := map[string]goField{}
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" && f.Anonymous {
			for k, v := range jsonFields(f.Type) {
				fields[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = goField{typ: f.Type, omitEmpty: slices.Contains(strings.Split(opts, ","), "omitempty")}
	}
	return fields
}

func compareShape(t *testing.T, path string, typ reflect.Type, s *apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	where := path
	if where == "" {
		where = "<root>"
	}
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch typ {
	case reflect.TypeFor[metav1.Time]():
		if s.Type != "string" || s.Format != "date-time" {
			t.Errorf("%s: schema is %s/%s, want string/date-time", where, s.Type, s.Format)
		}
		return
	case reflect.TypeFor[metav1.ObjectMeta]():
		if s.Type != "object" {
			t.Errorf("%s: schema type is %q, want object", where, s.Type)
		}
		return
	}

	switch typ.Kind() {
	case reflect.String:
		if s.Type != "string" {
			t.Errorf("%s: schema type is %q, want string", where, s.Type)
		}
	case reflect.Bool:
		if s.Type != "boolean" {
			t.Errorf("%s: schema type is %q, want boolean", where, s.Type)
		}
	case reflect.Int32, reflect.Int64:
		want := "int32"
		if typ.Kind() == reflect.Int64 {
			want = "int64"
		}
		if s.Type != "integer" || s.Format != want {
			t.Errorf("%s: schema is %s/%s, want integer/%s", where, s.Type, s.Format, want)
		}
	case reflect.Slice:
		if s.Type != "array" {
			t.Errorf("%s: schema type is %q, want array", where, s.Type)
			return
		}
		if s.Items == nil || s.Items.Schema == nil {
			t.Errorf("%s: array schema has no items schema", where)
			return
		}
		compareShape(t, path+"[]", typ.Elem(), s.Items.Schema)
	case reflect.Struct:
		if s.Type != "object" {
			t.Errorf("%s: schema type is %q, want object", where, s.Type)
			return
		}
		fields := jsonFields(typ)
		var goNames, schemaNames []string
		for name := range fields {
			goNames = append(goNames, name)
		}
		for name := range s.Properties {
			schemaNames = append(schemaNames, name)
		}
		sort.Strings(goNames)
		sort.Strings(schemaNames)
		if !slices.Equal(goNames, schemaNames) {
			t.Errorf("%s: Go fields %v, schema properties %v", where, goNames, schemaNames)
		}
		for _, req := range s.Required {
			f, ok := fields[req]
			if !ok {
				t.Errorf("%s: schema requires %q, which the Go type lacks", where, req)
				continue
			}
			if f.omitEmpty {
				t.Errorf("%s: schema requires %q, which the Go type omits when empty", where, req)
			}
		}
		for name, f := range fields {
			ps, ok := s.Properties[name]
			if !ok {
				continue
			}
			sub := name
			if path != "" {
				sub = path + "." + name
			}
			compareShape(t, sub, f.typ, &ps)
		}
	default:
		t.Errorf("%s: unhandled Go kind %s", where, typ.Kind())
	}
}

// TestDesignExample checks that the docs/design.md example decodes strictly into
// the Go type, is accepted by the CRD schema without pruning anything, and
// that what Go writes back is accepted too.
func TestDesignExample(t *testing.T) {
	_, internal := loadCRD(t)
	s := versionSchema(t, internal)
	validator, _, err := validation.NewSchemaValidator(s)
	if err != nil {
		t.Fatalf("building the schema validator: %v", err)
	}
	structural, err := structuralschema.NewStructural(s)
	if err != nil {
		t.Fatalf("the schema is not structural: %v", err)
	}

	var node v1alpha1.GPUNode
	if err := yaml.UnmarshalStrict([]byte(designExample(t)), &node); err != nil {
		t.Fatalf("strict decoding of the design example into GPUNode: %v", err)
	}
	if len(node.Status.GPUs) != 1 {
		t.Fatalf("decoded %d GPUs, want 1", len(node.Status.GPUs))
	}
	g := node.Status.GPUs[0]
	if g.UUID != "GPU-8c0e6f3a-..." || g.Model != "NVIDIA H100 80GB HBM3" || g.MemoryMiB != 81920 ||
		g.PCIBusID != "00000000:18:00.0" || !g.Health.Healthy || g.Health.Since == nil ||
		len(g.Taints) != 1 || g.Taints[0].Effect != "NoSchedule" || node.Status.CUDADriverVersion != 12040 ||
		node.Status.HeartbeatTime == nil {
		t.Errorf("decoded GPUNode does not hold the example's values: %+v", node)
	}

	fromGo, err := json.Marshal(&node)
	if err != nil {
		t.Fatalf("encoding GPUNode: %v", err)
	}
	for name, data := range map[string][]byte{"design example": []byte(designExample(t)), "re-encoded from Go": fromGo} {
		obj := toUnstructured(t, data)
		if errs := validation.ValidateCustomResource(nil, obj, validator); len(errs) > 0 {
			t.Errorf("%s: rejected by the CRD schema: %v", name, errs.ToAggregate())
		}
		unknown := pruning.PruneWithOptions(obj, structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
		if len(unknown) > 0 {
			t.Errorf("%s: fields unknown to the CRD schema would be pruned: %v", name, unknown)
		}
	}

	// Sanity check of the pruning check itself.
	obj := toUnstructured(t, []byte(designExample(t)))
	gpu0(obj)["bogus"] = "x"
	unknown := pruning.PruneWithOptions(obj, structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	if !slices.Equal(unknown, []string{"status.gpus[0].bogus"}) {
		t.Errorf("pruning of an unknown field reported %v", unknown)
	}
}

func gpu0(obj map[string]any) map[string]any {
	return obj["status"].(map[string]any)["gpus"].([]any)[0].(map[string]any)
}

func TestCRDSchemaValidation(t *testing.T) {
	_, internal := loadCRD(t)
	validator, _, err := validation.NewSchemaValidator(versionSchema(t, internal))
	if err != nil {
		t.Fatalf("building the schema validator: %v", err)
	}

	status := func(o map[string]any) map[string]any { return o["status"].(map[string]any) }
	taint0 := func(o map[string]any) map[string]any { return gpu0(o)["taints"].([]any)[0].(map[string]any) }
	health := func(o map[string]any) map[string]any { return gpu0(o)["health"].(map[string]any) }
	withSpecTaint := func(taint map[string]any) func(map[string]any) {
		return func(o map[string]any) { o["spec"] = map[string]any{"deviceTaints": []any{taint}} }
	}

	good := []struct {
		name   string
		mutate func(map[string]any)
	}{
		{"as in the design", func(map[string]any) {}},
		{"unknown NUMA node", func(o map[string]any) { gpu0(o)["numaNode"] = int64(-1) }},
		{"unhealthy", func(o map[string]any) { health(o)["healthy"] = false; health(o)["reason"] = "XID 79" }},
		{"zero memory", func(o map[string]any) { gpu0(o)["memoryMiB"] = int64(0) }},
		{"no GPUs", func(o map[string]any) { status(o)["gpus"] = []any{}; status(o)["gpuCount"] = int64(0) }},
		{"no status", func(o map[string]any) { delete(o, "status") }},
		{"counts", func(o map[string]any) { status(o)["gpuCount"] = int64(8); status(o)["healthyCount"] = int64(7) }},
		{"taint without value", func(o map[string]any) { delete(taint0(o), "value") }},
		{"PreferNoSchedule", func(o map[string]any) { taint0(o)["effect"] = "PreferNoSchedule" }},
		{"NoExecute", func(o map[string]any) { taint0(o)["effect"] = "NoExecute" }},
		{"unprefixed taint key", func(o map[string]any) { taint0(o)["key"] = "maintenance" }},
		{"spec device taint", withSpecTaint(map[string]any{"uuid": "GPU-1", "key": "tessera.io/drain", "effect": "NoSchedule"})},
	}
	for _, tc := range good {
		t.Run("accepts/"+tc.name, func(t *testing.T) {
			obj := toUnstructured(t, []byte(designExample(t)))
			tc.mutate(obj)
			if errs := validation.ValidateCustomResource(nil, obj, validator); len(errs) > 0 {
				t.Errorf("rejected: %v", errs.ToAggregate())
			}
		})
	}

	bad := []struct {
		name   string
		mutate func(map[string]any)
		field  string // expected in the error
	}{
		{"negative memory", func(o map[string]any) { gpu0(o)["memoryMiB"] = int64(-1) }, "memoryMiB"},
		{"negative index", func(o map[string]any) { gpu0(o)["index"] = int64(-1) }, "index"},
		{"NUMA node below -1", func(o map[string]any) { gpu0(o)["numaNode"] = int64(-2) }, "numaNode"},
		{"negative gpuCount", func(o map[string]any) { status(o)["gpuCount"] = int64(-1) }, "gpuCount"},
		{"negative healthyCount", func(o map[string]any) { status(o)["healthyCount"] = int64(-1) }, "healthyCount"},
		{"negative CUDA version", func(o map[string]any) { status(o)["cudaDriverVersion"] = int64(-1) }, "cudaDriverVersion"},
		{"bad effect", func(o map[string]any) { taint0(o)["effect"] = "NoWay" }, "effect"},
		{"empty effect", func(o map[string]any) { taint0(o)["effect"] = "" }, "effect"},
		{"missing effect", func(o map[string]any) { delete(taint0(o), "effect") }, "effect"},
		{"missing taint key", func(o map[string]any) { delete(taint0(o), "key") }, "key"},
		{"empty taint key", func(o map[string]any) { taint0(o)["key"] = "" }, "key"},
		{"long taint key", func(o map[string]any) { taint0(o)["key"] = strings.Repeat("k", 318) }, "key"},
		{"malformed taint key", func(o map[string]any) { taint0(o)["key"] = "has space" }, "key"},
		{"long taint value", func(o map[string]any) { taint0(o)["value"] = strings.Repeat("v", 64) }, "value"},
		{"missing uuid", func(o map[string]any) { delete(gpu0(o), "uuid") }, "uuid"},
		{"empty uuid", func(o map[string]any) { gpu0(o)["uuid"] = "" }, "uuid"},
		{"missing model", func(o map[string]any) { delete(gpu0(o), "model") }, "model"},
		{"missing health", func(o map[string]any) { delete(gpu0(o), "health") }, "health"},
		{"missing health.healthy", func(o map[string]any) { delete(health(o), "healthy") }, "healthy"},
		{"healthy not a bool", func(o map[string]any) { health(o)["healthy"] = "yes" }, "healthy"},
		{"bad heartbeatTime", func(o map[string]any) { status(o)["heartbeatTime"] = "yesterday" }, "heartbeatTime"},
		{"bad since", func(o map[string]any) { health(o)["since"] = "a while ago" }, "since"},
		{"nvlinkPeers not strings", func(o map[string]any) { gpu0(o)["nvlinkPeers"] = []any{int64(1)} }, "nvlinkPeers"},
		{"memory not an integer", func(o map[string]any) { gpu0(o)["memoryMiB"] = 1.5 }, "memoryMiB"},
		{"spec taint bad effect", withSpecTaint(map[string]any{"uuid": "GPU-1", "key": "k", "effect": "Evict"}), "effect"},
		{"spec taint without uuid", withSpecTaint(map[string]any{"key": "k", "effect": "NoSchedule"}), "uuid"},
		{"spec taint empty key", withSpecTaint(map[string]any{"uuid": "GPU-1", "key": "", "effect": "NoSchedule"}), "key"},
	}
	for _, tc := range bad {
		t.Run("rejects/"+tc.name, func(t *testing.T) {
			obj := toUnstructured(t, []byte(designExample(t)))
			tc.mutate(obj)
			errs := validation.ValidateCustomResource(nil, obj, validator)
			if len(errs) == 0 {
				t.Fatalf("accepted")
			}
			if msg := errs.ToAggregate().Error(); !strings.Contains(msg, tc.field) {
				t.Errorf("errors do not mention %q: %s", tc.field, msg)
			}
		})
	}
}
