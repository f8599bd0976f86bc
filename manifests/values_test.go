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
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestChartValuesDocumented checks that every value of the chart is in the
// values table of its README (a row for the value itself or for a map that
// holds it), that every row names a value that exists, and that each row's
// value carries a "# --" comment in values.yaml.
func TestChartValuesDocumented(t *testing.T) {
	raw, err := os.ReadFile("charts/tessera/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	var leaves []string
	all := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		all[prefix] = true
		m, ok := v.(map[string]any)
		if !ok || len(m) == 0 {
			leaves = append(leaves, prefix)
			return
		}
		for k, sub := range m {
			walk(prefix+"."+k, sub)
		}
	}
	for k, v := range values {
		walk(k, v)
	}
	sort.Strings(leaves)

	readme, err := os.ReadFile("charts/tessera/README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(string(readme), -1) {
		rows[m[1]] = true
	}
	if len(rows) == 0 {
		t.Fatal("README.md has no values table")
	}
	for _, leaf := range leaves {
		documented := false
		for p := leaf; ; {
			if rows[p] {
				documented = true
				break
			}
			i := strings.LastIndex(p, ".")
			if i < 0 {
				break
			}
			p = p[:i]
		}
		if !documented {
			t.Errorf("value %s is not in the README's values table", leaf)
		}
	}
	for row := range rows {
		if !all[row] {
			t.Errorf("the README documents %s, which values.yaml does not have", row)
		}
	}

	// Each documented key is preceded by a "# --" comment block.
	lines := strings.Split(string(raw), "\n")
	commented := map[string]bool{}
	var stack []struct {
		indent int
		key    string
	}
	key := regexp.MustCompile(`^(\s*)([A-Za-z0-9_.-]+):`)
	inComment := false
	for _, l := range lines {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "# --") {
			inComment = true
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		m := key.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		indent := len(m[1])
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		stack = append(stack, struct {
			indent int
			key    string
		}{indent, m[2]})
		if inComment {
			var path []string
			for _, s := range stack {
				path = append(path, s.key)
			}
			commented[strings.Join(path, ".")] = true
			inComment = false
		}
	}
	for row := range rows {
		if !commented[row] {
			t.Errorf("values.yaml has no \"# --\" comment for %s", row)
		}
	}
}
