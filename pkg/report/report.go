// Package report renders who holds which GPU: for every node, each GPU with
// its model, health, taints and the pods holding shares of it, plus the GPU
// pods still pending and the scheduler's last word on why. The demo and
// kubectl-tessera print it; it reads only the API, the way the scheduler's
// cache does (allocation is derived from the pods' tessera.io/gpu-assignment
// annotations, never stored in the GPUNode).
package report

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podgpu"
)

// ErrNoGPUNodeAPI is wrapped by Take's error when the cluster does not serve
// the GPUNode resource, i.e. Tessera's CRD is not installed.
var ErrNoGPUNodeAPI = errors.New("the cluster does not serve gpunodes.tessera.io")

// NotYetAttempted is the reason shown for a pending pod that the scheduler
// has not yet failed to place: it has neither an Unschedulable condition nor
// a FailedScheduling event.
const NotYetAttempted = "not yet attempted"

// EventsForbidden is the reason shown for a pending pod without a
// PodScheduled condition when the user may not list events.
const EventsForbidden = "unknown: you may not list events"

// Holder is a pod container's share of one GPU.
type Holder struct {
	// Namespace and Pod name the pod.
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// Container is the container the share is assigned to.
	Container string `json:"container"`
	// Percent is the share; whole GPUs hold 100.
	Percent int `json:"percent"`
}

// GPURow is one GPU as the inventory reports it, with the administrator's
// device taints merged into Taints, and the pods holding it.
type GPURow struct {
	v1alpha1.GPU
	// Used is the sum of the holders' percents.
	Used int `json:"used"`
	// Holders are the containers holding shares, ordered by pod.
	Holders []Holder `json:"holders"`
}

// NodeRow is one node's GPUs.
type NodeRow struct {
	// Name is the node's name.
	Name string `json:"name"`
	// HasInventory is false for a node without a GPUNode or GPUs of a DRA
	// driver.
	HasInventory bool `json:"hasInventory"`
	// Source is "DRA" for a node whose GPUs a DRA driver publishes in
	// ResourceSlices (no GPUNode): its GPUs are held through allocated
	// ResourceClaims, each device whole. Empty for a GPUNode.
	Source string `json:"source,omitempty"`
	// HeartbeatTime is the GPUNode's heartbeat; the scheduler places no new
	// GPU pods on a node whose heartbeat is older than its
	// inventoryStaleness.
	HeartbeatTime *metav1.Time `json:"heartbeatTime,omitempty"`
	// DriverVersion is the NVIDIA driver version the inventory reports.
	DriverVersion string `json:"driverVersion,omitempty"`
	// GPUs are the node's GPUs by index.
	GPUs []GPURow `json:"gpus"`
	// Unknown lists bound pods whose GPUs cannot be accounted for (an
	// invalid request, or an assignment naming GPUs the inventory does not
	// have), each with the problem. The scheduler treats such a node as
	// full until they go, so that nothing is double-booked.
	Unknown []string `json:"unknownPods,omitempty"`
	// Unrecorded lists bound pods that ask for GPUs without a usable
	// assignment (placed by another scheduler, or their annotation
	// damaged), each with what it asks and why. The scheduler counts each
	// as the GPUs it asks for until the node's device plugin records which
	// it holds.
	Unrecorded []string `json:"unrecordedPods,omitempty"`
	// Other lists bound pods on the node that hold no GPU.
	Other []string `json:"otherPods,omitempty"`
	// Events are the GPUNode's latest events, oldest first, when
	// Options.NodeEvents asked for them.
	Events []NodeEvent `json:"events,omitempty"`
}

// Pending is a pod not yet placed, with the scheduler's last word on it.
type Pending struct {
	// Namespace and Pod name the pod.
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// Request summarises what the pod asks for, e.g. "2 gpus" or "30%".
	Request string `json:"request"`
	// Models is the pod's tessera.io/gpu-models annotation, if any.
	Models string `json:"models,omitempty"`
	// Reason is the message of the pod's PodScheduled=False condition; for a
	// pod without one, that of its latest FailedScheduling event, or
	// NotYetAttempted.
	Reason string `json:"reason"`
}

