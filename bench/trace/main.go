// Command trace replays Alibaba's openb GPU-cluster traces through the real
// scheduling framework with Tessera's plugins, following the protocol of
// the fragmentation gradient descent paper (Weng et al., USENIX ATC'23):
// every GPU node of the trace, pods shuffled by seed and topped up to 130%
// of the GPU capacity, created one at a time with no departures, failures
// final, every feasible node scored. It reports the unallocated GPU share
// when the arrived GPU demand reaches 100% of capacity, per strategy, next
// to the paper's numbers, as Markdown, CSV and an SVG plot.
//
// Usage:
//
//	go run ./bench/trace -trace default -seeds 42-51 -out bench/results/trace
//
// The traces are research data and are read from where they lie
// (-traces); they are never copied into the repository.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "trace:", err)
		os.Exit(1)
	}
}

type options struct {
	tracesDir  string
	traces     []string
	nodesPath  string
	strategies []strategy
	seeds      []int64
	topUp      float64
	out        string
	guards     map[string]float64
	quiet      bool
	serverLogs bool
	keep       bool
	cpuProfile string
	summarize  bool
	mode       string
	nodeStride int
}

func parseFlags() (*options, error) {
	o := &options{}
	var traces, strategyList, seeds, guards string
	flag.StringVar(&o.tracesDir, "traces", "../shared/traces/openb", "directory of the openb traces (with csv/)")
	flag.StringVar(&traces, "trace", "default", "comma-separated pod lists: names such as default or gpushare40 (csv/openb_pod_list_<name>.csv), file paths in the openb format, or all")
	flag.StringVar(&o.nodesPath, "nodes", "", "node list (default <traces>/csv/openb_node_list_gpu_node.csv)")
	flag.StringVar(&strategyList, "strategies", "all", "comma-separated strategies, or all")
	flag.StringVar(&seeds, "seeds", "42-51", "seeds: a list (42,43) or a range (42-51)")
	flag.Float64Var(&o.topUp, "topup", 1.3, "GPU demand to replay, as a multiple of the GPU capacity")
	flag.StringVar(&o.out, "out", "", "directory for <trace>.md, <trace>.csv and <trace>.svg (default: print the table only)")
	flag.StringVar(&guards, "max-unallocated", "", "fail if a strategy's mean unallocated GPU % at 100% arrived exceeds a bound: strategy=percent,...")
	flag.BoolVar(&o.quiet, "quiet", false, "no progress lines")
	flag.BoolVar(&o.keep, "keep", false, "keep the runs already saved under -out for the strategies and seeds not replayed now, so that a long campaign can be split over several invocations")
	flag.BoolVar(&o.serverLogs, "server-logs", false, "show the apiserver's and the plugins' logs")
	flag.BoolVar(&o.summarize, "summarize", false, "only rewrite <out>/summary.md from the results saved there (after replays run in parallel or stopped part way)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the replays (not the control plane's start) to this file")
	flag.StringVar(&o.mode, "mode", modeDevicePlugin, "how the nodes serve GPUs: "+strings.Join(modes, ", ")+
		" (dra: Tessera's DRA driver's ResourceSlices, whole GPUs by a mapped nvidia.com/gpu, shares by ResourceClaims with a percent capacity, allocated by TesseraDynamicResources; dra-first-fit: the same with the in-tree DynamicResources)")
	flag.IntVar(&o.nodeStride, "node-stride", 1, "replay on every n-th node of the node list only (its pods scale with it, as arrivals follow capacity): a smaller cluster for the costlier DRA modes")
	flag.Parse()
	if o.nodeStride < 1 {
		return nil, fmt.Errorf("-node-stride %d: must be at least 1", o.nodeStride)
	}
	if !slices.Contains(modes, o.mode) {
		return nil, fmt.Errorf("-mode %q: valid modes are %s", o.mode, strings.Join(modes, ", "))
	}
	if !o.serverLogs {
		// The control plane is only the inventories' store; its logs would
		// bury the replay's progress.
		klog.LogToStderr(false)
		klog.SetOutput(io.Discard)
	}
	if o.nodesPath == "" {
		o.nodesPath = filepath.Join(o.tracesDir, "csv", "openb_node_list_gpu_node.csv")
	}
	var err error
	if o.traces, err = traceFiles(o.tracesDir, traces); err != nil {
		return nil, err
	}
	if strategyList == "all" {
		o.strategies = strategies
	} else {
		for _, name := range strings.Split(strategyList, ",") {
			s, err := strategyByName(strings.TrimSpace(name))
			if err != nil {
				return nil, err
			}
			o.strategies = append(o.strategies, s)
		}
	}
	if o.seeds, err = parseSeeds(seeds); err != nil {
		return nil, err
	}
	if o.topUp < 1 || o.topUp > 10 {
		return nil, fmt.Errorf("-topup %v: must be between 1 and 10", o.topUp)
	}
	o.guards = map[string]float64{}
	for _, g := range strings.Split(guards, ",") {
		if g = strings.TrimSpace(g); g == "" {
			continue
		}
		name, v, ok := strings.Cut(g, "=")
		if !ok {
			return nil, fmt.Errorf("-max-unallocated %q: want strategy=percent", g)
		}
		if _, err := strategyByName(name); err != nil {
			return nil, fmt.Errorf("-max-unallocated: %w", err)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 100 {
			return nil, fmt.Errorf("-max-unallocated %q: %q is not a percentage", g, v)
		}
		o.guards[name] = f
	}
	return o, nil
}

// traceFiles resolves -trace: names of files in the traces directory, paths,
// or all of the directory's pod lists.
func traceFiles(dir, list string) ([]string, error) {
	if list == "all" {
		files, err := filepath.Glob(filepath.Join(dir, "csv", "openb_pod_list_*.csv"))
		if err != nil || len(files) == 0 {
			return nil, fmt.Errorf("no openb_pod_list_*.csv in %s", filepath.Join(dir, "csv"))
		}
		sort.Strings(files)
		return files, nil
	}
	var out []string
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		path := t
		if !strings.ContainsAny(t, "/.") {
			path = filepath.Join(dir, "csv", "openb_pod_list_"+t+".csv")
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("-trace %s: %w", t, err)
		}
		out = append(out, path)
	}
	return out, nil
}

