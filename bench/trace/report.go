package main

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// paperMean is the published unallocated GPU % at 100% arrived (mean ± sd
// over seeds 42-51) per trace and policy, from the FGD paper's artifact
// (see ../shared/notes/fgd.md §5.2).
var paperMean = map[string]map[string][2]float64{
	"default":     {"Random": {13.70, 0.33}, "DotProd": {9.38, 0.19}, "Clustering": {8.35, 0.61}, "Packing": {8.22, 0.53}, "BestFit": {7.14, 0.14}, "FGD": {4.77, 0.11}},
	"cpu050":      {"Random": {10.98, 0.26}, "DotProd": {6.97, 0.19}, "Clustering": {6.48, 0.34}, "Packing": {6.54, 0.32}, "BestFit": {6.44, 0.13}, "FGD": {5.00, 0.11}},
	"cpu100":      {"Random": {12.57, 0.28}, "DotProd": {8.27, 0.27}, "Clustering": {7.58, 0.40}, "Packing": {7.50, 0.42}, "BestFit": {6.74, 0.13}, "FGD": {4.79, 0.14}},
	"cpu200":      {"Random": {16.97, 0.27}, "DotProd": {12.55, 0.61}, "Clustering": {10.33, 0.38}, "Packing": {10.02, 0.48}, "BestFit": {7.85, 0.21}, "FGD": {5.18, 0.16}},
	"cpu250":      {"Random": {20.00, 0.33}, "DotProd": {16.43, 0.45}, "Clustering": {12.25, 0.61}, "Packing": {11.95, 0.68}, "BestFit": {8.79, 0.25}, "FGD": {6.80, 0.29}},
	"gpushare40":  {"Random": {15.14, 0.34}, "DotProd": {10.70, 0.14}, "Clustering": {10.24, 0.62}, "Packing": {10.23, 0.53}, "BestFit": {8.56, 0.20}, "FGD": {6.04, 0.07}},
	"gpushare60":  {"Random": {17.19, 0.35}, "DotProd": {13.18, 0.28}, "Clustering": {13.10, 0.41}, "Packing": {12.85, 0.37}, "BestFit": {10.94, 0.18}, "FGD": {8.75, 0.13}},
	"gpushare80":  {"Random": {19.38, 0.28}, "DotProd": {15.86, 0.19}, "Clustering": {15.50, 0.54}, "Packing": {15.35, 0.50}, "BestFit": {13.34, 0.24}, "FGD": {10.92, 0.11}},
	"gpushare100": {"Random": {21.10, 0.15}, "DotProd": {18.02, 0.30}, "Clustering": {17.78, 0.51}, "Packing": {17.87, 0.50}, "BestFit": {15.38, 0.22}, "FGD": {13.36, 0.16}},
	"multigpu20":  {"Random": {13.08, 0.52}, "DotProd": {8.15, 0.32}, "Clustering": {6.66, 0.60}, "Packing": {6.50, 0.64}, "BestFit": {6.27, 0.25}, "FGD": {4.47, 0.16}},
	"multigpu30":  {"Random": {13.37, 0.47}, "DotProd": {6.89, 0.31}, "Clustering": {5.45, 0.32}, "Packing": {5.30, 0.32}, "BestFit": {5.43, 0.24}, "FGD": {3.64, 0.10}},
	"multigpu40":  {"Random": {14.62, 0.76}, "DotProd": {5.96, 0.22}, "Clustering": {4.65, 0.30}, "Packing": {4.41, 0.31}, "BestFit": {4.90, 0.23}, "FGD": {3.09, 0.10}},
	"multigpu50":  {"Random": {18.72, 0.83}, "DotProd": {5.27, 0.20}, "Clustering": {4.31, 0.28}, "Packing": {3.94, 0.31}, "BestFit": {4.38, 0.18}, "FGD": {2.91, 0.11}},
	"gpuspec10":   {"Random": {13.74, 0.25}, "DotProd": {9.83, 0.39}, "Clustering": {8.04, 0.71}, "Packing": {7.76, 0.65}, "BestFit": {6.90, 0.21}, "FGD": {5.34, 0.19}},
	"gpuspec20":   {"Random": {14.10, 0.35}, "DotProd": {11.71, 0.17}, "Clustering": {10.89, 0.21}, "Packing": {10.72, 0.25}, "BestFit": {11.54, 0.12}, "FGD": {5.34, 0.13}},
	"gpuspec25":   {"Random": {14.58, 0.34}, "DotProd": {14.56, 0.16}, "Clustering": {13.59, 0.29}, "Packing": {13.23, 0.35}, "BestFit": {14.33, 0.20}, "FGD": {6.09, 0.11}},
	"gpuspec33":   {"Random": {16.13, 0.26}, "DotProd": {20.18, 0.25}, "Clustering": {18.91, 0.22}, "Packing": {17.78, 0.39}, "BestFit": {19.61, 0.27}, "FGD": {12.16, 0.18}},
}