// Snapshot is the whole picture.
type Snapshot struct {
	// Nodes are sorted by name; nil when Options.NoNodes was set.
	Nodes []NodeRow `json:"nodes,omitempty"`
	// Pending are sorted by namespace and name; nil when
	// Options.NoPending was set.
	Pending []Pending `json:"pending,omitempty"`
	// Missing lists the nodes asked for by name that have neither a Node
	// nor a GPUNode.
	Missing []string `json:"missing,omitempty"`
	// Now is when the snapshot was taken; heartbeat ages are relative to it.
	Now time.Time `json:"-"`
}

// Options choose what Take reads.
type Options struct {
	// SchedulerName selects the pending pods to report: those with this
	// spec.schedulerName.
	SchedulerName string
	// Nodes limits the node rows to these nodes. Empty means every node with
	// a GPUNode, plus every node when AllNodes is set.
	Nodes []string
	// AllNodes adds nodes without a GPUNode (CPU nodes) to the rows.
	AllNodes bool
	// Namespace limits pending pods to one namespace; empty means all.
	Namespace string
	// NoNodes skips the node rows; NoPending skips the pending pods.
	NoNodes, NoPending bool
	// NodeEvents adds each node's latest GPUNode events (health changes,
	// unusable inventory) to its row.
	NodeEvents bool
	// NodeSelector, a label selector, limits the node rows to the nodes
	// whose Node labels match it.
	NodeSelector string
}

// pageSize bounds each list call, so that a large cluster is read in pages
// rather than in one response of every pod.
const pageSize = 500

// eachPage lists with list in pages of pageSize, calling each on every
// page's items.
func eachPage[L any](ctx context.Context, opts metav1.ListOptions, list func(context.Context, metav1.ListOptions) (L, error), each func(L) error, cont func(L) string) error {
	opts.Limit = pageSize
	for {
		page, err := list(ctx, opts)
		if err != nil {
			return err
		}
		if err := each(page); err != nil {
			return err
		}
		if opts.Continue = cont(page); opts.Continue == "" {
			return nil
		}
	}
}

// listEvents lists the core/v1 events of namespace matching sel, in pages.
func listEvents(ctx context.Context, kube kubernetes.Interface, namespace string, sel fields.Selector) ([]v1.Event, error) {
	var out []v1.Event
	err := eachPage(ctx, metav1.ListOptions{FieldSelector: sel.String()}, kube.CoreV1().Events(namespace).List,
		func(l *v1.EventList) error { out = append(out, l.Items...); return nil },
		func(l *v1.EventList) string { return l.Continue })
	return out, err
}

// ListNodes lists the nodes matching opts, in pages.
func ListNodes(ctx context.Context, kube kubernetes.Interface, opts metav1.ListOptions) ([]v1.Node, error) {
	var out []v1.Node
	err := eachPage(ctx, opts, kube.CoreV1().Nodes().List,
		func(l *v1.NodeList) error { out = append(out, l.Items...); return nil },
		func(l *v1.NodeList) string { return l.Continue })
	return out, err
}

// ListPods lists the pods of namespace matching opts, in pages.
func ListPods(ctx context.Context, kube kubernetes.Interface, namespace string, opts metav1.ListOptions) ([]v1.Pod, error) {
	var out []v1.Pod
	err := eachPage(ctx, opts, kube.CoreV1().Pods(namespace).List,
		func(l *v1.PodList) error { out = append(out, l.Items...); return nil },
		func(l *v1.PodList) string { return l.Continue })
	return out, err
}

// MaxNodeEvents is how many of a GPUNode's latest events a row keeps.
const MaxNodeEvents = 10