// traceName is the short name of a pod list: "default" for
// openb_pod_list_default.csv.
func traceName(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), ".csv")
	return strings.TrimPrefix(base, "openb_pod_list_")
}

func parseSeeds(s string) ([]int64, error) {
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, err1 := strconv.ParseInt(lo, 10, 64)
		b, err2 := strconv.ParseInt(hi, 10, 64)
		if err1 != nil || err2 != nil || b < a || b-a > 1000 {
			return nil, fmt.Errorf("-seeds %q: want a range such as 42-51", s)
		}
		var out []int64
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
		return out, nil
	}
	var out []int64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("-seeds %q: %q is not an integer", s, f)
		}
		out = append(out, v)
	}
	return out, nil
}

func run() error {
	o, err := parseFlags()
	if err != nil {
		return err
	}
	if o.summarize {
		if o.out == "" {
			return errors.New("-summarize needs -out")
		}
		return writeSummary(o.out)
	}
	// The framework records into the scheduler's metrics, as in the
	// scheduler binary.
	schedmetrics.Register()
	nodes, err := readNodes(o.nodesPath)
	if err != nil {
		return err
	}
	if o.nodeStride > 1 {
		var kept []traceNode
		for i := 0; i < len(nodes); i += o.nodeStride {
			kept = append(kept, nodes[i])
		}
		nodes = kept
	}
	// Read every pod list before the long part starts, so that a bad file
	// fails at once.
	podLists := map[string][]tracePod{}
	for _, path := range o.traces {
		if podLists[path], err = readPods(path); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "tessera-trace-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logf := func(format string, args ...any) {
		if !o.quiet {
			fmt.Fprintf(os.Stderr, format+"\n", args...)
		}
	}
	logf("Starting etcd and kube-apiserver for the GPU inventories ...")
	lc, err := localcluster.Start(ctx, localcluster.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer lc.Stop()
	cl, err := publish(ctx, lc, nodes, o.mode)
	if err != nil {
		return err
	}
	logf("%d GPU nodes, %d GPUs published", len(cl.nodes), cl.capacity/1000)
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	var failures []string
	for _, path := range o.traces {
		name := traceName(path)
		pods := podLists[path]
		var results []*result
		if o.keep && o.out != "" {
			saved, err := loadResults(o.out, name)
			if err != nil {
				return fmt.Errorf("-keep: %w", err)
			}
			results = keepOthers(saved, o)
		}
		for _, st := range o.strategies {
			for _, seed := range o.seeds {
				order := arrivals(pods, cl.capacity, o.topUp, seed)
				step := max(len(order)/10, 1)
				start := time.Now()
				res, err := replay(ctx, cl, st, pods, order, seed, func(done int) {
					if done%step == 0 || done == len(order) {
						logf("%s seed %d %s: %d/%d pods, %.0fs", name, seed, st.name, done, len(order), time.Since(start).Seconds())
					}
				})
				if err != nil {
					return fmt.Errorf("%s seed %d %s: %w", name, seed, st.name, err)
				}
				res.trace = name
				u, _ := res.unallocatedAt(100)
				logf("%s seed %d %s: unallocated GPU at 100%% arrived %.2f%%, %d of %d pods failed, %.1fs",
					name, seed, st.name, u, res.failed, res.pods, res.elapsed.Seconds())
				results = append(results, res)
				if o.out != "" {
					// Keep what is done on disk, so that a long replay
					// stopped part way still leaves its results.
					if err := summarize(name, results).write(o.out, os.Args[1:], o.keep); err != nil {
						return err
					}
				}
			}
		}
		rep := summarize(name, results)
		fmt.Println(rep.markdownTable())
		if o.out != "" {
			if err := rep.write(o.out, os.Args[1:], o.keep); err != nil {
				return err
			}
			if err := writeSummary(o.out); err != nil {
				return err
			}
		}
		for strategy, bound := range o.guards {
			if s, ok := rep.byStrategy[strategy]; ok && s.mean > bound {
				failures = append(failures, fmt.Sprintf("%s: %s leaves %.2f%% of GPUs unallocated at 100%% arrived, above the bound of %.2f%%", name, strategy, s.mean, bound))
			}
		}
	}
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "; "))
	}
	return nil
}

