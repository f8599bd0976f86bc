package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/assignment"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func gpuOf(i int32, uuid string, healthy bool) v1alpha1.GPU {
	return v1alpha1.GPU{UUID: uuid, Index: i, Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 81920, NUMANode: 0,
		NVLinkPeers: []string{"x"}, Health: v1alpha1.GPUHealth{Healthy: healthy, Since: &metav1.Time{Time: t0}}}
}

func TestWrite(t *testing.T) {
	hb := &metav1.Time{Time: t0}
	sick := gpuOf(1, "GPU-8c0e6f3a-1111-2222-3333-444455556666", false)
	sick.Health.Reason = "XID 79"
	sick.Taints = []v1alpha1.DeviceTaint{{Key: "tessera.io/xid", Value: "79", Effect: v1.TaintEffectNoSchedule}}
	full := &Snapshot{
		Now: t0.Add(90 * time.Second),
		Nodes: []NodeRow{
			{Name: "cpu-1", Other: []string{"default/web"}},
			{Name: "empty", HasInventory: true, HeartbeatTime: hb},
			{Name: "gpu-1", HasInventory: true, HeartbeatTime: hb, GPUs: []GPURow{
				{GPU: gpuOf(0, "GPU-a", true), Used: 80, Holders: []Holder{
					{Namespace: "default", Pod: "infer", Container: "main", Percent: 30},
					{Namespace: "ml", Pod: "nb", Container: "lab", Percent: 50}}},
				{GPU: sick},
			}, Unknown: []string{"default/legacy (asks for GPUs but has no tessera.io/gpu-assignment)"}, Other: []string{"kube-system/agent"}},
		},
		Pending: []Pending{{Namespace: "ml", Pod: "big", Request: "16 gpus", Models: "NVIDIA A30", Reason: "0/3 nodes are available:\n  too big."}},
	}
	for _, c := range []struct {
		name string
		snap *Snapshot
		opts PrintOptions
		want string
	}{{
		name: "table", snap: full, want: `
NODE   GPU              MODEL                  HEALTH              TAINTS                        USED  HELD BY
cpu-1  -                (no GPUNode)                                                                   default/web
empty  -                (no GPUs)                                                                      -
gpu-1  0 GPU-a          NVIDIA H100 80GB HBM3  ok                  -                             80%   default/infer[main] 30%, ml/nb[lab] 50%
       1 GPU-8c0e6f3a…  NVIDIA H100 80GB HBM3  unhealthy (XID 79)  tessera.io/xid=79:NoSchedule  0%    -
                                                                                                       unknown GPU use, node counts as full: default/legacy (asks for GPUs but has no tessera.io/gpu-assignment)

PENDING POD  REQUEST  WHY
ml/big       16 gpus  0/3 nodes are available: too big.
`,
	}, {
		name: "wide", snap: full, opts: PrintOptions{Wide: true}, want: `
NODE   HEARTBEAT  GPU  UUID                                      MODEL                  MEMORY   NUMA  NVLINK  HEALTH                        TAINTS                        USED  HELD BY
cpu-1  -          -                                              (no GPUNode)                                                                                                    default/web
empty  90s ago    -                                              (no GPUs)                                                                                                       -
gpu-1  90s ago    0    GPU-a                                     NVIDIA H100 80GB HBM3  81920Mi  0     1       ok since 90s                  -                             80%   default/infer[main] 30%, ml/nb[lab] 50%
...`,
	}, {
		name: "no headers", snap: &Snapshot{Nodes: full.Nodes[2:], Pending: full.Pending}, opts: PrintOptions{NoHeaders: true}, want: `
gpu-1  0 GPU-a          NVIDIA H100 80GB HBM3  ok                  -                             80%  default/infer[main] 30%, ml/nb[lab] 50%
       1 GPU-8c0e6f3a…  NVIDIA H100 80GB HBM3  unhealthy (XID 79)  tessera.io/xid=79:NoSchedule  0%   -
                                                                                                      unknown GPU use, node counts as full: default/legacy (asks for GPUs but has no tessera.io/gpu-assignment)
ml/big  16 gpus  0/3 nodes are available: too big.
`,
	}, {
		name: "pending only", snap: &Snapshot{Pending: full.Pending}, want: `
PENDING POD  REQUEST  WHY
ml/big       16 gpus  0/3 nodes are available: too big.
`,
	}, {
		name: "node events", snap: &Snapshot{Now: t0.Add(time.Minute), Nodes: []NodeRow{{Name: "gpu-1", HasInventory: true,
			GPUs: []GPURow{{GPU: gpuOf(0, "GPU-a", true)}},
			Events: []NodeEvent{
				{Type: "Warning", Reason: "GPUUnhealthy", Message: "GPU GPU-a: unhealthy: XID 79", Count: 3, LastSeen: t0, Source: "tessera-device-plugin"},
				{Type: "Normal", Reason: "GPUHealthy", Message: "GPU GPU-a: healthy again", Count: 1, LastSeen: t0.Add(30 * time.Second)},
			}}}},
		want: `
NODE   GPU      MODEL                  HEALTH  TAINTS  USED  HELD BY
gpu-1  0 GPU-a  NVIDIA H100 80GB HBM3  ok      -       0%    -

Events of GPUNode gpu-1:
  LAST SEEN     TYPE     REASON        FROM                   MESSAGE
  60s ago (x3)  Warning  GPUUnhealthy  tessera-device-plugin  GPU GPU-a: unhealthy: XID 79
  30s ago       Normal   GPUHealthy    -                      GPU GPU-a: healthy again
`,
	}, {
		name: "nothing", snap: &Snapshot{Nodes: []NodeRow{}, Pending: []Pending{}}, want: "\n",
	}} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			c.snap.WriteTables(&b, c.opts)
			got := "\n" + b.String()
			if prefix, ok := strings.CutSuffix(c.want, "..."); ok {
				// Only the first rows are pinned; the rest is checked below.
				if !strings.HasPrefix(normalize(got), normalize(prefix)) {
					t.Errorf("output starts\n%s\nwant\n%s", got, prefix)
				}
				return
			}
			if normalize(got) != normalize(c.want) {
				t.Errorf("output\n%s\nwant\n%s", got, c.want)
			}
		})
	}
	t.Run("wide details", func(t *testing.T) {
		var b bytes.Buffer
		full.WriteTables(&b, PrintOptions{Wide: true})
		for _, want := range []string{
			"GPU-8c0e6f3a-1111-2222-3333-444455556666", // full UUIDs
			"unhealthy (XID 79) since 90s",
			"no GPU: kube-system/agent",
			"PENDING POD  REQUEST  MODELS      WHY",
			"ml/big       16 gpus  NVIDIA A30  0/3 nodes are available: too big.",
		} {
			if !strings.Contains(b.String(), want) {
				t.Errorf("wide output lacks %q:\n%s", want, b.String())
			}
		}
		if strings.Contains(full.writeTable(PrintOptions{}), "kube-system/agent") {
			t.Error("the default table lists non-GPU pods of GPU nodes")
		}
	})
}