// NodeEvent is an event about a node's GPUNode.
type NodeEvent struct {
	// Type is Normal or Warning.
	Type string `json:"type"`
	// Reason is the event's reason, e.g. GPUUnhealthy.
	Reason string `json:"reason"`
	// Message is the event's message.
	Message string `json:"message"`
	// Count is how often it was seen.
	Count int32 `json:"count"`
	// LastSeen is when it was last seen.
	LastSeen time.Time `json:"lastSeen"`
	// Source is the component that reported it.
	Source string `json:"source,omitempty"`
}

// Take reads GPUNodes, nodes, pods and FailedScheduling events.
func Take(ctx context.Context, kube kubernetes.Interface, gpus versioned.Interface, opts Options) (*Snapshot, error) {
	snap := &Snapshot{Now: time.Now()}
	if !opts.NoNodes {
		nodes, missing, err := nodeRows(ctx, kube, gpus, opts)
		if err != nil {
			return nil, err
		}
		snap.Nodes, snap.Missing = nodes, missing
		if snap.Nodes == nil {
			snap.Nodes = []NodeRow{}
		}
	}
	if !opts.NoPending {
		pending, err := pendingPods(ctx, kube, opts)
		if err != nil {
			return nil, err
		}
		snap.Pending = pending
		if snap.Pending == nil {
			snap.Pending = []Pending{}
		}
	}
	return snap, nil
}

// nodeRows builds the rows for the nodes Options select.
func nodeRows(ctx context.Context, kube kubernetes.Interface, gpus versioned.Interface, opts Options) ([]NodeRow, []string, error) {
	// The GPUNode list comes first even for named nodes: it is one object
	// per node, and it is what tells a cluster without Tessera apart.
	var gns []v1alpha1.GPUNode
	err := eachPage(ctx, metav1.ListOptions{}, gpus.TesseraV1alpha1().GPUNodes().List,
		func(l *v1alpha1.GPUNodeList) error { gns = append(gns, l.Items...); return nil },
		func(l *v1alpha1.GPUNodeList) string { return l.Continue })
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("listing GPUNodes: %w (%v)", ErrNoGPUNodeAPI, err)
		}
		return nil, nil, fmt.Errorf("listing GPUNodes: %w", err)
	}
	var selected map[string]bool
	if opts.NodeSelector != "" {
		selected = map[string]bool{}
		nodes, err := ListNodes(ctx, kube, metav1.ListOptions{LabelSelector: opts.NodeSelector})
		if err != nil {
			return nil, nil, fmt.Errorf("listing nodes with labels %s: %w", opts.NodeSelector, err)
		}
		for _, n := range nodes {
			selected[n.Name] = true
		}
	}
	rows := map[string]*NodeRow{}
	named := map[string]bool{}
	for _, n := range opts.Nodes {
		named[n] = true
	}
	for i := range gns {
		gn := &gns[i]
		if len(named) > 0 && !named[gn.Name] || selected != nil && !selected[gn.Name] {
			continue
		}
		rows[gn.Name] = inventoryRow(gn)
	}
	if err := addDRARows(ctx, kube, rows, func(name string) bool {
		return (len(named) == 0 || named[name]) && (selected == nil || selected[name])
	}); err != nil {
		return nil, nil, err
	}
	var missing []string
	switch {
	case len(named) > 0:
		for _, name := range opts.Nodes {
			if rows[name] != nil {
				continue
			}
			if _, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err != nil {
				if apierrors.IsNotFound(err) {
					if !slices.Contains(missing, name) {
						missing = append(missing, name)
					}
					continue
				}
				return nil, nil, fmt.Errorf("getting node %s: %w", name, err)
			}
			rows[name] = &NodeRow{Name: name}
		}
	case opts.AllNodes:
		nodes, err := ListNodes(ctx, kube, metav1.ListOptions{LabelSelector: opts.NodeSelector})
		if err != nil {
			return nil, nil, fmt.Errorf("listing nodes: %w", err)
		}
		for _, n := range nodes {
			if rows[n.Name] == nil {
				rows[n.Name] = &NodeRow{Name: n.Name}
			}
		}
	}
	if err := addHolders(ctx, kube, rows, opts.Nodes); err != nil {
		return nil, nil, err
	}
	if opts.NodeEvents {
		if err := addNodeEvents(ctx, kube, rows); err != nil {
			return nil, nil, err
		}
	}
	out := make([]NodeRow, 0, len(rows))
	for _, r := range rows {
		for i := range r.GPUs {
			sort.Slice(r.GPUs[i].Holders, func(a, b int) bool {
				x, y := r.GPUs[i].Holders[a], r.GPUs[i].Holders[b]
				if x.Namespace+"/"+x.Pod != y.Namespace+"/"+y.Pod {
					return x.Namespace+"/"+x.Pod < y.Namespace+"/"+y.Pod
				}
				return x.Container < y.Container
			})
		}
		sort.Strings(r.Unknown)
		sort.Strings(r.Unrecorded)
		sort.Strings(r.Other)
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, missing, nil
}

