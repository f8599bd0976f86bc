package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The results under -out are kept in two files per trace: <trace>.csv, the
// curve of every run, and <trace>-runs.csv, one line per run with what the
// curve does not hold. Reading them back lets a long campaign (every trace,
// every strategy, ten seeds: most of a day on a small machine) be split over
// several invocations with -keep, and lets summary.md compare every trace.

const (
	curveHeader = "trace,strategy,seed,arrived_pct,unallocated_gpu_pct"
	runsHeader  = "trace,strategy,seed,pods,failed_pods,seconds,date"
)

// runKey names one replay.
type runKey struct {
	strategy string
	seed     int64
}

// writeRuns renders <trace>-runs.csv.
func writeRuns(results []*result) string {
	var b strings.Builder
	b.WriteString(runsHeader + "\n")
	for _, res := range results {
		seconds, pods, failed := "", "", ""
		if res.pods >= 0 {
			pods, failed = strconv.Itoa(res.pods), strconv.Itoa(res.failed)
		}
		if res.elapsed >= 0 {
			seconds = strconv.FormatFloat(res.elapsed.Seconds(), 'f', 1, 64)
		}
		date := ""
		if !res.date.IsZero() {
			date = res.date.UTC().Format(time.DateOnly)
		}
		fmt.Fprintf(&b, "%s,%s,%d,%s,%s,%s,%s\n", res.trace, res.strategy, res.seed, pods, failed, seconds, date)
	}
	return b.String()
}

