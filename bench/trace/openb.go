package main

import (
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
)

// tracePod is one row of an openb pod list: what a task asked for.
type tracePod struct {
	name     string
	cpuMilli int64
	memMiB   int64
	numGPU   int
	// gpuMilli is the share of each GPU in thousandths; 1000 is whole.
	gpuMilli int
	// models are the accepted GPU models; empty means any.
	models []string
	spec   string
}

// demand is the pod's GPU demand in milli-GPU.
func (p *tracePod) demand() int64 { return int64(p.numGPU) * int64(p.gpuMilli) }

// traceNode is one row of an openb node list.
type traceNode struct {
	name     string
	cpuMilli int64
	memMiB   int64
	gpus     int
	model    string
}

// csvError names the file and line of a bad row, so that a user can fix
// the file.
type csvError struct {
	file string
	line int
	err  error
}

func (e *csvError) Error() string { return fmt.Sprintf("%s:%d: %v", e.file, e.line, e.err) }

// readCSV reads a CSV file with a header, checking that the named columns
// are present, and calls row with each record's fields by column name; a
// column not in the header reads as empty.
func readCSV(path string, required []string, row func(get func(string) string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return parseError(path, 1, "reading the header: ", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	for _, name := range required {
		if _, ok := col[name]; !ok {
			return &csvError{path, 1, fmt.Errorf("the header lacks column %q (it has %s)", name, strings.Join(header, ","))}
		}
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			// The reader knows no field positions for a record it could
			// not parse, so the line comes from its error.
			return parseError(path, 0, "", err)
		}
		line, _ := r.FieldPos(0)
		if len(rec) < len(header) {
			return &csvError{path, line, fmt.Errorf("%d fields, the header has %d", len(rec), len(header))}
		}
		get := func(name string) string {
			// An optional column the file lacks reads as empty.
			i, ok := col[name]
			if !ok {
				return ""
			}
			return strings.TrimSpace(rec[i])
		}
		if err := row(get); err != nil {
			return &csvError{path, line, err}
		}
	}
}

// parseError turns an error of the CSV reader into a csvError at the line
// where the unreadable record starts, keeping the reader's reason and where
// it gave up; line is used for errors that name no line (I/O errors).
func parseError(path string, line int, what string, err error) error {
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return &csvError{path, line, fmt.Errorf("%s%w", what, err)}
	}
	if pe.Line != pe.StartLine {
		// A quoted field ran on: say where the reader stopped too.
		return &csvError{path, pe.StartLine, fmt.Errorf("%sline %d, column %d: %w", what, pe.Line, pe.Column, pe.Err)}
	}
	return &csvError{path, pe.StartLine, fmt.Errorf("%scolumn %d: %w", what, pe.Column, pe.Err)}
}

// nonNegative parses a non-negative integer field.
func nonNegative(get func(string) string, name string) (int64, error) {
	s := get(name)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("column %s: %q is not an integer", name, s)
	}
	if v < 0 {
		return 0, fmt.Errorf("column %s: %d is negative", name, v)
	}
	return v, nil
}

// readNodes reads an openb node list.
func readNodes(path string) ([]traceNode, error) {
	var nodes []traceNode
	seen := map[string]bool{}
	err := readCSV(path, []string{"sn", "cpu_milli", "memory_mib", "gpu", "model"}, func(get func(string) string) error {
		n := traceNode{name: get("sn"), model: get("model")}
		var err error
		if n.name == "" {
			return errors.New("column sn is empty")
		}
		if seen[n.name] {
			return fmt.Errorf("node %s appears twice", n.name)
		}
		seen[n.name] = true
		if n.cpuMilli, err = nonNegative(get, "cpu_milli"); err != nil {
			return err
		}
		if n.memMiB, err = nonNegative(get, "memory_mib"); err != nil {
			return err
		}
		g, err := nonNegative(get, "gpu")
		if err != nil {
			return err
		}
		if g > 64 {
			return fmt.Errorf("column gpu: %d GPUs on one node; at most 64 are supported", g)
		}
		n.gpus = int(g)
		if n.gpus > 0 && n.model == "" {
			return fmt.Errorf("node %s has %d GPUs but no model", n.name, n.gpus)
		}
		nodes = append(nodes, n)
		return nil
	})
	if err == nil && len(nodes) == 0 {
		err = fmt.Errorf("%s: no nodes", path)
	}
	return nodes, err
}