// inventoryRow is a node's row before holders are added: its GPUs, by index,
// with the administrator's device taints added to the plugin's, because the
// scheduler applies both.
func inventoryRow(gn *v1alpha1.GPUNode) *NodeRow {
	r := &NodeRow{Name: gn.Name, HasInventory: true, HeartbeatTime: gn.Status.HeartbeatTime, DriverVersion: gn.Status.DriverVersion}
	admin := map[string][]v1alpha1.DeviceTaint{}
	for _, t := range gn.Spec.DeviceTaints {
		admin[t.UUID] = append(admin[t.UUID], t.DeviceTaint)
	}
	for _, g := range gn.Status.GPUs {
		g.Taints = append(slices.Clone(g.Taints), admin[g.UUID]...)
		r.GPUs = append(r.GPUs, GPURow{GPU: g, Holders: []Holder{}})
	}
	sort.SliceStable(r.GPUs, func(i, j int) bool { return r.GPUs[i].Index < r.GPUs[j].Index })
	return r
}

// addHolders reads the bound pods of the rows' nodes and files each under
// the GPUs its assignment names, or as unknown or other.
func addHolders(ctx context.Context, kube kubernetes.Interface, rows map[string]*NodeRow, named []string) error {
	running := []fields.Selector{
		fields.OneTermNotEqualSelector("status.phase", string(v1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(v1.PodFailed)),
	}
	var pods []v1.Pod
	if len(named) > 0 {
		// One narrow list per named node rather than every pod in the
		// cluster.
		for name := range rows {
			sel := fields.AndSelectors(append([]fields.Selector{fields.OneTermEqualSelector("spec.nodeName", name)}, running...)...)
			list, err := ListPods(ctx, kube, "", metav1.ListOptions{FieldSelector: sel.String()})
			if err != nil {
				return fmt.Errorf("listing pods on node %s: %w", name, err)
			}
			pods = append(pods, list...)
		}
	} else {
		sel := fields.AndSelectors(append([]fields.Selector{fields.OneTermNotEqualSelector("spec.nodeName", "")}, running...)...)
		list, err := ListPods(ctx, kube, "", metav1.ListOptions{FieldSelector: sel.String()})
		if err != nil {
			return fmt.Errorf("listing pods: %w", err)
		}
		pods = list
	}
	for i := range pods {
		fileBoundPod(rows[pods[i].Spec.NodeName], &pods[i])
	}
	return nil
}

// fileBoundPod adds a bound pod to its node's row, judging it by the
// contract the scheduler's cache follows (pkg/podgpu): a pod that asks for
// no GPU holds none; one with a usable assignment holds what it names (at
// its peak, so an init container's GPU handed on to the app container
// counts once); one without counts as what it asks for; one whose request
// is invalid, or whose assignment names GPUs the node does not have, makes
// the node's use unknown.
func fileBoundPod(r *NodeRow, p *v1.Pod) {
	if r == nil || p.Spec.NodeName == "" || p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
		return
	}
	name := p.Namespace + "/" + p.Name
	h := podgpu.Of(p)
	if r.Source == SourceDRA && h.State != podgpu.None {
		// It holds its GPUs through claims, which addDRARows filed.
		return
	}
	switch h.State {
	case podgpu.None:
		r.Other = append(r.Other, name)
		return
	case podgpu.Unknown:
		r.Unknown = append(r.Unknown, name+" ("+h.Problem+")")
		return
	case podgpu.Unrecorded:
		why := "no " + assignment.Annotation + " yet"
		if h.Problem != "" {
			why = h.Problem
		}
		r.Unrecorded = append(r.Unrecorded, fmt.Sprintf("%s (%s; %s)", name, RequestSummary(p), why))
		return
	}
	index := map[string]int{}
	for i := range r.GPUs {
		index[r.GPUs[i].UUID] = i
	}
	var foreign []string
	for _, c := range h.Assignment.Containers() {
		for _, d := range h.Assignment[c] {
			i, ok := index[d.UUID]
			if !ok {
				foreign = append(foreign, d.UUID)
				continue
			}
			g := &r.GPUs[i]
			g.Holders = append(g.Holders, Holder{Namespace: p.Namespace, Pod: p.Name, Container: c, Percent: d.Percent})
		}
	}
	for uuid, units := range h.Use {
		if i, ok := index[uuid]; ok {
			r.GPUs[i].Used += units
		}
	}
	if len(foreign) > 0 {
		r.Unknown = append(r.Unknown, fmt.Sprintf("%s (assigned GPUs not in the inventory: %s)", name, strings.Join(foreign, ",")))
	}
}

