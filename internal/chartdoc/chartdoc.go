// Package chartdoc renders the values table of a Helm chart's README from
// the chart's values.yaml, so that the table cannot drift from the values.
//
// A value is documented by a comment block directly above its key whose
// first line starts with "# --". A documented map gets one row for itself
// and its documented children get rows of their own; an undocumented map
// is described by its children. A value with no documentation of its own
// or above it is an error, so a new value cannot ship undescribed.
package chartdoc

import (
	"fmt"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Begin and End mark the generated table in the README.
const (
	Begin = "<!-- values table: generated from values.yaml by hack/chartdoc; do not edit -->"
	End   = "<!-- end of values table -->"
)

// Row is one documented value.
type Row struct {
	// Key is the value's dotted path, e.g. scheduler.image.tag.
	Key string
	// Default is the value in values.yaml, as compact JSON.
	Default string
	// Description is the comment, without its markers.
	Description string
}

// Rows reads values.yaml and returns its documented values in file order.
func Rows(values []byte) ([]Row, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(values, &doc); err != nil {
		return nil, fmt.Errorf("values.yaml: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("values.yaml is not a map")
	}
	var rows []Row
	var problems []string
	var walk func(prefix string, m *yaml.Node, documented bool)
	walk = func(prefix string, m *yaml.Node, documented bool) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			key := k.Value
			if prefix != "" {
				key = prefix + "." + k.Value
			}
			desc, ok := description(k.HeadComment)
			if ok {
				rows = append(rows, Row{Key: key, Default: compact(v), Description: desc})
			}
			if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
				walk(key, v, documented || ok)
				continue
			}
			if !ok && !documented {
				problems = append(problems, key)
			}
		}
	}
	walk("", doc.Content[0], false)
	if len(problems) > 0 {
		return nil, fmt.Errorf("values without a \"# --\" comment: %s", strings.Join(problems, ", "))
	}
	return rows, nil
}

// description returns the text of the last "# --" block in a head comment.
func description(head string) (string, bool) {
	lines := strings.Split(head, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			start = i
		}
	}
	if start < 0 {
		return "", false
	}
	var words []string
	for i, l := range lines[start:] {
		l = strings.TrimSpace(l)
		if l == "" {
			break
		}
		l = strings.TrimPrefix(l, "#")
		if i == 0 {
			l = strings.TrimPrefix(strings.TrimSpace(l), "--")
		}
		if l = strings.TrimSpace(l); l != "" {
			words = append(words, l)
		}
	}
	return strings.Join(words, " "), true
}

// compact writes a node as one-line JSON, keeping the file's key order.
func compact(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		parts := make([]string, 0, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			parts = append(parts, strconv.Quote(n.Content[i].Value)+": "+compact(n.Content[i+1]))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case yaml.SequenceNode:
		parts := make([]string, 0, len(n.Content))
		for _, c := range n.Content {
			parts = append(parts, compact(c))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case yaml.AliasNode:
		return compact(n.Alias)
	}
	switch n.ShortTag() {
	case "!!str":
		return strconv.Quote(n.Value)
	case "!!null":
		return "null"
	}
	return n.Value
}

// Table renders the rows as the README's Markdown table, between Begin and
// End.
func Table(rows []Row) string {
	var b strings.Builder
	b.WriteString(Begin + "\n")
	b.WriteString("| key | default | description |\n|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", r.Key, cell(r.Default), cell(r.Description))
	}
	b.WriteString(End)
	return b.String()
}

// cell escapes what would end a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Replace puts the table into a README in place of the marked one.
func Replace(readme, table string) (string, error) {
	i := strings.Index(readme, Begin)
	j := strings.Index(readme, End)
	if i < 0 || j < i {
		return "", fmt.Errorf("the README has no %q ... %q markers", Begin, End)
	}
	return readme[:i] + table + readme[j+len(End):], nil
}
