package report

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
)

// PrintOptions change how the tables are written.
type PrintOptions struct {
	// Wide adds full UUIDs, memory, NUMA node, NVLink peers, heartbeat and
	// health ages, the pods on GPU nodes that hold no GPU, and the pending
	// pods' model lists.
	Wide bool
	// NoHeaders leaves out the header lines.
	NoHeaders bool
}

// Print writes the snapshot as tables.
func (s *Snapshot) Print(w io.Writer) {
	s.WriteTables(w, PrintOptions{})
}

// WriteTables writes one row per GPU with its holders, then the pending
// pods. Tables are left out for sections with nothing in them; callers say
// "nothing found" as they see fit.
func (s *Snapshot) WriteTables(w io.Writer, o PrintOptions) {
	if len(s.Nodes) > 0 {
		s.writeNodes(w, o)
		s.writeNodeEvents(w)
	}
	if len(s.Pending) > 0 {
		if len(s.Nodes) > 0 && !o.NoHeaders {
			fmt.Fprintln(w)
		}
		s.writePending(w, o)
	}
}

// WriteSummary writes one row per node, for clusters too large to list
// every GPU, then the pending pods.
func (s *Snapshot) WriteSummary(w io.Writer, o PrintOptions) {
	if len(s.Nodes) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		cols := []string{"NODE", "MODELS", "GPUS", "FREE", "PARTIAL", "FULL", "UNHEALTHY", "ALLOCATED"}
		if o.Wide {
			cols = append(cols, "HEARTBEAT", "PODS", "NOTES")
		}
		if !o.NoHeaders {
			fmt.Fprintln(tw, strings.Join(cols, "\t"))
		}
		for _, n := range s.Summaries() {
			cells := []string{n.Name, dash(n.Models), fmt.Sprint(n.GPUs), fmt.Sprint(n.Free), fmt.Sprint(n.Partial),
				fmt.Sprint(n.Full), fmt.Sprint(n.Unhealthy), fmt.Sprintf("%s/%d", strconv.FormatFloat(n.Allocated, 'f', -1, 64), n.GPUs)}
			if o.Wide {
				var notes []string
				if n.UnknownPods > 0 {
					notes = append(notes, pods(n.UnknownPods)+" of unknown GPU use")
				}
				if n.UnrecordedPods > 0 {
					notes = append(notes, pods(n.UnrecordedPods)+" not recorded yet")
				}
				cells = append(cells, s.age(n.HeartbeatTime), fmt.Sprint(n.Pods), dash(strings.Join(notes, ", ")))
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		tw.Flush()
	}
	if len(s.Pending) > 0 {
		if len(s.Nodes) > 0 && !o.NoHeaders {
			fmt.Fprintln(w)
		}
		s.writePending(w, o)
	}
}

// pods says "1 pod" or "n pods".
func pods(n int) string {
	if n == 1 {
		return "1 pod"
	}
	return fmt.Sprintf("%d pods", n)
}

// NodeSummary is one node's GPUs counted by state.
type NodeSummary struct {
	Name string `json:"name"`
	// Models lists the node's distinct GPU models, comma-separated.
	Models string `json:"models"`
	// GPUs counts the node's GPUs; Free, Partial and Full the healthy ones
	// with nothing, some or all of them held; Unhealthy the rest.
	GPUs      int `json:"gpus"`
	Free      int `json:"free"`
	Partial   int `json:"partial"`
	Full      int `json:"full"`
	Unhealthy int `json:"unhealthy"`
	// Allocated is the GPUs' worth held (a 40% share counts 0.4).
	Allocated float64 `json:"allocated"`
	// Pods counts the distinct pods holding GPUs.
	Pods int `json:"pods"`
	// UnknownPods and UnrecordedPods count the node's pods of unknown and
	// of not yet recorded GPU use.
	UnknownPods    int          `json:"unknownPods,omitempty"`
	UnrecordedPods int          `json:"unrecordedPods,omitempty"`
	HeartbeatTime  *metav1.Time `json:"heartbeatTime,omitempty"`
}

// Summaries counts each node's GPUs by state.
func (s *Snapshot) Summaries() []NodeSummary {
	out := make([]NodeSummary, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		sum := NodeSummary{Name: n.Name, GPUs: len(n.GPUs), UnknownPods: len(n.Unknown), UnrecordedPods: len(n.Unrecorded),
			HeartbeatTime: n.HeartbeatTime}
		models := map[string]bool{}
		pods := map[string]bool{}
		units := 0
		for _, g := range n.GPUs {
			models[g.Model] = true
			units += min(g.Used, 100)
			switch {
			case !g.Health.Healthy:
				sum.Unhealthy++
			case g.Used == 0:
				sum.Free++
			case g.Used >= 100:
				sum.Full++
			default:
				sum.Partial++
			}
			for _, h := range g.Holders {
				pods[h.Namespace+"/"+h.Pod] = true
			}
		}
		sum.Models = strings.Join(slices.Sorted(maps.Keys(models)), ",")
		sum.Allocated = float64(units) / 100
		sum.Pods = len(pods)
		out = append(out, sum)
	}
	return out
}

// GPUItem is one GPU with its node, the unit of `-o custom-columns` in the
// GPU views.
type GPUItem struct {
	Node string `json:"node"`
	GPURow
}

// GPUItems lists every GPU of the snapshot with its node.
func (s *Snapshot) GPUItems() []GPUItem {
	var out []GPUItem
	for _, n := range s.Nodes {
		for _, g := range n.GPUs {
			out = append(out, GPUItem{Node: n.Name, GPURow: g})
		}
	}
	return out
}

func (s *Snapshot) writeNodes(w io.Writer, o PrintOptions) {
	wide := o.Wide
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	cols := []string{"NODE", "GPU", "MODEL", "HEALTH", "TAINTS", "USED", "HELD BY"}
	if wide {
		cols = []string{"NODE", "HEARTBEAT", "GPU", "UUID", "MODEL", "MEMORY", "NUMA", "NVLINK", "HEALTH", "TAINTS", "USED", "HELD BY"}
	}
	if !o.NoHeaders {
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	// note puts a line under a node's rows, in the HELD BY column.
	note := func(text string) {
		fmt.Fprintln(tw, strings.Repeat("\t", len(cols)-1)+text)
	}
	for _, n := range s.Nodes {
		if len(n.GPUs) == 0 {
			what := "(no GPUs)"
			if !n.HasInventory {
				what = "(no GPUNode)"
			}
			cells := []string{n.Name, "-", what, "", "", "", dash(strings.Join(n.Other, ", "))}
			if wide {
				cells = []string{n.Name, s.age(n.HeartbeatTime), "-", "", what, "", "", "", "", "", "", dash(strings.Join(n.Other, ", "))}
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		for i, g := range n.GPUs {
			name, heartbeat := "", ""
			if i == 0 {
				name, heartbeat = n.Name, s.age(n.HeartbeatTime)
				if n.Source == SourceDRA {
					// A DRA driver's node: no heartbeat, claims hold the GPUs.
					name, heartbeat = n.Name+" (dra)", "-"
				}
			}
			cells := []string{name, fmt.Sprintf("%d %s", g.Index, short(g.UUID)), g.Model, health(g.Health, nil), taints(g.Taints),
				fmt.Sprintf("%d%%", g.Used), holders(g.Holders)}
			if wide {
				cells = []string{name, heartbeat, fmt.Sprint(g.Index), g.UUID, g.Model, fmt.Sprintf("%dMi", g.MemoryMiB), numa(g.NUMANode),
					fmt.Sprint(len(g.NVLinkPeers)), health(g.Health, s.age), taints(g.Taints), fmt.Sprintf("%d%%", g.Used), holders(g.Holders)}
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		if len(n.Unknown) > 0 {
			note("unknown GPU use, node counts as full: " + strings.Join(n.Unknown, ", "))
		}
		if len(n.Unrecorded) > 0 {
			note("GPU use not recorded yet, counted as asked: " + strings.Join(n.Unrecorded, ", "))
		}
		if wide && len(n.GPUs) > 0 && len(n.Other) > 0 {
			note("no GPU: " + strings.Join(n.Other, ", "))
		}
	}
	tw.Flush()
}

// writeNodeEvents lists each node's GPUNode events under the table, as
// kubectl describe lists an object's events.
func (s *Snapshot) writeNodeEvents(w io.Writer) {
	for _, n := range s.Nodes {
		if len(n.Events) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nEvents of GPUNode %s:\n", n.Name)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  LAST SEEN\tTYPE\tREASON\tFROM\tMESSAGE")
		for _, e := range n.Events {
			seen := s.age(&metav1.Time{Time: e.LastSeen})
			if e.Count > 1 {
				seen += fmt.Sprintf(" (x%d)", e.Count)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", seen, e.Type, e.Reason, dash(e.Source), oneLine(e.Message))
		}
		tw.Flush()
	}
}

func (s *Snapshot) writePending(w io.Writer, o PrintOptions) {
	wide := o.Wide
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch {
	case o.NoHeaders:
	case wide:
		fmt.Fprintln(tw, "PENDING POD\tREQUEST\tMODELS\tWHY")
	default:
		fmt.Fprintln(tw, "PENDING POD\tREQUEST\tWHY")
	}
	for _, p := range s.Pending {
		if wide {
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\n", p.Namespace, p.Pod, p.Request, dash(p.Models), oneLine(p.Reason))
		} else {
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\n", p.Namespace, p.Pod, p.Request, oneLine(p.Reason))
		}
	}
	tw.Flush()
}

// age is how long ago t was, as kubectl shows ages; "-" for none.
func (s *Snapshot) age(t *metav1.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	now := s.Now
	if now.IsZero() {
		now = time.Now()
	}
	return duration.HumanDuration(now.Sub(t.Time)) + " ago"
}

func health(h v1alpha1.GPUHealth, age func(*metav1.Time) string) string {
	out := "ok"
	if !h.Healthy {
		out = "unhealthy"
		if h.Reason != "" {
			out += " (" + h.Reason + ")"
		}
	}
	if age != nil && h.Since != nil {
		out += " since " + strings.TrimSuffix(age(h.Since), " ago")
	}
	return out
}

func taints(ts []v1alpha1.DeviceTaint) string {
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s=%s:%s", t.Key, t.Value, t.Effect))
	}
	return dash(strings.Join(out, ","))
}

func holders(hs []Holder) string {
	var out []string
	for _, h := range hs {
		out = append(out, fmt.Sprintf("%s/%s[%s] %d%%", h.Namespace, h.Pod, h.Container, h.Percent))
	}
	return dash(strings.Join(out, ", "))
}

func numa(n int32) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// oneLine keeps a multi-line event message in its table cell.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// short trims a UUID for display; fake UUIDs are already short.
func short(uuid string) string {
	if len(uuid) > 16 && strings.HasPrefix(uuid, "GPU-") {
		return uuid[:12] + "…"
	}
	return uuid
}
