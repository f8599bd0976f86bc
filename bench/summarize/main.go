// Command summarize turns benchmark output into the summaries under
// bench/results (see bench/README.md):
//
//	summarize hotpath HOTPATH.txt
//	    reads `go test -bench BenchmarkHotPath` output and prints, per node
//	    and pod, the median ns/op and allocs/op of TesseraGPU's Filter and
//	    Filter+Score per strategy beside the in-tree NodeResourcesFit Filter,
//	    with the ratio Filter+Score / NodeResourcesFit.
//	summarize perf BENCHSTAT-OUT DATA-DIR...
//	    reads the JSON data items the scheduler_perf harness wrote to
//	    -data-items-dir (one or more runs), writes them to BENCHSTAT-OUT in benchstat format
//	    (one line per workload and run) and prints a table of median pods/s,
//	    the ratio to the in-tree baseline of the same size, and latency
//	    percentiles.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "hotpath":
		err = hotpath(os.Args[2], os.Stdout)
	case len(os.Args) >= 4 && os.Args[1] == "perf":
		err = perf(os.Args[3:], os.Args[2], os.Stdout)
	default:
		err = fmt.Errorf("usage: summarize hotpath FILE | summarize perf BENCHSTAT-OUT DATA-DIR...")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "summarize:", err)
		os.Exit(1)
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// --- hot path ---

