package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
)

// Format is an output format of Write.
type Format string

const (
	// Table is the default: one row per GPU with its holders, then the
	// pending pods.
	Table Format = ""
	// Wide adds full UUIDs, memory, NUMA node, NVLink peers, heartbeat and
	// health ages, the pods on GPU nodes that hold no GPU, and the pending
	// pods' model lists.
	Wide Format = "wide"
	// JSON is the Snapshot as indented JSON, for scripts.
	JSON Format = "json"
)

// Formats lists the accepted formats by name, for flag help.
var Formats = []string{"wide", "json"}

// ParseFormat turns an -o value into a Format.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Table, Wide, JSON:
		return f, nil
	}
	return "", fmt.Errorf("unknown output format %q; use one of: %s", s, strings.Join(Formats, ", "))
}

// Print writes the snapshot as tables.
func (s *Snapshot) Print(w io.Writer) {
	_ = s.Write(w, Table)
}

// Write writes the snapshot in the format. Tables are left out for sections
// with nothing in them; callers say "nothing found" as they see fit.
func (s *Snapshot) Write(w io.Writer, f Format) error {
	if f == JSON {
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	wide := f == Wide
	if len(s.Nodes) > 0 {
		s.writeNodes(w, wide)
		s.writeNodeEvents(w)
	}
	if len(s.Pending) > 0 {
		if len(s.Nodes) > 0 {
			fmt.Fprintln(w)
		}
		s.writePending(w, wide)
	}
	return nil
}

func (s *Snapshot) writeNodes(w io.Writer, wide bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	cols := []string{"NODE", "GPU", "MODEL", "HEALTH", "TAINTS", "USED", "HELD BY"}
	if wide {
		cols = []string{"NODE", "HEARTBEAT", "GPU", "UUID", "MODEL", "MEMORY", "NUMA", "NVLINK", "HEALTH", "TAINTS", "USED", "HELD BY"}
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
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

func (s *Snapshot) writePending(w io.Writer, wide bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if wide {
		fmt.Fprintln(tw, "PENDING POD\tREQUEST\tMODELS\tWHY")
	} else {
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