// loadResults reads the runs of one trace saved under dir. A trace with no
// saved results gives none and no error. Runs saved before <trace>-runs.csv
// existed come back with their pods, failures and time unknown (-1).
func loadResults(dir, trace string) ([]*result, error) {
	byKey := map[runKey]*result{}
	var out []*result
	err := readCSV(filepath.Join(dir, trace+".csv"), strings.Split(curveHeader, ","), func(get func(string) string) error {
		seed, err := strconv.ParseInt(get("seed"), 10, 64)
		if err != nil {
			return fmt.Errorf("column seed: %q is not an integer", get("seed"))
		}
		pct, err := nonNegative(get, "arrived_pct")
		if err != nil || pct > maxArrivedPct {
			return fmt.Errorf("column arrived_pct: %q is not a percentage up to %d", get("arrived_pct"), maxArrivedPct)
		}
		u, err := strconv.ParseFloat(get("unallocated_gpu_pct"), 64)
		if err != nil || u < 0 || u > 100 {
			return fmt.Errorf("column unallocated_gpu_pct: %q is not a percentage", get("unallocated_gpu_pct"))
		}
		if get("trace") != trace {
			return fmt.Errorf("trace %q in the file of trace %s", get("trace"), trace)
		}
		if _, err := strategyByName(get("strategy")); err != nil {
			return err
		}
		k := runKey{get("strategy"), seed}
		r := byKey[k]
		if r == nil {
			r = &result{trace: trace, strategy: k.strategy, seed: seed, pods: -1, failed: -1, elapsed: -1}
			byKey[k] = r
			out = append(out, r)
		}
		r.sum[pct], r.count[pct] = u, 1
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}

	err = readCSV(filepath.Join(dir, trace+"-runs.csv"), strings.Split(runsHeader, ","), func(get func(string) string) error {
		seed, err := strconv.ParseInt(get("seed"), 10, 64)
		r := byKey[runKey{get("strategy"), seed}]
		if err != nil || get("trace") != trace || r == nil {
			return fmt.Errorf("no run of trace %s with strategy %q and seed %q in %s.csv", trace, get("strategy"), get("seed"), trace)
		}
		if get("pods") != "" {
			p, err1 := nonNegative(get, "pods")
			f, err2 := nonNegative(get, "failed_pods")
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			if f > p {
				return fmt.Errorf("failed_pods %d is more than pods %d", f, p)
			}
			r.pods, r.failed = int(p), int(f)
		}
		if s := get("seconds"); s != "" {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || v < 0 {
				return fmt.Errorf("column seconds: %q is not a duration", s)
			}
			r.elapsed = time.Duration(v * float64(time.Second))
		}
		if d := get("date"); d != "" {
			if r.date, err = time.Parse(time.DateOnly, d); err != nil {
				return fmt.Errorf("column date: %q is not YYYY-MM-DD", d)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return out, nil
}

// keepOthers drops from saved the runs that will be replayed again.
func keepOthers(saved []*result, o *options) []*result {
	return slices.DeleteFunc(saved, func(r *result) bool {
		return slices.ContainsFunc(o.strategies, func(s strategy) bool { return s.name == r.strategy }) &&
			slices.Contains(o.seeds, r.seed)
	})
}

// writeSummary saves summary.md under dir: every trace with results there,
// Tessera's online fragmentation and the best baseline run here, next to
// the paper's FGD and best baseline.
func writeSummary(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.csv"))
	if err != nil {
		return err
	}
	var reports []*report
	for _, f := range files {
		if strings.HasSuffix(f, "-runs.csv") {
			continue
		}
		trace := strings.TrimSuffix(filepath.Base(f), ".csv")
		results, err := loadResults(dir, trace)
		if err != nil {
			return err
		}
		reports = append(reports, summarize(trace, results))
	}
	// Published traces first, in the paper's order, then the others.
	rank := func(trace string) int {
		if i := slices.Index(paperTraces, trace); i >= 0 {
			return i
		}
		return len(paperTraces)
	}
	sort.SliceStable(reports, func(i, j int) bool {
		ri, rj := rank(reports[i].trace), rank(reports[j].trace)
		return ri < rj || ri == rj && reports[i].trace < reports[j].trace
	})
	return replaceFile(filepath.Join(dir, "summary.md"), summaryMarkdown(reports))
}

// paperTraces are the pod lists of the paper's Table/Fig. results, in its
// order.
var paperTraces = []string{"default", "cpu050", "cpu100", "cpu200", "cpu250", "gpushare40", "gpushare60", "gpushare80",
	"gpushare100", "multigpu20", "multigpu30", "multigpu40", "multigpu50", "gpuspec10", "gpuspec20", "gpuspec25", "gpuspec33"}

var baselineNames = []string{"random", "binpack", "spread", "bestfit", "dotprod"}

func summaryMarkdown(reports []*report) string {
	var b strings.Builder
	b.WriteString("# Trace replay: every trace\n\n")
	b.WriteString("Unallocated GPU % when the arrived GPU demand reaches 100% of capacity, mean ± sd over the seeds run " +
		"(the number in brackets). Per-trace tables, curves and plots are in `<trace>.md`, `<trace>.csv` and `<trace>.svg`; " +
		"each table gives the commands. The paper's numbers are mean ± sd over seeds 42-51 (fgd.md §5.2).\n\n")
	b.WriteString("| trace | Tessera fragmentation (online) | fragmentation-fgd (online, published measure) | fragmentation-oracle | best baseline here | paper FGD | paper best baseline | online vs paper FGD |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	cell := func(s *stat) string {
		if s == nil || len(s.unallocated) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f ± %.2f (%d)", s.mean, s.sd, len(s.unallocated))
	}
	var beat, compared int
	for _, r := range reports {
		online := r.byStrategy["fragmentation"]
		var best *stat
		for _, name := range baselineNames {
			if s := r.byStrategy[name]; s != nil && len(s.unallocated) > 0 && (best == nil || s.mean < best.mean) {
				best = s
			}
		}
		bestHere := "-"
		if best != nil {
			bestHere = best.strategy + " " + cell(best)
		}
		paperFGD, paperBest, vs := "-", "-", "-"
		if p, ok := paperMean[r.trace]; ok {
			paperFGD = fmt.Sprintf("%.2f ± %.2f", p["FGD"][0], p["FGD"][1])
			bestName, bestV := "", math.Inf(1)
			for name, v := range p {
				if name != "FGD" && v[0] < bestV {
					bestName, bestV = name, v[0]
				}
			}
			paperBest = fmt.Sprintf("%s %.2f", bestName, bestV)
			if online != nil && len(online.unallocated) > 0 {
				compared++
				if online.mean < p["FGD"][0] {
					beat++
				}
				vs = fmt.Sprintf("%+.2f", online.mean-p["FGD"][0])
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.trace, cell(online), cell(r.byStrategy["fragmentation-fgd"]),
			cell(r.byStrategy["fragmentation-oracle"]), bestHere, paperFGD, paperBest, vs)
	}
	fmt.Fprintf(&b, "\nOnline fragmentation is below the paper's FGD on %d of the %d published traces run here.\n", beat, compared)
	return b.String()
}

// replaceFile replaces a file in one step (a temporary file renamed over it),
// so that a replay of other traces writing summary.md at the same time
// never reads a file half written.
func replaceFile(path, content string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := f.WriteString(content)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}