var benchLine = regexp.MustCompile(`^BenchmarkHotPath/(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

type sample struct{ ns, allocs []float64 }

func hotpath(file string, w io.Writer) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	// key: node/pod/strategy/op
	samples := map[string]*sample{}
	var nodes, pods, strategies []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		kv := map[string]string{}
		for _, part := range strings.Split(m[1], "/") {
			if k, v, ok := strings.Cut(part, "="); ok {
				kv[k] = v
			}
		}
		key := strings.Join([]string{kv["node"], kv["pod"], kv["strategy"], kv["op"]}, "/")
		s := samples[key]
		if s == nil {
			s = &sample{}
			samples[key] = s
		}
		fields := strings.Fields(m[3])
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			switch fields[i+1] {
			case "ns/op":
				s.ns = append(s.ns, v)
			case "allocs/op":
				s.allocs = append(s.allocs, v)
			}
		}
		for list, v := range map[*[]string]string{&nodes: kv["node"], &pods: kv["pod"], &strategies: kv["strategy"]} {
			if !slices.Contains(*list, v) {
				*list = append(*list, v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	strategies = slices.DeleteFunc(strategies, func(s string) bool { return s == "in-tree" })
	if len(samples) == 0 {
		return fmt.Errorf("%s: no BenchmarkHotPath results", file)
	}
	fmt.Fprintln(w, "Median ns/op (allocs/op) per node; ratio = TesseraGPU Filter+Score / in-tree NodeResourcesFit Filter.")
	fmt.Fprintln(w)
	header := "| node | pod | NodeResourcesFit Filter |"
	sep := "|---|---|---|"
	for _, s := range strategies {
		header += fmt.Sprintf(" %s Filter | %s Filter+Score | ratio |", s, s)
		sep += "---|---|---|"
	}
	fmt.Fprintln(w, header)
	fmt.Fprintln(w, sep)
	cell := func(key string) (string, float64) {
		s := samples[key]
		if s == nil || len(s.ns) == 0 {
			return "n/a", 0
		}
		ns := median(s.ns)
		return fmt.Sprintf("%.0f (%.0f)", ns, median(s.allocs)), ns
	}
	for _, n := range nodes {
		for _, p := range pods {
			fit, fitNS := cell(n + "/" + p + "/in-tree/Filter")
			row := fmt.Sprintf("| %s | %s | %s |", n, p, fit)
			for _, s := range strategies {
				filter, _ := cell(n + "/" + p + "/" + s + "/Filter")
				both, bothNS := cell(n + "/" + p + "/" + s + "/Filter+Score")
				ratio := "n/a"
				if fitNS > 0 && bothNS > 0 {
					ratio = fmt.Sprintf("%.2f", bothNS/fitNS)
				}
				row += fmt.Sprintf(" %s | %s | %s |", filter, both, ratio)
			}
			fmt.Fprintln(w, row)
		}
	}
	return nil
}

// --- throughput ---

type dataItems struct {
	DataItems []struct {
		Data   map[string]float64 `json:"data"`
		Unit   string             `json:"unit"`
		Labels map[string]string  `json:"labels"`
	} `json:"dataItems"`
}

// run is one workload's results from one harness run.
type run struct {
	pods                   map[string]float64 // SchedulingThroughput buckets
	attempt, e2e, filter   map[string]float64 // latency buckets in ms
	score                  map[string]float64
	testCase, workload, at string
	seen                   map[string]bool
}

func perf(dirs []string, benchstatOut string, w io.Writer) error {
	var files []string
	for _, dir := range dirs {
		matches, err := filepath.Glob(filepath.Join(dir, "BenchmarkPerfScheduling*.json"))
		if err != nil {
			return err
		}
		sort.Strings(matches)
		files = append(files, matches...)
	}
	if len(files) == 0 {
		return fmt.Errorf("no BenchmarkPerfScheduling*.json in %s", strings.Join(dirs, " "))
	}
	var runs []*run
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var di dataItems
		if err := json.Unmarshal(raw, &di); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		// With -count N the harness runs each workload N times in one
		// process and appends every run's items to the same file under
		// the same Name; an item already seen for a Name starts its next
		// run.
		byName := map[string]*run{}
		for _, it := range di.DataItems {
			// Name is BenchmarkPerfScheduling/<case>/<workload>/<namespace>.
			parts := strings.Split(it.Labels["Name"], "/")
			if len(parts) < 3 {
				continue
			}
			item := it.Labels["Metric"] + "/" + it.Labels["result"] + "/" + it.Labels["extension_point"]
			r := byName[it.Labels["Name"]]
			if r == nil || r.seen[item] {
				r = &run{testCase: parts[1], workload: parts[2], at: filepath.Base(file), seen: map[string]bool{}}
				byName[it.Labels["Name"]] = r
				runs = append(runs, r)
			}
			r.seen[item] = true
			switch it.Labels["Metric"] {
			case "SchedulingThroughput":
				r.pods = it.Data
			case "scheduler_scheduling_attempt_duration_seconds":
				if it.Labels["result"] == "scheduled" {
					r.attempt = it.Data
				}
			case "scheduler_pod_scheduling_sli_duration_seconds":
				r.e2e = it.Data
			case "scheduler_framework_extension_point_duration_seconds":
				switch it.Labels["extension_point"] {
				case "Filter":
					r.filter = it.Data
				case "Score":
					r.score = it.Data
				}
			}
		}
	}

	out, err := os.Create(benchstatOut)
	if err != nil {
		return err
	}
	defer out.Close()
	fmt.Fprintf(out, "goos: linux\npkg: github.com/tessera-gpu/tessera/bench/perf\ncpu: %s\n", cpuModel())
	for _, r := range runs {
		if r.pods == nil {
			continue
		}
		line := fmt.Sprintf("BenchmarkPerfScheduling/case=%s/nodes=%s 1 %.2f pods/s %.2f p50-pods/s",
			r.testCase, strings.TrimSuffix(r.workload, "Nodes"), r.pods["Average"], r.pods["Perc50"])
		for _, h := range []struct {
			name string
			data map[string]float64
		}{{"attempt", r.attempt}, {"e2e", r.e2e}} {
			if h.data != nil {
				line += fmt.Sprintf(" %.3f %s-p50-ms %.3f %s-p90-ms %.3f %s-p99-ms", h.data["Perc50"], h.name, h.data["Perc90"], h.name, h.data["Perc99"], h.name)
			}
		}
		fmt.Fprintln(out, line)
	}

	// Table: medians over runs, per workload size and case.
	type key struct{ workload, testCase string }
	groups := map[key][]*run{}
	var keys []key
	for _, r := range runs {
		if r.pods == nil {
			continue
		}
		k := key{r.workload, r.testCase}
		if groups[k] == nil {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	sort.SliceStable(keys, func(i, j int) bool {
		ni, _ := strconv.Atoi(strings.TrimSuffix(keys[i].workload, "Nodes"))
		nj, _ := strconv.Atoi(strings.TrimSuffix(keys[j].workload, "Nodes"))
		if ni != nj {
			return ni < nj
		}
		return keys[i].testCase < keys[j].testCase
	})
	med := func(rs []*run, pick func(*run) map[string]float64, bucket string) float64 {
		var xs []float64
		for _, r := range rs {
			if d := pick(r); d != nil {
				xs = append(xs, d[bucket])
			}
		}
		return median(xs)
	}
	podsOf := func(r *run) map[string]float64 { return r.pods }
	fmt.Fprintln(w, "Medians over runs. pods/s: SchedulingThroughput average of the measured pods;")
	fmt.Fprintln(w, "ratio: to InTreeWholeGPU of the same size (DRA cases: to InTreeDRAWholeGPU); attempt: scheduling_attempt_duration")
	fmt.Fprintln(w, "(result=scheduled); e2e: pod_scheduling_sli_duration (first enqueue to bound).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| nodes | case | runs | pods/s | ratio | attempt p50 / p90 / p99 ms | e2e p50 / p90 / p99 ms | Filter / Score p50 ms |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, k := range keys {
		rs := groups[k]
		pods := med(rs, podsOf, "Average")
		ratio := "n/a"
		baseline := "InTreeWholeGPU"
		if strings.Contains(k.testCase, "DRA") {
			baseline = "InTreeDRAWholeGPU"
		}
		if base := groups[key{k.workload, baseline}]; len(base) > 0 {
			if b := med(base, podsOf, "Average"); b > 0 {
				ratio = fmt.Sprintf("%.2f", pods/b)
			}
		}
		lat := func(pick func(*run) map[string]float64) string {
			return fmt.Sprintf("%.1f / %.1f / %.1f", med(rs, pick, "Perc50"), med(rs, pick, "Perc90"), med(rs, pick, "Perc99"))
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.1f | %s | %s | %s | %.2f / %.2f |\n",
			strings.TrimSuffix(k.workload, "Nodes"), k.testCase, len(rs), pods, ratio,
			lat(func(r *run) map[string]float64 { return r.attempt }),
			lat(func(r *run) map[string]float64 { return r.e2e }),
			med(rs, func(r *run) map[string]float64 { return r.filter }, "Perc50"),
			med(rs, func(r *run) map[string]float64 { return r.score }, "Perc50"))
	}
	return nil
}

func cpuModel() string {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
