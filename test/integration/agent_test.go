package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	compmetrics "k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/deviceplugin/agent"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
	dpmetrics "github.com/tessera-gpu/tessera/deviceplugin/metrics"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// TestAgentPublishesInventoryAndHealth runs tessera-device-plugin in fake
// mode: it publishes the node's GPUNode, and a critical XID on one GPU
// shows in the GPUNode as unhealthy with the XID device taint, after which
// the scheduler no longer uses that GPU.
func TestAgentPublishesInventoryAndHealth(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("dgx", localcluster.FakeNode{GPUs: 8, NoInventory: true, NoTaint: true}) // the agent taints it
	started := make(chan *agent.Agent, 1)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	go agent.Run(ctx, agent.Config{
		NodeName: "dgx", Kube: e.c.Client, GPU: e.c.GPU, Fake: "dgxa100", TaintNode: true,
		DevicePluginDir: shortTempDir(t), Heartbeat: time.Second, ReconcileInterval: time.Second, Health: health.DefaultConfig(),
	}, func(a *agent.Agent) { started <- a })
	a := <-started

	gn := e.waitGPUNode("dgx", func(gn *v1alpha1.GPUNode) bool { return gn.Status.GPUCount == 8 && gn.Status.HealthyCount == 8 })
	if gn.Status.Models != "NVIDIA A100-SXM4-40GB" || gn.Status.DriverVersion == "" || len(gn.Status.GPUs[0].NVLinkPeers) == 0 {
		t.Errorf("inventory %+v", gn.Status)
	}
	node, err := e.c.Client.CoreV1().Nodes().Get(e.ctx, "dgx", metav1.GetOptions{})
	if err != nil || len(node.Spec.Taints) != 1 || node.Spec.Taints[0].Key != "nvidia.com/gpu" {
		t.Errorf("node taints %v (err %v)", node.Spec.Taints, err)
	}

	bad := a.Machine().UUIDs()[0]
	// A pod already holds the GPU that will fail; it is told on the pod.
	holder := e.createPod("holder", gpus(1), scheduler("other"), func(p *v1.Pod) { p.Spec.NodeName = "dgx" },
		annotated(assignment.Annotation, `{"main":[{"uuid":"`+bad+`","percent":100}]}`))
	if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		pods := a.PodsUsing(bad)
		return len(pods) == 1 && pods[0].UID == holder.UID, nil
	}); err != nil {
		t.Fatalf("the device plugin never saw that %s holds %s", holder.Name, bad)
	}
	if err := a.Machine().InjectXID(bad, 13); err != nil { // an application error: ignored
		t.Fatal(err)
	}
	if err := a.Machine().InjectXID(bad, 79); err != nil {
		t.Fatal(err)
	}
	gn = e.waitGPUNode("dgx", func(gn *v1alpha1.GPUNode) bool { return gn.Status.HealthyCount == 7 })
	for _, g := range gn.Status.GPUs {
		if g.UUID != bad {
			continue
		}
		if g.Health.Healthy || g.Health.Reason != "XID 79" || len(g.Taints) != 1 || g.Taints[0].Key != "tessera.io/xid" || g.Taints[0].Value != "79" {
			t.Errorf("GPU after XID 79: %+v", g)
		}
	}
	// The event is on the GPUNode as kubectl describe looks for it: by
	// name, kind and UID, across namespaces.
	e.waitGPUNodeEvent(gn, "GPUUnhealthy", "GPU "+bad+": unhealthy: XID 79")
	e.waitEvent("holder", "GPUUnhealthy: GPU "+bad+", which this pod holds on node dgx, is unhealthy: XID 79")
	if m := scrapeDevicePluginMetrics(t); !strings.Contains(m, `tessera_device_plugin_xid_events_total{gpu="`+bad+`",xid="79"} 1`) ||
		!strings.Contains(m, `tessera_device_plugin_gpu_health_transitions_total{gpu="`+bad+`",healthy="false"} 1`) || strings.Contains(m, `xid="13"`) ||
		!strings.Contains(m, `tessera_device_plugin_gpu_healthy{gpu="`+bad+`",node="dgx"} 0`) ||
		strings.Count(m, `tessera_device_plugin_gpu_healthy{gpu=`) != 8 || strings.Count(m, `tessera_device_plugin_gpu_info{gpu=`) != 8 {
		t.Errorf("device plugin metrics after XIDs 13 and 79:\n%s", m)
	}
	// Eight whole-GPU pods: seven fit, the eighth does not, and none gets
	// the unhealthy GPU. The scheduler reads the GPUNode through its own
	// informer, so wait until its cache counts the GPU as unhealthy.
	want := `tessera_scheduler_gpus{model="NVIDIA A100-SXM4-40GB",state="unhealthy"} 1`
	if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		return strings.Contains(scrapeSchedulerMetrics(t), want), nil
	}); err != nil {
		t.Fatalf("the scheduler's metrics never showed %s", want)
	}
	ws := map[string]bool{}
	for i := 0; i < 8; i++ {
		name := "w" + string(rune('0'+i))
		ws[name] = true
		e.createPod(name, gpus(1))
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && len(e.checkBookings(ws)) < 7 {
		time.Sleep(100 * time.Millisecond)
	}
	use := e.checkBookings(ws)
	if len(use) != 7 || use[bad] != 0 {
		t.Errorf("GPU use %v; want 7 GPUs, not %s", use, bad)
	}

	// A GPUNode deleted and created again has a new UID; a health event
	// raised while it is gone names the new one.
	if err := e.c.GPU.TesseraV1alpha1().GPUNodes().Delete(e.ctx, "dgx", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	bad2 := a.Machine().UUIDs()[1]
	if err := a.Machine().InjectXID(bad2, 79); err != nil {
		t.Fatal(err)
	}
	regn := e.waitGPUNode("dgx", func(g *v1alpha1.GPUNode) bool { return g.UID != gn.UID && g.Status.HealthyCount == 6 })
	e.waitGPUNodeEvent(regn, "GPUUnhealthy", "GPU "+bad2+": unhealthy: XID 79")
}

// waitGPUNodeEvent waits for an event on the GPUNode found the way kubectl
// describe finds them (name, kind and UID, in any namespace), and checks
// that it is in the namespace the recorder gives cluster-scoped objects.
func (e *env) waitGPUNodeEvent(gn *v1alpha1.GPUNode, reason, message string) {
	e.t.Helper()
	events := e.c.Client.CoreV1().Events(metav1.NamespaceAll)
	ns, kind, uid := "", "GPUNode", string(gn.UID)
	sel := events.GetFieldSelector(&gn.Name, &ns, &kind, &uid).String()
	var seen []string
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := events.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, ev := range list.Items {
			seen = append(seen, ev.Namespace+"/"+ev.Reason+": "+ev.Message)
			if ev.Reason == reason && ev.Message == message && ev.Namespace == metav1.NamespaceDefault &&
				ev.InvolvedObject.UID == gn.UID && ev.InvolvedObject.Namespace == "" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		all, _ := events.List(e.ctx, metav1.ListOptions{})
		var everything []string
		for _, ev := range all.Items {
			everything = append(everything, fmt.Sprintf("%s/%s %s/%s uid %q: %s", ev.Namespace, ev.Reason, ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.InvolvedObject.UID, ev.Message))
		}
		e.t.Fatalf("no %s event %q on GPUNode %s (uid %s); selected %v; all events %v", reason, message, gn.Name, gn.UID, seen, everything)
	}
}

func (e *env) waitGPUNode(name string, ok func(*v1alpha1.GPUNode) bool) *v1alpha1.GPUNode {
	e.t.Helper()
	var gn *v1alpha1.GPUNode
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		g, err := e.c.GPU.TesseraV1alpha1().GPUNodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		gn = g
		return ok(g), nil
	})
	if err != nil {
		e.t.Fatalf("GPUNode %s never reached the expected state: %+v", name, gn)
	}
	return gn
}

// scrapeDevicePluginMetrics reads the device plugin's /metrics as its
// endpoint serves it.
func scrapeDevicePluginMetrics(t *testing.T) string {
	t.Helper()
	return scrape(t, compmetrics.HandlerFor(dpmetrics.Registry, compmetrics.HandlerOpts{}))
}

// scrapeSchedulerMetrics reads the registry tessera-scheduler serves on its
// /metrics endpoint.
func scrapeSchedulerMetrics(t *testing.T) string {
	t.Helper()
	return scrape(t, legacyregistry.Handler())
}

// scrape reads what h serves over HTTP.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
