package integration

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/deviceplugin/agent"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// TestNodeTaintIsRemovedOnlyWhereTesseraAddedIt: --taint-node taints a
// node and records that it did; --remove-node-taints (the chart's
// uninstall hook) and a restart without --taint-node remove that taint, and
// never the same taint a cloud provider put on its GPU nodes.
func TestNodeTaintIsRemovedOnlyWhereTesseraAddedIt(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("ours", localcluster.FakeNode{GPUs: 8, NoInventory: true, NoTaint: true})
	e.addNode("providers", localcluster.FakeNode{GPUs: 8}) // tainted nvidia.com/gpu=present:NoSchedule by "the provider"

	// runAgent runs the device plugin on a node until its taint is as
	// wanted, then stops it.
	runAgent := func(node string, taint bool, wantTainted bool) {
		t.Helper()
		ctx, cancel := context.WithCancel(e.ctx)
		done := make(chan error, 1)
		go func() {
			done <- agent.Run(ctx, agent.Config{
				NodeName: node, Kube: e.c.Client, GPU: e.c.GPU, Fake: "dgxa100", TaintNode: taint,
				DevicePluginDir: shortTempDir(t), Heartbeat: time.Second, ReconcileInterval: time.Second, Health: health.DefaultConfig(),
			}, nil)
		}()
		// The plugin taints or untaints its node before it publishes; a
		// heartbeat from this run means it is done. (Heartbeats have
		// second resolution: skip to the next second first.)
		began := metav1.NewTime(time.Now().Truncate(time.Second).Add(time.Second))
		e.waitGPUNode(node, func(gn *v1alpha1.GPUNode) bool {
			return gn.Status.HeartbeatTime != nil && !gn.Status.HeartbeatTime.Before(&began)
		})
		if got := tainted(t, e, node); got != wantTainted {
			t.Fatalf("node %s: tainted = %v after the plugin started with --taint-node=%v, want %v", node, got, taint, wantTainted)
		}
		cancel()
		<-done
	}
	runAgent("ours", true, true)
	runAgent("providers", true, true)
	if got := annotations(t, e); !cmp.Equal(got, map[string]bool{"ours": true, "providers": false}) {
		t.Errorf("nodes with %s: %v, want only the one the plugin tainted", agent.NodeTaintAnnotation, got)
	}

	n, err := agent.RemoveNodeTaints(e.ctx, e.c.Client)
	if err != nil || n != 1 {
		t.Fatalf("RemoveNodeTaints = %d, %v; want 1 node", n, err)
	}
	if tainted(t, e, "ours") || !tainted(t, e, "providers") {
		t.Errorf("after RemoveNodeTaints: ours tainted %v, providers tainted %v; want only the provider's taint left", tainted(t, e, "ours"), tainted(t, e, "providers"))
	}
	if got := annotations(t, e); !cmp.Equal(got, map[string]bool{"ours": false, "providers": false}) {
		t.Errorf("nodes with %s after RemoveNodeTaints: %v", agent.NodeTaintAnnotation, got)
	}
	if n, err := agent.RemoveNodeTaints(e.ctx, e.c.Client); err != nil || n != 0 {
		t.Errorf("RemoveNodeTaints again = %d, %v; want nothing to do", n, err)
	}

	// --taint-node turned off: the next start removes the taint it added.
	runAgent("ours", true, true)
	runAgent("ours", false, false)
	runAgent("providers", false, true)
}

func tainted(t *testing.T, e *env, name string) bool {
	t.Helper()
	node, err := e.c.Client.CoreV1().Nodes().Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, taint := range node.Spec.Taints {
		if taint.Key == "nvidia.com/gpu" && taint.Effect == v1.TaintEffectNoSchedule {
			return true
		}
	}
	return false
}

func annotations(t *testing.T, e *env) map[string]bool {
	t.Helper()
	nodes, err := e.c.Client.CoreV1().Nodes().List(e.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range nodes.Items {
		_, out[n.Name] = n.Annotations[agent.NodeTaintAnnotation]
	}
	return out
}