// normalize drops trailing spaces, which tabwriter leaves after the last
// non-empty cell of short rows.
func normalize(s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return strings.Join(lines, "\n")
}

func (s *Snapshot) writeTable(o PrintOptions) string {
	var b bytes.Buffer
	s.WriteTables(&b, o)
	return b.String()
}

func TestJSON(t *testing.T) {
	snap := &Snapshot{Nodes: []NodeRow{{Name: "n", HasInventory: true, GPUs: []GPURow{{GPU: gpuOf(0, "GPU-a", true), Used: 100,
		Holders: []Holder{{Namespace: "default", Pod: "p", Container: "main", Percent: 100}}}}}}, Pending: []Pending{}}
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	g := got["nodes"].([]any)[0].(map[string]any)["gpus"].([]any)[0].(map[string]any)
	// The GPU's inventory fields sit beside used and holders, as in the
	// GPUNode's status.
	for _, k := range []string{"uuid", "index", "model", "memoryMiB", "health", "used", "holders"} {
		if _, ok := g[k]; !ok {
			t.Errorf("gpu object lacks %q: %v", k, g)
		}
	}
	if _, ok := got["pending"]; ok {
		t.Errorf("an empty pending list is left out: %s", b)
	}
}

// TestSummaries counts each node's GPUs by state and writes the per-node
// table, with and without headers.
func TestSummaries(t *testing.T) {
	sick := gpuOf(3, "GPU-d", false)
	sick.Model = "NVIDIA A100-SXM4-80GB"
	snap := &Snapshot{Nodes: []NodeRow{
		{Name: "gpu-1", HasInventory: true, GPUs: []GPURow{
			{GPU: gpuOf(0, "GPU-a", true), Used: 100, Holders: []Holder{{Namespace: "ml", Pod: "train", Container: "main", Percent: 100}}},
			{GPU: gpuOf(1, "GPU-b", true), Used: 40, Holders: []Holder{{Namespace: "ml", Pod: "train", Container: "side", Percent: 10},
				{Namespace: "default", Pod: "infer", Container: "main", Percent: 30}}},
			{GPU: gpuOf(2, "GPU-c", true)},
			{GPU: sick},
		}, Unrecorded: []string{"default/legacy (1 gpu; no annotation)"}},
		{Name: "gpu-2", HasInventory: true},
	}}
	want := []NodeSummary{
		{Name: "gpu-1", Models: "NVIDIA A100-SXM4-80GB,NVIDIA H100 80GB HBM3", GPUs: 4, Free: 1, Partial: 1, Full: 1, Unhealthy: 1,
			Allocated: 1.4, Pods: 2, UnrecordedPods: 1},
		{Name: "gpu-2"},
	}
	if diff := cmp.Diff(want, snap.Summaries()); diff != "" {
		t.Errorf("summaries (-want +got):\n%s", diff)
	}
	var b bytes.Buffer
	snap.WriteSummary(&b, PrintOptions{})
	if got := normalize(b.String()); got != normalize(`NODE   MODELS                                       GPUS  FREE  PARTIAL  FULL  UNHEALTHY  ALLOCATED
gpu-1  NVIDIA A100-SXM4-80GB,NVIDIA H100 80GB HBM3  4     1     1        1     1          1.4/4
gpu-2  -                                            0     0     0        0     0          0/0
`) {
		t.Errorf("summary table:\n%s", got)
	}
	b.Reset()
	snap.WriteSummary(&b, PrintOptions{NoHeaders: true, Wide: true})
	if got := b.String(); strings.Contains(got, "NODE") || !strings.Contains(got, "1 pod not recorded yet") {
		t.Errorf("wide summary without headers:\n%s", got)
	}
}

