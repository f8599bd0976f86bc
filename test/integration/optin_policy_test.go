package integration

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// warnings collects the warnings the API server returns.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

// TestChartOptInPolicies installs the chart's opt-in admission policies on
// a real API server and creates pods (as dry runs, which admission sees in
// full) in a namespace that opted in and in one that did not.
// With scheduler.optIn.setSchedulerName on, a GPU pod that names no
// scheduler gets tessera-scheduler; pods naming another scheduler, pods
// without GPUs and pods elsewhere are left alone, and no warning is given.
// With the mutation gone, the same GPU pod is admitted unchanged with a
// warning that says what to set.
func TestChartOptInPolicies(t *testing.T) {
	helmBinary(t)
	out, err := helmTemplate(t, "tessera", "tessera-system", "namespace.create=true", "scheduler.optIn.setSchedulerName=true")
	if err != nil {
		t.Fatal(err)
	}
	ctx, c, _ := startChartCluster(t)
	applyChart(t, ctx, c, parseObjects(t, out))
	for name, labels := range map[string]map[string]string{"team": {"tessera.io/scheduling": "enabled"}, "elsewhere": nil} {
		ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	warned := &warnings{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = warned
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	type podSpec struct {
		ns, scheduler string
		gpu, initGPU  bool
	}
	create := func(p podSpec) *v1.Pod {
		t.Helper()
		limits := func(on bool) v1.ResourceRequirements {
			if !on {
				return v1.ResourceRequirements{}
			}
			return v1.ResourceRequirements{Limits: v1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}}
		}
		pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "p-", Namespace: p.ns},
			Spec: v1.PodSpec{SchedulerName: p.scheduler,
				Containers: []v1.Container{{Name: "main", Image: "x", Resources: limits(p.gpu)}}}}
		if p.initGPU {
			pod.Spec.InitContainers = []v1.Container{{Name: "prep", Image: "x", Resources: limits(true)}}
		}
		got, err := client.CoreV1().Pods(p.ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatalf("creating %+v: %v", p, err)
		}
		return got
	}
	// Policies take effect once the API server's policy informers have them.
	gpuPod := podSpec{ns: "team", gpu: true}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return create(gpuPod).Spec.SchedulerName == "tessera-scheduler", nil
	})
	if err != nil {
		t.Fatal("the MutatingAdmissionPolicy never set spec.schedulerName on a GPU pod of an opted-in namespace")
	}
	warned.take()
	for _, tc := range []struct {
		pod  podSpec
		want string
	}{
		{podSpec{ns: "team", gpu: true}, "tessera-scheduler"},
		{podSpec{ns: "team", gpu: true, scheduler: "default-scheduler"}, "tessera-scheduler"},
		{podSpec{ns: "team", initGPU: true}, "tessera-scheduler"},
		{podSpec{ns: "team", gpu: true, scheduler: "volcano"}, "volcano"},
		{podSpec{ns: "team"}, "default-scheduler"},
		{podSpec{ns: "elsewhere", gpu: true}, "default-scheduler"},
	} {
		if got := create(tc.pod).Spec.SchedulerName; got != tc.want {
			t.Errorf("pod %+v: schedulerName %q, want %q", tc.pod, got, tc.want)
		}
		if w := warned.take(); len(w) != 0 {
			t.Errorf("pod %+v: warnings %q", tc.pod, w)
		}
	}

	// Without the mutation the warning speaks.
	if err := c.Client.AdmissionregistrationV1().MutatingAdmissionPolicyBindings().Delete(ctx, "tessera-scheduler-opt-in", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		if create(gpuPod).Spec.SchedulerName != "default-scheduler" {
			warned.take()
			return false, nil
		}
		got = warned.take()
		return len(got) > 0, nil
	})
	if err != nil || !strings.Contains(strings.Join(got, "\n"), "names no scheduler") || !strings.Contains(strings.Join(got, "\n"), "spec.schedulerName: tessera-scheduler") {
		t.Fatalf("a GPU pod that names no scheduler got warnings %q (%v)", got, err)
	}
	for _, p := range []podSpec{{ns: "team"}, {ns: "team", gpu: true, scheduler: "volcano"}, {ns: "elsewhere", gpu: true}} {
		create(p)
		if w := warned.take(); len(w) != 0 {
			t.Errorf("pod %+v: warnings %q", p, w)
		}
	}
}