// addNodeEvents adds the latest GPUNode events to the rows. They are matched
// by kind and name only: the device plugin reports health changes about its
// GPUNode without the object's UID, so a UID match (what kubectl describe
// does) would miss them. A user who may not list events gets rows without.
func addNodeEvents(ctx context.Context, kube kubernetes.Interface, rows map[string]*NodeRow) error {
	evs, err := listEvents(ctx, kube, "", fields.OneTermEqualSelector("involvedObject.kind", "GPUNode"))
	if apierrors.IsForbidden(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing GPUNode events: %w", err)
	}
	byNode := map[string][]NodeEvent{}
	for i := range evs {
		e := &evs[i]
		if rows[e.InvolvedObject.Name] == nil {
			continue
		}
		count := e.Count
		if e.Series != nil && e.Series.Count > count {
			count = e.Series.Count
		}
		source := e.ReportingController
		if source == "" {
			source = e.Source.Component
		}
		byNode[e.InvolvedObject.Name] = append(byNode[e.InvolvedObject.Name], NodeEvent{
			Type: e.Type, Reason: e.Reason, Message: e.Message, Count: max(count, 1), LastSeen: EventTime(e), Source: source})
	}
	for name, list := range byNode {
		sort.SliceStable(list, func(i, j int) bool { return list[i].LastSeen.Before(list[j].LastSeen) })
		if len(list) > MaxNodeEvents {
			list = list[len(list)-MaxNodeEvents:]
		}
		rows[name].Events = list
	}
	return nil
}