// paperPolicy is the published policy each strategy is compared with.
// Tessera's binpack is not the paper's Packing scorer, only the nearest.
var paperPolicy = map[string]string{
	"random": "Random", "dotprod": "DotProd", "bestfit": "BestFit", "binpack": "Packing",
	"fragmentation": "FGD", "fragmentation-fgd": "FGD", "fragmentation-oracle": "FGD",
}

type stat struct {
	strategy    string
	about       string
	mean, sd    float64
	seeds       int
	failed      float64
	seconds     float64
	curve       [maxArrivedPct + 1]float64
	curveOK     [maxArrivedPct + 1]bool
	perSeed     []*result
	unallocated []float64
}

type report struct {
	trace      string
	date       time.Time
	stats      []*stat
	byStrategy map[string]*stat
}

func summarize(trace string, results []*result) *report {
	r := &report{trace: trace, date: time.Now().UTC(), byStrategy: map[string]*stat{}}
	for _, st := range strategies {
		s := &stat{strategy: st.name, about: st.about}
		var failed, seconds []float64
		for _, res := range results {
			if res.strategy != st.name {
				continue
			}
			s.perSeed = append(s.perSeed, res)
			if u, ok := res.unallocatedAt(100); ok {
				s.unallocated = append(s.unallocated, u)
			}
			// Runs saved before their counts were kept do not know them.
			if res.failed >= 0 {
				failed = append(failed, float64(res.failed))
			}
			if res.elapsed >= 0 {
				seconds = append(seconds, res.elapsed.Seconds())
			}
		}
		s.seeds = len(s.perSeed)
		if s.seeds == 0 {
			continue
		}
		slices.SortFunc(s.perSeed, func(a, b *result) int { return cmp.Compare(a.seed, b.seed) })
		s.failed, _ = meanSD(failed)
		s.seconds, _ = meanSD(seconds)
		s.mean, s.sd = meanSD(s.unallocated)
		for k := 0; k <= maxArrivedPct; k++ {
			var vals []float64
			for _, res := range s.perSeed {
				if res.count[k] > 0 {
					vals = append(vals, res.sum[k]/float64(res.count[k]))
				}
			}
			if len(vals) > 0 {
				s.curve[k], _ = meanSD(vals)
				s.curveOK[k] = true
			}
		}
		r.stats = append(r.stats, s)
		r.byStrategy[st.name] = s
	}
	return r
}

// meanSD returns the mean and the sample standard deviation.
func meanSD(v []float64) (float64, float64) {
	if len(v) == 0 {
		return math.NaN(), math.NaN()
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	mean := sum / float64(len(v))
	if len(v) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(v)-1))
}

func (r *report) markdownTable() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Trace `%s`: unallocated GPU %% when the arrived GPU demand reaches 100%% of capacity (mean ± sd over seeds).\n\n", r.trace)
	b.WriteString("| strategy | seeds | unallocated GPU % | paper policy | paper % | failed pods (mean) | seconds per run |\n")
	b.WriteString("|---|---:|---:|---|---:|---:|---:|\n")
	for _, s := range r.stats {
		policy, paper := paperPolicy[s.strategy], "-"
		if v, ok := paperMean[r.trace][policy]; ok {
			paper = fmt.Sprintf("%.2f ± %.2f", v[0], v[1])
		} else {
			policy = "-"
		}
		fmt.Fprintf(&b, "| %s | %d | %.2f ± %.2f | %s | %s | %s | %s |\n", s.strategy, s.seeds, s.mean, s.sd, policy, paper, orDash(s.failed, "%.0f"), orDash(s.seconds, "%.1f"))
	}
	return b.String()
}