func TestRequestSummary(t *testing.T) {
	q := func(n int64) resource.Quantity { return *resource.NewQuantity(n, resource.DecimalSI) }
	ctr := func(name string, gpus, pct int64) v1.Container {
		c := v1.Container{Name: name, Resources: v1.ResourceRequirements{Limits: v1.ResourceList{}}}
		if gpus > 0 {
			c.Resources.Limits["nvidia.com/gpu"] = q(gpus)
		}
		if pct > 0 {
			c.Resources.Limits["tessera.io/gpu-percent"] = q(pct)
		}
		return c
	}
	always := v1.ContainerRestartPolicyAlways
	sidecar := ctr("side", 0, 20)
	sidecar.RestartPolicy = &always
	for _, c := range []struct {
		name      string
		init, app []v1.Container
		want      string
	}{
		{"none", nil, []v1.Container{ctr("main", 0, 0)}, "no gpu"},
		{"one", nil, []v1.Container{ctr("main", 1, 0)}, "1 gpu"},
		{"whole", nil, []v1.Container{ctr("main", 2, 0), ctr("aux", 1, 0)}, "3 gpus"},
		{"share", nil, []v1.Container{ctr("main", 0, 30)}, "30%"},
		{"mixed", nil, []v1.Container{ctr("main", 1, 0), ctr("aux", 0, 25)}, "1 gpu + 25%"},
		// A regular init container runs before the app and hands its GPUs
		// on, so the pod's peak is the larger of the two.
		{"init", []v1.Container{ctr("setup", 4, 0)}, []v1.Container{ctr("main", 2, 0)}, "4 gpus"},
		// A sidecar runs beside the app containers.
		{"sidecar", []v1.Container{sidecar}, []v1.Container{ctr("main", 0, 40)}, "40% + 20%"},
		{"invalid", nil, []v1.Container{ctr("main", 0, 150)}, "invalid"},
		{"both", nil, []v1.Container{ctr("main", 1, 20)}, "invalid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &v1.Pod{Spec: v1.PodSpec{InitContainers: c.init, Containers: c.app}}
			if got := RequestSummary(p); got != c.want {
				t.Errorf("RequestSummary = %q, want %q", got, c.want)
			}
		})
	}
}

func TestLatestMessages(t *testing.T) {
	at := func(d time.Duration) metav1.Time { return metav1.Time{Time: t0.Add(d)} }
	ev := func(uid, msg string, mod func(*v1.Event)) v1.Event {
		e := v1.Event{InvolvedObject: v1.ObjectReference{UID: types.UID(uid)}, Message: msg}
		// The apiserver stores events after they happen; that time must
		// not decide which is latest.
		e.CreationTimestamp = at(time.Hour)
		mod(&e)
		return e
	}
	got := LatestMessages([]v1.Event{
		ev("a", "old", func(e *v1.Event) { e.LastTimestamp = at(time.Minute) }),
		ev("a", "new", func(e *v1.Event) { e.LastTimestamp = at(2 * time.Minute) }),
		// events.k8s.io events repeat by advancing their series.
		ev("b", "first seen last, repeated since", func(e *v1.Event) {
			e.EventTime = metav1.MicroTime{Time: t0}
			e.Series = &v1.EventSeries{Count: 4, LastObservedTime: metav1.MicroTime{Time: t0.Add(10 * time.Minute)}}
		}),
		ev("b", "seen once in between", func(e *v1.Event) { e.EventTime = metav1.MicroTime{Time: t0.Add(5 * time.Minute)} }),
	})
	got["c"] = EventTime(&v1.Event{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: at(time.Minute)}}).Sub(t0).String()
	want := map[types.UID]string{"a": "new", "b": "first seen last, repeated since", "c": "1m0s"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LatestMessages (-want +got):\n%s", diff)
	}
}

