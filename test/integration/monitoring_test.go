package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/deviceplugin/agent"
	"github.com/tessera-gpu/tessera/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// promqlWords are the PromQL functions, aggregations and keywords the
// dashboard and the alerts may use.
var promqlWords = map[string]bool{
	"sum": true, "count": true, "avg": true, "min": true, "max": true, "topk": true, "bottomk": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"rate": true, "irate": true, "increase": true, "delta": true, "histogram_quantile": true,
	"absent": true, "clamp_min": true, "clamp_max": true, "time": true, "vector": true,
}

// exported reads the metric names (from # TYPE lines, with a histogram's
// _bucket, _sum and _count) and label names a /metrics page shows.
func exported(pages ...string) (metrics, labels map[string]bool) {
	metrics, labels = map[string]bool{}, map[string]bool{}
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	for _, page := range pages {
		for _, line := range strings.Split(page, "\n") {
			if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
				metrics[f[2]] = true
				if f[3] == "histogram" {
					for _, s := range []string{"_bucket", "_sum", "_count"} {
						metrics[f[2]+s] = true
					}
				}
				continue
			}
			if i := strings.IndexByte(line, '{'); i > 0 && !strings.HasPrefix(line, "#") {
				for _, m := range label.FindAllStringSubmatch(line[i:], -1) {
					labels[m[1]] = true
				}
			}
		}
	}
	return metrics, labels
}

// unknownNames returns the names in a PromQL expression that are neither
// PromQL words nor exported metric or label names.
func unknownNames(expr string, metrics, labels map[string]bool) []string {
	expr = regexp.MustCompile(`"[^"]*"`).ReplaceAllString(expr, `""`)    // label values
	expr = regexp.MustCompile(`\[[^\]]*\]`).ReplaceAllString(expr, "")   // ranges
	expr = regexp.MustCompile(`\$[a-zA-Z_]+`).ReplaceAllString(expr, "") // Grafana variables
	var out []string
	for _, name := range regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`).FindAllString(expr, -1) {
		if !promqlWords[name] && !metrics[name] && !labels[name] {
			out = append(out, name)
		}
	}
	return out
}

// TestDashboardAndAlertsUseExportedMetrics runs tessera-scheduler and
// tessera-device-plugin (fake mode, against the kubelet's device manager)
// through placements, a rejection, a kubelet allocation and an XID, so that
// every metric they export has a series, then checks that every query of
// the shipped Grafana dashboard and every alert expression names only
// metrics and labels that the binaries really export.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	const node = "dgx"
	e.addNode(node, localcluster.FakeNode{GPUs: 8, NoInventory: true, NoTaint: true})
	k := startKubelet(t, shortTempDir(t))
	started := make(chan *agent.Agent, 1)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Run(ctx, agent.Config{NodeName: node, Kube: e.c.Client, GPU: e.c.GPU, Fake: "dgxh100",
			DevicePluginDir: k.dir, KubeletRecord: k, Heartbeat: time.Second, ReconcileInterval: time.Second,
			Health: health.DefaultConfig()}, func(a *agent.Agent) { started <- a })
	}()
	defer func() { cancel(); <-done }()
	a := <-started
	e.waitGPUNode(node, func(gn *v1alpha1.GPUNode) bool { return gn.Status.GPUCount == 8 })
	k.waitAllocatable("nvidia.com/gpu", 8)

	e.createPod("whole", gpus(1))
	e.createPod("share", share(30))
	for _, name := range []string{"whole", "share"} {
		if err := k.admit(e.ctx, e.waitBound(name)); err != nil {
			t.Fatalf("admitting %s: %v", name, err)
		}
	}
	e.createPod("too-big", gpus(9))
	e.waitUnschedulable("too-big", "")
	if err := a.Machine().InjectXID(a.Machine().UUIDs()[7], 79); err != nil {
		t.Fatal(err)
	}
	e.waitGPUNode(node, func(gn *v1alpha1.GPUNode) bool { return gn.Status.HealthyCount == 7 })

	var metrics, labels map[string]bool
	need := []string{"scheduler_unschedulable_pods", "tessera_device_plugin_xid_events_total", "tessera_device_plugin_allocate_duration_seconds_bucket"}
	if err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		metrics, labels = exported(scrapeSchedulerMetrics(t), scrapeDevicePluginMetrics(t))
		for _, n := range need {
			if !metrics[n] {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatalf("the binaries never exported all of %v", need)
	}

	monitoring := filepath.Join(chartDir, "files", "monitoring")
	raw, err := os.ReadFile(filepath.Join(monitoring, "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	exprs := map[string]string{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs["panel "+p.Title] += tg.Expr + "\n"
		}
	}
	raw, err = os.ReadFile(filepath.Join(monitoring, "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var groups []struct {
		Name  string
		Rules []struct {
			Alert, Expr, For    string
			Labels, Annotations map[string]string
		}
	}
	if err := yaml.UnmarshalStrict(raw, &groups); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	if len(exprs) < 10 {
		t.Fatalf("only %d queries found", len(exprs))
	}
	for what, expr := range exprs {
		if bad := unknownNames(expr, metrics, labels); len(bad) > 0 {
			sort.Strings(bad)
			t.Errorf("%s uses names the binaries do not export: %v\n%s", what, bad, expr)
		}
	}
}