// readPods reads an openb pod list. gpu_spec is optional (the multigpu
// lists lack it).
func readPods(path string) ([]tracePod, error) {
	var pods []tracePod
	err := readCSV(path, []string{"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"}, func(get func(string) string) error {
		p := tracePod{name: get("name")}
		if p.name == "" {
			return errors.New("column name is empty")
		}
		var err error
		if p.cpuMilli, err = nonNegative(get, "cpu_milli"); err != nil {
			return err
		}
		if p.memMiB, err = nonNegative(get, "memory_mib"); err != nil {
			return err
		}
		n, err := nonNegative(get, "num_gpu")
		if err != nil {
			return err
		}
		m, err := nonNegative(get, "gpu_milli")
		if err != nil {
			return err
		}
		p.numGPU, p.gpuMilli = int(n), int(m)
		switch {
		case p.numGPU > 64:
			return fmt.Errorf("column num_gpu: %d GPUs; at most 64 are supported", p.numGPU)
		case p.gpuMilli > 1000:
			return fmt.Errorf("column gpu_milli: %d is more than one GPU (1000)", p.gpuMilli)
		case (p.numGPU == 0) != (p.gpuMilli == 0):
			return fmt.Errorf("num_gpu %d with gpu_milli %d: both or neither must be zero", p.numGPU, p.gpuMilli)
		case p.numGPU > 1 && p.gpuMilli != 1000:
			return fmt.Errorf("num_gpu %d with gpu_milli %d: multi-GPU pods take whole GPUs", p.numGPU, p.gpuMilli)
		case p.gpuMilli%10 != 0:
			// Tessera shares GPUs in percent.
			return fmt.Errorf("column gpu_milli: %d is not a whole percent of a GPU", p.gpuMilli)
		}
		p.spec = get("gpu_spec")
		for _, m := range strings.Split(p.spec, "|") {
			if m = strings.TrimSpace(m); m != "" && !slices.Contains(p.models, m) {
				p.models = append(p.models, m)
			}
		}
		if p.numGPU == 0 {
			p.models, p.spec = nil, ""
		}
		pods = append(pods, p)
		return nil
	})
	if err == nil && len(pods) == 0 {
		err = fmt.Errorf("%s: no pods", path)
	}
	return pods, err
}

// arrivals orders the pods as the published protocol does: sorted by name,
// shuffled by seed, then topped up by resampling until the GPU demand is
// topUp times the cluster's capacity, or trimmed by removing random pods
// when it is above that.
func arrivals(pods []tracePod, capacityMilli int64, topUp float64, seed int64) []tracePod {
	rng := rand.New(rand.NewSource(seed))
	out := slices.Clone(pods)
	slices.SortFunc(out, func(a, b tracePod) int { return cmp.Compare(a.name, b.name) })
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	target := int64(topUp * float64(capacityMilli))
	var total int64
	for i := range out {
		total += out[i].demand()
	}
	for total < target {
		p := pods[rng.Intn(len(pods))]
		if total+p.demand() > target {
			break
		}
		out = append(out, p)
		total += p.demand()
	}
	for total > target && len(out) > 0 {
		i := rng.Intn(len(out))
		total -= out[i].demand()
		out = slices.Delete(out, i, i+1)
	}
	return out
}

// oracleClasses is the workload the published experiments gave their
// scheduler in advance: the pod shapes of the whole list, most common
// first, until they cover coverage of the pods.
func oracleClasses(pods []tracePod, coverage float64) []shapeCount {
	counts := map[shapeKey]int{}
	for _, p := range pods {
		counts[shapeKey{p.cpuMilli, p.gpuMilli, p.numGPU, p.spec}]++
	}
	var all []shapeCount
	for k, n := range counts {
		all = append(all, shapeCount{k, n})
	}
	slices.SortFunc(all, func(a, b shapeCount) int {
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(b.key.cpu, a.key.cpu), cmp.Compare(b.key.milli, a.key.milli),
			cmp.Compare(b.key.gpus, a.key.gpus), cmp.Compare(b.key.spec, a.key.spec))
	})
	var kept []shapeCount
	covered := 0
	for _, s := range all {
		if float64(covered) >= coverage*float64(len(pods)) {
			break
		}
		kept = append(kept, s)
		covered += s.n
	}
	return kept
}

type shapeKey struct {
	cpu   int64
	milli int
	gpus  int
	spec  string
}

type shapeCount struct {
	key shapeKey
	n   int
}
