// Package report renders who holds which GPU: for every node, each GPU with
// its model, health, taints and the pods holding shares of it, plus the GPU
// pods still pending and why. The demo prints it; it reads only the API.
package report

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
)

// Holder is a pod container's share of one GPU.
type Holder struct {
	Pod       string
	Container string
	Percent   int
}

// GPURow is one GPU and its holders.
type GPURow struct {
	GPU     v1alpha1.GPU
	Holders []Holder
	Used    int
}

// NodeRow is one node's GPUs.
type NodeRow struct {
	Name string
	GPUs []GPURow
	// Other lists bound pods on the node that hold no GPU.
	Other []string
}

// Pending is a pod not yet placed, with the scheduler's last word on it.
type Pending struct {
	Pod    string
	Reason string
}

// Snapshot is the whole picture.
type Snapshot struct {
	Nodes   []NodeRow
	Pending []Pending
}

// Take reads GPUNodes, pods and FailedScheduling events for pods of the
// given scheduler.
func Take(ctx context.Context, kube kubernetes.Interface, gpus versioned.Interface, schedulerName string) (*Snapshot, error) {
	gns, err := gpus.TesseraV1alpha1().GPUNodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing GPUNodes: %w", err)
	}
	pods, err := kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	rows := map[string]*NodeRow{}
	rowOf := map[string]*GPURow{}
	for _, n := range nodes.Items {
		rows[n.Name] = &NodeRow{Name: n.Name}
	}
	for i := range gns.Items {
		gn := &gns.Items[i]
		r := rows[gn.Name]
		if r == nil {
			r = &NodeRow{Name: gn.Name}
			rows[gn.Name] = r
		}
		admin := map[string][]v1alpha1.DeviceTaint{}
		for _, t := range gn.Spec.DeviceTaints {
			admin[t.UUID] = append(admin[t.UUID], t.DeviceTaint)
		}
		for _, g := range gn.Status.GPUs {
			// Show the taints the scheduler applies: the device plugin's
			// and the administrator's.
			g.Taints = append(g.Taints, admin[g.UUID]...)
			r.GPUs = append(r.GPUs, GPURow{GPU: g})
		}
	}
	for _, r := range rows {
		for i := range r.GPUs {
			rowOf[r.GPUs[i].GPU.UUID] = &r.GPUs[i]
		}
	}
	snap := &Snapshot{}
	for i := range pods.Items {
		p := &pods.Items[i]
		name := p.Namespace + "/" + p.Name
		if p.Spec.NodeName == "" {
			if p.Spec.SchedulerName == schedulerName {
				snap.Pending = append(snap.Pending, Pending{Pod: name, Reason: lastFailure(ctx, kube, p)})
			}
			continue
		}
		if p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
			continue
		}
		raw, ok := p.Annotations[assignment.Annotation]
		if !ok {
			if r := rows[p.Spec.NodeName]; r != nil {
				r.Other = append(r.Other, name)
			}
			continue
		}
		a, err := assignment.Parse(raw)
		if err != nil {
			if r := rows[p.Spec.NodeName]; r != nil {
				r.Other = append(r.Other, name+" (unreadable assignment)")
			}
			continue
		}
		for _, c := range a.Containers() {
			for _, d := range a[c] {
				if g := rowOf[d.UUID]; g != nil {
					g.Holders = append(g.Holders, Holder{Pod: name, Container: c, Percent: d.Percent})
					g.Used += d.Percent
				}
			}
		}
	}
	for _, r := range rows {
		snap.Nodes = append(snap.Nodes, *r)
	}
	sort.Slice(snap.Nodes, func(i, j int) bool { return snap.Nodes[i].Name < snap.Nodes[j].Name })
	sort.Slice(snap.Pending, func(i, j int) bool { return snap.Pending[i].Pod < snap.Pending[j].Pod })
	return snap, nil
}

// lastFailure returns the message of the pod's latest FailedScheduling event.
func lastFailure(ctx context.Context, kube kubernetes.Interface, p *v1.Pod) string {
	evs, err := kube.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: fields.AndSelectors(
		fields.OneTermEqualSelector("involvedObject.name", p.Name),
		fields.OneTermEqualSelector("involvedObject.uid", string(p.UID))).String()})
	if err != nil || len(evs.Items) == 0 {
		return "not yet attempted"
	}
	latest := evs.Items[0]
	for _, e := range evs.Items[1:] {
		if eventTime(e).After(eventTime(latest)) {
			latest = e
		}
	}
	return latest.Message
}

func eventTime(e v1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	default:
		return e.CreationTimestamp.Time
	}
}

// Print writes the snapshot as tables.
func (s *Snapshot) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tGPU\tMODEL\tHEALTH\tTAINTS\tUSED\tHELD BY")
	for _, n := range s.Nodes {
		if len(n.GPUs) == 0 {
			other := "-"
			if len(n.Other) > 0 {
				other = strings.Join(n.Other, ", ")
			}
			fmt.Fprintf(tw, "%s\t-\t(no GPUs)\t\t\t\t%s\n", n.Name, other)
			continue
		}
		for i, g := range n.GPUs {
			name := ""
			if i == 0 {
				name = n.Name
			}
			health := "ok"
			if !g.GPU.Health.Healthy {
				health = "unhealthy"
				if g.GPU.Health.Reason != "" {
					health += " (" + g.GPU.Health.Reason + ")"
				}
			}
			var taints []string
			for _, t := range g.GPU.Taints {
				taints = append(taints, fmt.Sprintf("%s=%s:%s", t.Key, t.Value, t.Effect))
			}
			var holders []string
			for _, h := range g.Holders {
				holders = append(holders, fmt.Sprintf("%s[%s] %d%%", h.Pod, h.Container, h.Percent))
			}
			fmt.Fprintf(tw, "%s\t%d %s\t%s\t%s\t%s\t%d%%\t%s\n", name, g.GPU.Index, short(g.GPU.UUID), g.GPU.Model, health,
				dash(strings.Join(taints, ",")), g.Used, dash(strings.Join(holders, ", ")))
		}
		if len(n.Other) > 0 {
			fmt.Fprintf(tw, "\t\t\t\t\t\tno GPU: %s\n", strings.Join(n.Other, ", "))
		}
	}
	tw.Flush()
	if len(s.Pending) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PENDING POD\tWHY")
	for _, p := range s.Pending {
		fmt.Fprintf(tw, "%s\t%s\n", p.Pod, p.Reason)
	}
	tw.Flush()
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