// publish writes one GPUNode per trace node, as the device plugin would
// (in DRA modes a ResourceSlice, as Tessera's DRA driver would), and
// returns the nodes as the scheduler sees them.
func publish(ctx context.Context, lc *localcluster.Cluster, nodes []traceNode, mode string) (*cluster, error) {
	cl := &cluster{kubeConfig: lc.Config, mode: mode}
	one := publishOne
	if isDRA(mode) {
		if err := prepareDRA(ctx, lc); err != nil {
			return nil, err
		}
		one = publishDRA
	}
	work := make(chan traceNode)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if err := one(ctx, lc, n); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for _, n := range nodes {
		if n.gpus == 0 {
			continue
		}
		cl.nodes = append(cl.nodes, nodeObject(n, isDRA(mode)))
		cl.capacity += int64(n.gpus) * 1000
		work <- n
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	if cl.capacity == 0 {
		return nil, errors.New("the node list has no GPU nodes")
	}
	return cl, nil
}

func publishOne(ctx context.Context, lc *localcluster.Cluster, n traceNode) error {
	status := localcluster.FakeInventory(localcluster.FakeNode{Name: n.name, GPUs: n.gpus, Model: n.model, Islands: -1})
	gn, err := lc.GPU.TesseraV1alpha1().GPUNodes().Create(ctx, &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: n.name}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating GPUNode %s: %w", n.name, err)
	}
	gn.Status = status
	if _, err := lc.GPU.TesseraV1alpha1().GPUNodes().UpdateStatus(ctx, gn, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("writing GPUNode %s status: %w", n.name, err)
	}
	return nil
}
