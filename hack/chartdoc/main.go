// Command chartdoc rewrites the values table of a chart's README from its
// values.yaml (make manifests runs it; a test in manifests/ fails when the
// README is out of date).
//
//	go run ./hack/chartdoc manifests/charts/tessera
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/tessera-gpu/tessera/internal/chartdoc"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: chartdoc CHART_DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "chartdoc:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	values, err := os.ReadFile(filepath.Join(dir, "values.yaml"))
	if err != nil {
		return err
	}
	rows, err := chartdoc.Rows(values)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := chartdoc.Replace(string(readme), chartdoc.Table(rows))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(out), 0o644)
}