// orDash formats v, or gives "-" when it is not known (NaN).
func orDash(v float64, format string) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// write saves <trace>.md, <trace>.csv, <trace>-runs.csv and <trace>.svg
// under dir. args is the command line; kept says that it kept earlier
// invocations' runs (-keep).
func (r *report) write(dir string, args []string, kept bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Trace replay: `%s`\n\n", r.trace)
	fmt.Fprintf(&md, "Made on %s with:\n\n```\ngo run ./bench/trace %s\n```\n\n", r.date.Format("2006-01-02"), strings.Join(args, " "))
	if kept {
		fmt.Fprintf(&md, "With `-keep`, the runs of earlier invocations for other strategies and seeds were kept; [%s-runs.csv](%s-runs.csv) dates each run.\n\n", r.trace, r.trace)
	}
	md.WriteString(r.markdownTable())
	md.WriteString("\nStrategies:\n\n")
	for _, s := range r.stats {
		fmt.Fprintf(&md, "- `%s`: %s\n", s.strategy, s.about)
	}
	// Seeds as columns; a strategy stopped part way shows "-" for the rest.
	var seeds []int64
	for _, s := range r.stats {
		for _, res := range s.perSeed {
			if !slices.Contains(seeds, res.seed) {
				seeds = append(seeds, res.seed)
			}
		}
	}
	fmt.Fprintf(&md, "\nPer seed (unallocated GPU %% at 100%% arrived):\n\n| strategy |")
	for _, seed := range seeds {
		fmt.Fprintf(&md, " %d |", seed)
	}
	md.WriteString("\n|---|")
	for range seeds {
		md.WriteString("---:|")
	}
	md.WriteString("\n")
	for _, s := range r.stats {
		fmt.Fprintf(&md, "| %s |", s.strategy)
		for _, seed := range seeds {
			cell := " - |"
			for _, res := range s.perSeed {
				if u, ok := res.unallocatedAt(100); ok && res.seed == seed {
					cell = fmt.Sprintf(" %.2f |", u)
				}
			}
			md.WriteString(cell)
		}
		md.WriteString("\n")
	}
	fmt.Fprintf(&md, "\nCurves: [%s.csv](%s.csv); plot: ![unallocated GPU against arrived load](%s.svg)\n", r.trace, r.trace, r.trace)
	if err := replaceFile(filepath.Join(dir, r.trace+".md"), md.String()); err != nil {
		return err
	}

	var csv strings.Builder
	csv.WriteString(curveHeader + "\n")
	var all []*result
	for _, s := range r.stats {
		all = append(all, s.perSeed...)
		for _, res := range s.perSeed {
			for k := 0; k <= maxArrivedPct; k++ {
				if res.count[k] > 0 {
					fmt.Fprintf(&csv, "%s,%s,%d,%d,%.4f\n", r.trace, s.strategy, res.seed, k, res.sum[k]/float64(res.count[k]))
				}
			}
		}
	}
	if err := replaceFile(filepath.Join(dir, r.trace+".csv"), csv.String()); err != nil {
		return err
	}
	if err := replaceFile(filepath.Join(dir, r.trace+"-runs.csv"), writeRuns(all)); err != nil {
		return err
	}
	return replaceFile(filepath.Join(dir, r.trace+".svg"), r.svg())
}

// svg plots the mean unallocated GPU % against the arrived load from 75% to
// 120%, like the paper's Fig. 9(a), with the ideal (everything that
// arrived is placed) for reference.
func (r *report) svg() string {
	const (
		w, h                     = 720, 420
		left, right, top, bottom = 60, 190, 20, 50
		x0, x1                   = 75, 120
	)
	yMax := 25.0
	for _, s := range r.stats {
		for k := x0; k <= x1; k++ {
			if s.curveOK[k] && s.curve[k] > yMax {
				yMax = math.Ceil(s.curve[k]/5) * 5
			}
		}
	}
	px := func(x float64) float64 { return left + (x-x0)/(x1-x0)*(w-left-right) }
	py := func(y float64) float64 { return top + (1-y/yMax)*(h-top-bottom) }
	colors := []string{"#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728", "#8c564b", "#17becf"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	for y := 0.0; y <= yMax; y += 5 {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left, w-right, py(y), py(y), left-6, py(y)+4, y)
	}
	for x := x0; x <= x1; x += 5 {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", px(float64(x)), px(float64(x)), top, h-bottom, px(float64(x)), h-bottom+16, x)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">arrived GPU demand (%% of capacity)</text>`+"\n", px((x0+x1)/2), h-12)
	fmt.Fprintf(&b, `<text transform="translate(16,%.1f) rotate(-90)" text-anchor="middle">unallocated GPU (%%)</text>`+"\n", py(yMax/2))
	// The ideal: below saturation only what has not arrived is idle.
	fmt.Fprintf(&b, `<polyline fill="none" stroke="black" stroke-dasharray="4 3" points="%.1f,%.1f %.1f,%.1f %.1f,%.1f"/>`+"\n",
		px(x0), py(100-x0), px(100), py(0), px(x1), py(0))
	legend := func(i int, color, label string, dashed bool) {
		y := float64(top + 16*i + 8)
		dash := ""
		if dashed {
			dash = ` stroke-dasharray="4 3"`
		}
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/><text x="%d" y="%.1f">%s</text>`+"\n",
			w-right+10, w-right+30, y, y, color, dash, w-right+36, y+4, label)
	}
	legend(0, "black", "ideal", true)
	for i, s := range r.stats {
		var pts []string
		for k := x0; k <= x1; k++ {
			if s.curveOK[k] {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(float64(k)), py(s.curve[k])))
			}
		}
		c := colors[i%len(colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		legend(i+1, c, s.strategy, false)
	}
	if v, ok := paperMean[r.trace]["FGD"]; ok {
		// The paper's FGD at 100% arrived, for reference.
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="none" stroke="black"/>`+"\n", px(100), py(v[0]))
		legend(len(r.stats)+1, "none", fmt.Sprintf("○ paper FGD %.2f%%", v[0]), false)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