// pendingPods lists the unbound pods of the scheduler and why each one is
// unplaced.
//
// The PodScheduled condition comes first because the scheduler rewrites its
// message on every failed attempt, while its events.k8s.io recorder folds a
// repeated FailedScheduling into a series of the first one and keeps that
// first message: after a retry, the event can show a reason that no longer
// holds (for instance "gpu inventory not yet synced" from just after a
// restart). Events remain the fallback for pods without the condition.
func pendingPods(ctx context.Context, kube kubernetes.Interface, opts Options) ([]Pending, error) {
	sel := fields.AndSelectors(
		fields.OneTermEqualSelector("spec.nodeName", ""),
		fields.OneTermEqualSelector("spec.schedulerName", opts.SchedulerName),
		fields.OneTermNotEqualSelector("status.phase", string(v1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(v1.PodFailed)))
	pods, err := ListPods(ctx, kube, opts.Namespace, metav1.ListOptions{FieldSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("listing pending pods: %w", err)
	}
	if len(pods) == 0 {
		return nil, nil
	}
	// One list of FailedScheduling events rather than one per pod.
	evs, err := listEvents(ctx, kube, opts.Namespace, fields.OneTermEqualSelector("reason", "FailedScheduling"))
	var reasons map[types.UID]string
	switch {
	case apierrors.IsForbidden(err):
		// The pods are still worth listing to someone who may read pods
		// but not events.
		reasons = nil
	case err != nil:
		return nil, fmt.Errorf("listing FailedScheduling events: %w", err)
	default:
		reasons = LatestMessages(evs)
	}
	out := make([]Pending, 0, len(pods))
	for i := range pods {
		p := &pods[i]
		why, ok := UnschedulableMessage(p)
		if !ok {
			why, ok = reasons[p.UID]
		}
		switch {
		case ok:
		case reasons == nil:
			why = EventsForbidden
		default:
			why = NotYetAttempted
		}
		out = append(out, Pending{Namespace: p.Namespace, Pod: p.Name, Request: RequestSummary(p),
			Models: p.Annotations[gpu.ModelsAnnotation], Reason: why})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Pod < out[j].Pod
	})
	return out, nil
}

// UnschedulableMessage returns the message of the pod's PodScheduled=False
// condition, if it has one with a message: the scheduler's reason from its
// latest attempt.
func UnschedulableMessage(p *v1.Pod) (string, bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodScheduled && c.Status == v1.ConditionFalse && c.Message != "" {
			return c.Message, true
		}
	}
	return "", false
}

// LatestMessages maps each involved object's UID to the message of its most
// recent event among evs.
func LatestMessages(evs []v1.Event) map[types.UID]string {
	type seen struct {
		at  time.Time
		msg string
	}
	latest := map[types.UID]seen{}
	for i := range evs {
		e := &evs[i]
		at := EventTime(e)
		if cur, ok := latest[e.InvolvedObject.UID]; !ok || at.After(cur.at) {
			latest[e.InvolvedObject.UID] = seen{at, e.Message}
		}
	}
	out := make(map[types.UID]string, len(latest))
	for uid, s := range latest {
		out[uid] = s.msg
	}
	return out
}

// EventTime is when an event was last observed. The scheduler writes
// events.k8s.io events, whose repeats only advance the series; older
// recorders advance lastTimestamp. The creation time is only a fallback: it
// says when the apiserver stored the event, not when it happened.
func EventTime(e *v1.Event) time.Time {
	var t time.Time
	for _, c := range []time.Time{e.EventTime.Time, e.LastTimestamp.Time} {
		if c.After(t) {
			t = c
		}
	}
	if e.Series != nil && e.Series.LastObservedTime.Time.After(t) {
		t = e.Series.LastObservedTime.Time
	}
	if t.IsZero() {
		return e.CreationTimestamp.Time
	}
	return t
}

// RequestSummary says what a pod asks of Tessera in a few words: "2 gpus",
// "30%", "1 gpu + 30%" (at the pod's peak, following the effective-request
// rules), or "invalid" (the pod's FailedScheduling event says why).
func RequestSummary(p *v1.Pod) string {
	req, err := gpu.ParsePod(p)
	switch {
	case err != nil:
		return "invalid"
	case req == nil:
		return "no gpu"
	}
	var parts []string
	switch req.Whole {
	case 0:
	case 1:
		parts = append(parts, "1 gpu")
	default:
		parts = append(parts, fmt.Sprintf("%d gpus", req.Whole))
	}
	for _, s := range req.Shares {
		parts = append(parts, fmt.Sprintf("%d%%", s))
	}
	return strings.Join(parts, " + ")
}
