package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testRun(strategy string, seed int64, u float64, failed int) *result {
	r := &result{trace: "default", strategy: strategy, seed: seed, pods: 100, failed: failed,
		elapsed: 1500 * time.Millisecond, date: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	for k := 95; k <= 105; k++ {
		r.sum[k], r.count[k] = u+float64(k-100)/4, 1
	}
	return r
}

func TestResultsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	runs := []*result{testRun("fragmentation", 42, 4.5, 10), testRun("fragmentation", 43, 5.5, 12), testRun("bestfit", 42, 7, 20)}
	if err := summarize("default", runs).write(dir, []string{"-trace", "default"}, false); err != nil {
		t.Fatal(err)
	}
	got, err := loadResults(dir, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("loaded %d runs, want 3", len(got))
	}
	rep := summarize("default", got)
	s := rep.byStrategy["fragmentation"]
	if s == nil || s.seeds != 2 || s.mean != 5 || s.failed != 11 || s.seconds != 1.5 {
		t.Fatalf("fragmentation after the round trip: %+v", s)
	}
	if u, _ := rep.byStrategy["bestfit"].perSeed[0].unallocatedAt(96); u != 6 {
		t.Errorf("bestfit curve at 96%%: %v, want 6", u)
	}

	// A -keep invocation says so in the table's file.
	if err := summarize("default", got).write(dir, []string{"-keep"}, true); err != nil {
		t.Fatal(err)
	}
	if md, _ := os.ReadFile(filepath.Join(dir, "default.md")); !strings.Contains(string(md), "With `-keep`") {
		t.Errorf("default.md does not mention -keep:\n%s", md)
	}

	// -keep drops only what is replayed again.
	o := &options{seeds: []int64{43}}
	st, _ := strategyByName("fragmentation")
	o.strategies = []strategy{st}
	kept := keepOthers(got, o)
	if len(kept) != 2 {
		t.Fatalf("kept %d runs, want fragmentation 42 and bestfit 42", len(kept))
	}
	for _, r := range kept {
		if r.strategy == "fragmentation" && r.seed == 43 {
			t.Errorf("kept the run that is replayed again")
		}
	}

	if err := writeSummary(dir); err != nil {
		t.Fatal(err)
	}
	summary, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| default | 5.00 ± 0.71 (2) | - | - | bestfit 7.00 ± 0.00 (1) | 4.77 ± 0.11 | BestFit 7.14 | +0.23 |", "on 0 of the 1 published traces"} {
		if !strings.Contains(string(summary), want) {
			t.Errorf("summary.md lacks %q:\n%s", want, summary)
		}
	}
}

func TestLoadResultsLegacyAndErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := loadResults(dir, "default"); err != nil || got != nil {
		t.Fatalf("no saved results: %v, %v", got, err)
	}
	// Curves saved before the runs file existed load with unknown counts.
	write("default.csv", curveHeader+"\ndefault,bestfit,42,100,7.1400\n")
	got, err := loadResults(dir, "default")
	if err != nil || len(got) != 1 || got[0].failed != -1 || got[0].elapsed != -1 {
		t.Fatalf("legacy curve: %+v, %v", got, err)
	}
	if s := summarize("default", got).byStrategy["bestfit"]; !strings.Contains(summarize("default", got).markdownTable(), "| bestfit | 1 | 7.14 ± 0.00 | BestFit | 7.14 ± 0.14 | - | - |") {
		t.Errorf("legacy table:\n%s (%+v)", summarize("default", got).markdownTable(), s)
	}

	for _, tc := range []struct{ curve, runs, want string }{
		{"trace,seed\n", "", `default.csv:1: the header lacks column "strategy"`},
		{curveHeader + "\ndefault,bestfit,x,100,7\n", "", `default.csv:2: column seed: "x" is not an integer`},
		{curveHeader + "\ndefault,bestfit,42,100,700\n", "", `default.csv:2: column unallocated_gpu_pct: "700" is not a percentage`},
		{curveHeader + "\ndefault,bogus,42,100,7\n", "", `default.csv:2: unknown strategy "bogus"`},
		{curveHeader + "\ndefault,bestfit,42,100,7\n", runsHeader + "\ndefault,bestfit,43,1,0,1,\n", `default-runs.csv:2: no run of trace default with strategy "bestfit" and seed "43"`},
		{curveHeader + "\ndefault,bestfit,42,100,7\n", runsHeader + "\ndefault,bestfit,42,1,5,1,\n", "default-runs.csv:2: failed_pods 5 is more than pods 1"},
	} {
		write("default.csv", tc.curve)
		os.Remove(filepath.Join(dir, "default-runs.csv"))
		if tc.runs != "" {
			write("default-runs.csv", tc.runs)
		}
		if _, err := loadResults(dir, "default"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one containing %q", err, tc.want)
		}
	}
}