func TestFileBoundPod(t *testing.T) {
	row := func() *NodeRow {
		return &NodeRow{Name: "n", HasInventory: true, GPUs: []GPURow{{GPU: gpuOf(0, "GPU-0", true)}, {GPU: gpuOf(1, "GPU-1", true)}}}
	}
	pod := func(name, ann string, gpus int64) *v1.Pod {
		p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: v1.PodSpec{NodeName: "n",
			Containers: []v1.Container{{Name: "main"}}}}
		if ann != "" {
			p.Annotations = map[string]string{assignment.Annotation: ann}
		}
		if gpus > 0 {
			p.Spec.Containers[0].Resources.Limits = v1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(gpus, resource.DecimalSI)}
		}
		return p
	}
	sharePod := pod("p", `{"main":[{"uuid":"GPU-1","percent":40}]}`, 0)
	sharePod.Spec.Containers[0].Resources.Limits = v1.ResourceList{"tessera.io/gpu-percent": resource.MustParse("40")}
	reuse := pod("p", `{"prep":[{"uuid":"GPU-0","percent":100}],"main":[{"uuid":"GPU-0","percent":100}]}`, 1)
	reuse.Spec.InitContainers = []v1.Container{{Name: "prep", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}}}}
	for _, c := range []struct {
		name                       string
		pod                        *v1.Pod
		used                       [2]int
		unknown, unrecorded, other int
	}{
		{"holds both", pod("p", `{"main":[{"uuid":"GPU-0","percent":100},{"uuid":"GPU-1","percent":100}]}`, 2), [2]int{100, 100}, 0, 0, 0},
		{"share", sharePod, [2]int{0, 40}, 0, 0, 0},
		// The init container's GPU passes on to the app container: held once.
		{"init and app share a gpu", reuse, [2]int{100, 0}, 0, 0, 0},
		{"no gpu", pod("p", "", 0), [2]int{}, 0, 0, 1},
		{"no gpu, forged annotation", pod("p", `{"main":[{"uuid":"GPU-0","percent":100}]}`, 0), [2]int{}, 0, 0, 1},
		{"no annotation", pod("p", "", 1), [2]int{}, 0, 1, 0},
		{"unreadable", pod("p", "{broken", 1), [2]int{}, 0, 1, 0},
		{"foreign gpu", pod("p", `{"main":[{"uuid":"GPU-9","percent":100}]}`, 1), [2]int{}, 1, 0, 0},
		{"finished", func() *v1.Pod {
			p := pod("p", `{"main":[{"uuid":"GPU-0","percent":100}]}`, 1)
			p.Status.Phase = v1.PodSucceeded
			return p
		}(), [2]int{}, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := row()
			fileBoundPod(r, c.pod)
			if got := [2]int{r.GPUs[0].Used, r.GPUs[1].Used}; got != c.used {
				t.Errorf("used = %v, want %v", got, c.used)
			}
			if len(r.Unknown) != c.unknown || len(r.Unrecorded) != c.unrecorded || len(r.Other) != c.other {
				t.Errorf("unknown %q, unrecorded %q, other %q; want %d, %d and %d", r.Unknown, r.Unrecorded, r.Other, c.unknown, c.unrecorded, c.other)
			}
		})
	}
}

func TestInventoryRowMergesAdminTaints(t *testing.T) {
	gn := &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
	gn.Status.GPUs = []v1alpha1.GPU{gpuOf(1, "GPU-1", true), gpuOf(0, "GPU-0", true)}
	gn.Status.GPUs[0].Taints = []v1alpha1.DeviceTaint{{Key: "tessera.io/xid", Value: "79", Effect: v1.TaintEffectNoSchedule}}
	gn.Spec.DeviceTaints = []v1alpha1.GPUDeviceTaint{{UUID: "GPU-1", DeviceTaint: v1alpha1.DeviceTaint{Key: "maint", Effect: v1.TaintEffectNoSchedule}}}
	r := inventoryRow(gn)
	if r.GPUs[0].UUID != "GPU-0" || r.GPUs[1].UUID != "GPU-1" {
		t.Fatalf("GPUs not ordered by index: %v, %v", r.GPUs[0].UUID, r.GPUs[1].UUID)
	}
	if got := taints(r.GPUs[1].Taints); got != "tessera.io/xid=79:NoSchedule,maint=:NoSchedule" {
		t.Errorf("taints = %q", got)
	}
	if len(gn.Status.GPUs[0].Taints) != 1 {
		t.Error("inventoryRow changed the GPUNode's own taints")
	}
}
