package integration

import (
	"context"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// TestNoExecuteDeviceTaintEvicts puts a NoExecute device taint on every GPU
// of a node that runs three pods: one that does not tolerate it is evicted
// at once, with a DisruptionTarget condition and an event; one that
// tolerates it for two seconds is evicted after them; one that tolerates it
// without a limit stays.
func TestNoExecuteDeviceTaintEvicts(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("n", localcluster.FakeNode{GPUs: 3})
	two := int64(2)
	e.createPod("plain", gpus(1))
	e.createPod("forever", gpus(1), tolerating("maint"))
	e.createPod("brief", gpus(1), func(p *v1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, v1.Toleration{Key: "maint", Operator: v1.TolerationOpExists,
			Effect: v1.TaintEffectNoExecute, TolerationSeconds: &two})
	})
	for _, n := range []string{"plain", "forever", "brief"} {
		e.waitBound(n)
	}

	gn, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(e.ctx, "n", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		gn.Spec.DeviceTaints = append(gn.Spec.DeviceTaints, v1alpha1.GPUDeviceTaint{UUID: gpuUUID("n", i),
			DeviceTaint: v1alpha1.DeviceTaint{Key: "maint", Value: "drain", Effect: v1.TaintEffectNoExecute}})
	}
	tainted := time.Now()
	if _, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Update(e.ctx, gn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	plain := e.waitDeleting("plain")
	if c := condition(plain, v1.DisruptionTarget); c == nil || c.Reason != "DeletionByDeviceTaintManager" {
		t.Errorf("plain's DisruptionTarget condition: %+v", c)
	}
	held := e.assignmentOf(plain)["main"][0].UUID
	e.waitEvent("plain", "DeletionByDeviceTaintManager: Evicting: GPU "+held+" has device taint maint=drain:NoExecute on node n, which the pod does not tolerate")
	e.waitDeleting("brief")
	if d := time.Since(tainted); d < 2*time.Second {
		t.Errorf("brief evicted %v after the taint; it tolerates it for 2s", d)
	}
	t.Logf("evicted brief %v after the taint (tolerationSeconds 2)", time.Since(tainted).Round(time.Millisecond))
	if got := e.terminating("forever"); len(got) > 0 {
		t.Error("forever, which tolerates the taint without a limit, was evicted")
	}
}

// waitDeleting waits until the pod has been asked to leave and returns it.
func (e *env) waitDeleting(name string) *v1.Pod {
	e.t.Helper()
	var pod *v1.Pod
	if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := e.c.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return p.DeletionTimestamp != nil, nil
	}); err != nil {
		e.t.Fatalf("pod %s was never evicted; events: %s", name, e.events(name))
	}
	return pod
}

func condition(p *v1.Pod, t v1.PodConditionType) *v1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}
