package podgpu

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

type ctr struct {
	name    string
	res     v1.ResourceName
	n       string
	sidecar bool
}

func pod(annotation string, init []ctr, app ...ctr) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"}}
	if annotation != "" {
		p.Annotations = map[string]string{assignment.Annotation: annotation}
	}
	mk := func(c ctr) v1.Container {
		out := v1.Container{Name: c.name}
		if c.res != "" {
			out.Resources.Limits = v1.ResourceList{c.res: resource.MustParse(c.n)}
		}
		if c.sidecar {
			always := v1.ContainerRestartPolicyAlways
			out.RestartPolicy = &always
		}
		return out
	}
	for _, c := range init {
		p.Spec.InitContainers = append(p.Spec.InitContainers, mk(c))
	}
	for _, c := range app {
		p.Spec.Containers = append(p.Spec.Containers, mk(c))
	}
	return p
}

// TestOf states the contract: what a bound pod holds for each kind of spec
// and annotation.
func TestOf(t *testing.T) {
	whole := func(name, n string) ctr { return ctr{name: name, res: gpu.ResourceGPU, n: n} }
	share := func(name, n string) ctr { return ctr{name: name, res: gpu.ResourcePercent, n: n} }
	plain := ctr{name: "main"}
	tests := []struct {
		name      string
		pod       *v1.Pod
		want      State
		wantUse   map[string]int
		wantTrust assignment.Assignment
		problem   bool
	}{
		{name: "no gpu, no annotation", pod: pod("", nil, plain), want: None},
		{name: "no gpu, forged annotation", pod: pod(`{"main":[{"uuid":"A","percent":100}]}`, nil, plain), want: None, problem: true},
		{name: "no gpu, broken annotation", pod: pod(`{broken`, nil, plain), want: None, problem: true},
		{name: "whole, recorded", pod: pod(`{"main":[{"uuid":"A","percent":100},{"uuid":"B","percent":100}]}`, nil, whole("main", "2")),
			want: Recorded, wantUse: map[string]int{"A": 100, "B": 100},
			wantTrust: assignment.Assignment{"main": {{UUID: "A", Percent: 100}, {UUID: "B", Percent: 100}}}},
		{name: "share, recorded", pod: pod(`{"main":[{"uuid":"A","percent":30}]}`, nil, share("main", "30")),
			want: Recorded, wantUse: map[string]int{"A": 30}, wantTrust: assignment.Assignment{"main": {{UUID: "A", Percent: 30}}}},
		{name: "containers that ask for nothing are ignored", pod: pod(`{"main":[{"uuid":"A","percent":30}],"ghost":[{"uuid":"B","percent":100}],"log":[{"uuid":"C","percent":100}]}`,
			nil, share("main", "30"), ctr{name: "log"}),
			want: Recorded, wantUse: map[string]int{"A": 30}, wantTrust: assignment.Assignment{"main": {{UUID: "A", Percent: 30}}}, problem: true},
		{name: "share split over gpus by the kubelet", pod: pod(`{"main":[{"uuid":"A","percent":7},{"uuid":"B","percent":63},{"uuid":"C","percent":20}]}`, nil, share("main", "90")),
			want: Recorded, wantUse: map[string]int{"A": 7, "B": 63, "C": 20},
			wantTrust: assignment.Assignment{"main": {{UUID: "A", Percent: 7}, {UUID: "B", Percent: 63}, {UUID: "C", Percent: 20}}}},
		{name: "share parts that do not add up", pod: pod(`{"main":[{"uuid":"A","percent":7},{"uuid":"B","percent":63}]}`, nil, share("main", "90")),
			want: Unrecorded, problem: true},
		{name: "gpu pod of another scheduler", pod: pod("", nil, whole("main", "1")), want: Unrecorded},
		{name: "gpu pod, broken annotation", pod: pod(`{broken`, nil, whole("main", "1")), want: Unrecorded, problem: true},
		{name: "gpu pod, too few gpus named", pod: pod(`{"main":[{"uuid":"A","percent":100}]}`, nil, whole("main", "2")), want: Unrecorded, problem: true},
		{name: "gpu pod, share where whole asked", pod: pod(`{"main":[{"uuid":"A","percent":50}]}`, nil, whole("main", "1")), want: Unrecorded, problem: true},
		{name: "gpu pod, container missing", pod: pod(`{"other":[{"uuid":"A","percent":100}]}`, nil, whole("main", "1")), want: Unrecorded, problem: true},
		{name: "invalid request", pod: pod(`{"main":[{"uuid":"A","percent":100}]}`, nil, share("main", "150")), want: Unknown, problem: true},
		// An init step's GPU passes on to the app container: one GPU, held
		// once.
		{name: "init and app reuse a whole gpu", pod: pod(`{"prep":[{"uuid":"A","percent":100}],"main":[{"uuid":"A","percent":100}]}`,
			[]ctr{whole("prep", "1")}, whole("main", "1")),
			want: Recorded, wantUse: map[string]int{"A": 100},
			wantTrust: assignment.Assignment{"prep": {{UUID: "A", Percent: 100}}, "main": {{UUID: "A", Percent: 100}}}},
		// A sidecar runs beside the app container: their shares add up.
		{name: "sidecar beside app", pod: pod(`{"proxy":[{"uuid":"A","percent":30}],"main":[{"uuid":"A","percent":50}]}`,
			[]ctr{{name: "proxy", res: gpu.ResourcePercent, n: "30", sidecar: true}}, share("main", "50")),
			want: Recorded, wantUse: map[string]int{"A": 80},
			wantTrust: assignment.Assignment{"proxy": {{UUID: "A", Percent: 30}}, "main": {{UUID: "A", Percent: 50}}}},
		// An init step runs beside the sidecars declared before it.
		{name: "init step beside sidecar", pod: pod(`{"proxy":[{"uuid":"A","percent":30}],"warmup":[{"uuid":"A","percent":50},{"uuid":"B","percent":100}],"main":[{"uuid":"B","percent":100}]}`,
			[]ctr{{name: "proxy", res: gpu.ResourcePercent, n: "30", sidecar: true}, {name: "warmup", res: gpu.ResourcePercent, n: "50"}}, whole("main", "1")),
			// warmup asks for a share only; B is named for it and so not trusted.
			want: Unrecorded, problem: true},
		{name: "shares beyond a gpu", pod: pod(`{"proxy":[{"uuid":"A","percent":60}],"main":[{"uuid":"A","percent":50}]}`,
			[]ctr{{name: "proxy", res: gpu.ResourcePercent, n: "60", sidecar: true}}, share("main", "50")),
			want: Unrecorded, problem: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Of(tt.pod)
			if h.State != tt.want || (h.Problem != "") != tt.problem {
				t.Fatalf("Of = %v, problem %q; want %v, problem %v", h.State, h.Problem, tt.want, tt.problem)
			}
			if diff := cmp.Diff(tt.wantUse, h.Use, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Use (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantTrust, h.Assignment, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Assignment (-want +got):\n%s", diff)
			}
			if (h.State == Recorded || h.State == Unrecorded) != (h.Request != nil) {
				t.Errorf("Request = %v for state %v", h.Request, h.State)
			}
		})
	}
}

func TestPeakUse(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	p := &v1.Pod{Spec: v1.PodSpec{
		InitContainers: []v1.Container{{Name: "proxy", RestartPolicy: &always}, {Name: "warmup"}},
		Containers:     []v1.Container{{Name: "main"}},
	}}
	a := assignment.Assignment{
		"proxy":  {{UUID: "A", Percent: 30}},
		"warmup": {{UUID: "A", Percent: 50}, {UUID: "B", Percent: 100}},
		"main":   {{UUID: "B", Percent: 100}},
	}
	use, err := PeakUse(p, a)
	if err != nil {
		t.Fatal(err)
	}
	// warmup runs beside proxy (30 + 50 on A) and hands B on to main.
	if diff := cmp.Diff(map[string]int{"A": 80, "B": 100}, use); diff != "" {
		t.Errorf("PeakUse (-want +got):\n%s", diff)
	}
	a["warmup"][0].Percent = 80
	if _, err := PeakUse(p, a); err == nil {
		t.Error("proxy 30 + warmup 80 on one GPU accepted")
	}
}
