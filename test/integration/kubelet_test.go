package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/deviceplugin/discovery"
	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
	"github.com/tessera-gpu/tessera/deviceplugin/server"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// shortTempDir returns a temporary directory with a short path: unix socket
// paths are limited to 108 bytes.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "tdp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fakeNodeGPUs discovers a fake machine's GPUs as the device plugin does.
func fakeNodeGPUs(t testing.TB, kind, node string) (*fakegpu.Machine, discovery.Inventory) {
	t.Helper()
	m, err := fakegpu.New(kind, node)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := discovery.Discover(m)
	if err != nil {
		t.Fatal(err)
	}
	return m, inv
}

// pluginOnKubelet starts the real kubelet device manager and the device
// plugin's endpoints for a fake DGX H100 named node.
func pluginOnKubelet(ctx context.Context, tb testing.TB, node string, cdi bool) (*kubelet, *handoff.Ledger, *server.Server, discovery.Inventory) {
	tb.Helper()
	dir := shortTempDir(tb)
	k := startKubelet(tb, dir)
	_, inv := fakeNodeGPUs(tb, "dgxh100", node)
	ledger := handoff.NewLedger(uuidsOf(inv))
	srv := server.New(server.Options{Dir: dir, CDI: cdi}, ledger, serverGPUs(inv))
	go srv.Run(ctx)
	return k, ledger, srv, inv
}

func uuidsOf(inv discovery.Inventory) []string {
	var out []string
	for _, g := range inv.GPUs {
		out = append(out, g.UUID)
	}
	return out
}

func serverGPUs(inv discovery.Inventory, unhealthy ...string) []server.GPU {
	var out []server.GPU
	for _, g := range inv.GPUs {
		bad := false
		for _, u := range unhealthy {
			bad = bad || u == g.UUID
		}
		out = append(out, server.GPU{UUID: g.UUID, NUMANode: g.NUMANode, Healthy: !bad})
	}
	return out
}

func assignedPod(name string, a assignment.Assignment, res v1.ResourceName, qty int64) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			Annotations: map[string]string{assignment.Annotation: a.String()}},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{
			Limits: v1.ResourceList{res: *resource.NewQuantity(qty, resource.DecimalSI)}}}}},
	}
}

// TestDevicePluginWithKubeletDeviceManager runs the device plugin against
// the real kubelet device manager: registration, ListAndWatch, steering
// through GetPreferredAllocation, Allocate, consistent counts across the two
// resources, health, and re-registration after a kubelet restart.
func TestDevicePluginWithKubeletDeviceManager(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k, ledger, srv, inv := pluginOnKubelet(ctx, t, "node-a", true)
	uuids := uuidsOf(inv)

	k.waitAllocatable(v1.ResourceName(handoff.Whole), 8)
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 800)
	// The device plugin's readiness: the kubelet watches both resources.
	waitServing(t, srv, true)

	// Two whole GPUs the kubelet would not pick on its own.
	a := assignedPod("two", assignment.Assignment{"main": {{UUID: uuids[3], Percent: 100}, {UUID: uuids[5], Percent: 100}}}, "nvidia.com/gpu", 2)
	if err := ledger.UpsertPod(a); err != nil {
		t.Fatal(err)
	}
	if err := k.admit(ctx, a); err != nil {
		t.Fatal(err)
	}
	got := k.m.GetDevices(string(a.UID), "main")[string(handoff.Whole)]
	if _, ok3 := got[uuids[3]]; len(got) != 2 || !ok3 || got[uuids[5]] == nil {
		t.Fatalf("kubelet gave %v, want GPUs 3 and 5", got)
	}
	opts, err := k.m.GetDeviceRunContainerOptions(ctx, a, &a.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range opts.Envs {
		env[e.Name] = e.Value
	}
	if v := env["NVIDIA_VISIBLE_DEVICES"]; !strings.Contains(v, uuids[3]) || !strings.Contains(v, uuids[5]) {
		t.Errorf("NVIDIA_VISIBLE_DEVICES = %q", v)
	}
	if len(opts.CDIDevices) != 2 || !strings.HasPrefix(opts.CDIDevices[0].Name, "nvidia.com/gpu=GPU-") {
		t.Errorf("CDI devices %v", opts.CDIDevices)
	}

	// A 30 % share on GPU 6.
	b := assignedPod("share", assignment.Assignment{"main": {{UUID: uuids[6], Percent: 30}}}, "tessera.io/gpu-percent", 30)
	ledger.UpsertPod(b)
	if err := k.admit(ctx, b); err != nil {
		t.Fatal(err)
	}
	ids := k.m.GetDevices(string(b.UID), "main")[string(handoff.Percent)]
	if len(ids) != 30 {
		t.Fatalf("share got %d IDs", len(ids))
	}
	for id := range ids {
		if u, _, _ := handoff.ParsePercentID(id); u != uuids[6] {
			t.Fatalf("share got %s, not on GPU 6", id)
		}
	}
	// GPU 6 no longer counts as a whole GPU; GPUs 3 and 5 offer no shares.
	k.waitAllocatable(v1.ResourceName(handoff.Whole), 7)
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 600)

	// An unhealthy GPU leaves allocatable.
	srv.SetGPUs(serverGPUs(inv, uuids[0]))
	k.waitAllocatable(v1.ResourceName(handoff.Whole), 6)
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 500)

	// Asking for more than is left fails admission and holds nothing.
	big := assignedPod("big", assignment.Assignment{"main": {{UUID: uuids[1], Percent: 100}}}, "nvidia.com/gpu", 7)
	if err := k.admit(ctx, big); err == nil {
		t.Error("a pod asking for 7 GPUs with 4 free was admitted")
	}

	if m := scrapeDevicePluginMetrics(t); !strings.Contains(m, `tessera_device_plugin_allocate_duration_seconds_count{resource="nvidia.com/gpu"}`) {
		t.Errorf("no Allocate latency metric:\n%s", m)
	}

	// A kubelet restart wipes the sockets; the plugin is not ready while
	// the kubelet is away, registers again and is ready again, and the
	// checkpoint keeps the earlier allocations.
	k.stop()
	waitServing(t, srv, false)
	k.start()
	waitServing(t, srv, true)
	k.waitAllocatable(v1.ResourceName(handoff.Whole), 6)
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 500)
	if got := k.m.GetDevices(string(a.UID), "main")[string(handoff.Whole)]; len(got) != 2 {
		t.Errorf("after restart the pod holds %v", got)
	}
}

// planPod is a pod with one init container and one app container, each
// with the given GPU limits, and the scheduler's assignment a.
func planPod(name string, a assignment.Assignment, init, app v1.Container) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			Annotations: map[string]string{assignment.Annotation: a.String()}},
		Spec: v1.PodSpec{InitContainers: []v1.Container{init}, Containers: []v1.Container{app}},
	}
}

// gpuLimit is a container resource list asking n of a GPU resource.
func gpuLimit(r handoff.Resource, n int64) v1.ResourceRequirements {
	return v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceName(r): *resource.NewQuantity(n, resource.DecimalSI)}}
}

// admitPlanned tells the ledger of the pod, as its informer would, and has
// the kubelet admit it.
func admitPlanned(ctx context.Context, t *testing.T, k *kubelet, ledger *handoff.Ledger, pod *v1.Pod) {
	t.Helper()
	if err := ledger.UpsertPod(pod); err != nil {
		t.Fatal(err)
	}
	if err := k.admit(ctx, pod); err != nil {
		t.Fatalf("admission of %s: %v", pod.Name, err)
	}
}

// observe hands the ledger the kubelet's record, as the reconciler does,
// and returns it.
func observe(ctx context.Context, t *testing.T, k *kubelet, ledger *handoff.Ledger) []handoff.ContainerDevices {
	t.Helper()
	devs, err := k.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ledger.ObserveKubelet(devs)
	return devs
}

// noCorrections fails the test if the ledger would rewrite an annotation.
func noCorrections(t *testing.T, ledger *handoff.Ledger, why string) {
	t.Helper()
	if cs := ledger.Corrections(); len(cs) != 0 {
		t.Errorf("corrections %+v; %s", cs, why)
	}
}

// TestInitContainerGPUsOnKubelet admits, through the real kubelet device
// manager, a pod whose init container and app container each ask for one
// whole GPU: the scheduler plans one GPU for both (the kubelet hands the
// init container's GPU on), the kubelet serves that GPU, and the ledger's
// view of the kubelet's record (one PodResources entry per device ID, no
// init containers) needs no correction.
func TestInitContainerGPUsOnKubelet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k, ledger, _, inv := pluginOnKubelet(ctx, t, "node-a", false)
	uuids := uuidsOf(inv)
	k.waitAllocatable(v1.ResourceName(handoff.Whole), 8)

	a := assignment.Assignment{"prep": {{UUID: uuids[2], Percent: 100}}, "main": {{UUID: uuids[2], Percent: 100}}}
	pod := planPod("staged", a, v1.Container{Name: "prep", Resources: gpuLimit(handoff.Whole, 1)},
		v1.Container{Name: "main", Resources: gpuLimit(handoff.Whole, 1)})
	admitPlanned(ctx, t, k, ledger, pod)
	for _, c := range []string{"prep", "main"} {
		got := k.m.GetDevices(string(pod.UID), c)[string(handoff.Whole)]
		if _, ok := got[uuids[2]]; len(got) != 1 || !ok {
			t.Errorf("%s got %v, want GPU 2", c, got)
		}
	}
	// A 30% share alongside, to see the listing's shape.
	admitPlanned(ctx, t, k, ledger, assignedPod("share", assignment.Assignment{"main": {{UUID: uuids[6], Percent: 30}}}, v1.ResourceName(handoff.Percent), 30))
	devs := observe(ctx, t, k, ledger)
	perContainer := map[string]int{}
	for _, d := range devs {
		if len(d.IDs) != 1 {
			t.Errorf("listing entry %+v has %d IDs; the kubelet lists one per entry", d, len(d.IDs))
		}
		perContainer[d.Pod+"/"+d.Container]++
	}
	if want := map[string]int{"staged/main": 1, "share/main": 30}; fmt.Sprint(perContainer) != fmt.Sprint(want) {
		t.Errorf("listing entries per container %v, want %v (no init containers, one entry per ID)", perContainer, want)
	}
	noCorrections(t, ledger, "the kubelet served the plan")
}

// TestSidecarBesideAppOnKubelet admits a pod whose sidecar (a restartable
// init container) and app container each hold a share of one GPU, as the
// scheduler plans them (they run together, so their shares add up). The
// kubelet does not pass a sidecar's devices on: each container gets its own
// percent IDs, both on the planned GPU, and the record needs no correction.
func TestSidecarBesideAppOnKubelet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k, ledger, _, inv := pluginOnKubelet(ctx, t, "node-a", false)
	uuids := uuidsOf(inv)
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 800)

	always := v1.ContainerRestartPolicyAlways
	a := assignment.Assignment{"proxy": {{UUID: uuids[5], Percent: 20}}, "main": {{UUID: uuids[5], Percent: 30}}}
	pod := planPod("with-sidecar", a, v1.Container{Name: "proxy", RestartPolicy: &always, Resources: gpuLimit(handoff.Percent, 20)},
		v1.Container{Name: "main", Resources: gpuLimit(handoff.Percent, 30)})
	admitPlanned(ctx, t, k, ledger, pod)
	for c, want := range map[string]int{"proxy": 20, "main": 30} {
		ids := k.m.GetDevices(string(pod.UID), c)[string(handoff.Percent)]
		if len(ids) != want {
			t.Errorf("%s got %d percent IDs, want %d", c, len(ids), want)
		}
		for id := range ids {
			if u, _, _ := handoff.ParsePercentID(id); u != uuids[5] {
				t.Errorf("%s got %s, not on the planned GPU", c, id)
				break
			}
		}
	}
	observe(ctx, t, k, ledger)
	noCorrections(t, ledger, "the kubelet served the plan")
}

// TestSameNameReplacementOnKubelet: a pod is force-deleted from the API
// while the kubelet still runs it, and a pod of the same name is placed on
// another GPU. The kubelet lists both as "default/job"; the new pod is
// steered to its own GPU and its annotation is left alone.
func TestSameNameReplacementOnKubelet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k, ledger, _, inv := pluginOnKubelet(ctx, t, "node-a", false)
	uuids := uuidsOf(inv)
	k.waitAllocatable(v1.ResourceName(handoff.Whole), 8)

	old := assignedPod("job", assignment.Assignment{"main": {{UUID: uuids[3], Percent: 100}}}, v1.ResourceName(handoff.Whole), 1)
	admitPlanned(ctx, t, k, ledger, old)
	observe(ctx, t, k, ledger)
	ledger.DeletePod(old.UID) // force-deleted; the kubelet still runs it

	repl := assignedPod("job", assignment.Assignment{"main": {{UUID: uuids[5], Percent: 100}}}, v1.ResourceName(handoff.Whole), 1)
	repl.UID = "uid-job-2"
	if err := ledger.UpsertPod(repl); err != nil {
		t.Fatal(err)
	}
	observe(ctx, t, k, ledger)
	if err := k.admit(ctx, repl); err != nil {
		t.Fatalf("admission of the replacement: %v", err)
	}
	if got := k.m.GetDevices(string(repl.UID), "main")[string(handoff.Whole)]; len(got) != 1 || got[uuids[5]] == nil {
		t.Errorf("the replacement got %v, want GPU 5", got)
	}
	observe(ctx, t, k, ledger)
	noCorrections(t, ledger, "the old pod's GPU was credited to the new one")
}

// schedulerPlan is the assignment the scheduler's planner makes for pod on
// an empty node with inv's GPUs (binpack), written into the pod's
// annotation as the Binding would, so the node-side tests admit what the
// scheduler really asks for, not a hand-written guess.
func schedulerPlan(t *testing.T, inv discovery.Inventory, pod *v1.Pod) assignment.Assignment {
	t.Helper()
	req, err := gpu.ParsePod(pod)
	if err != nil {
		t.Fatal(err)
	}
	var specs []device.DeviceSpec
	for _, g := range inv.GPUs {
		specs = append(specs, device.DeviceSpec{ID: g.UUID, Model: g.Model, MemoryMiB: g.MemoryMiB, NUMANode: g.NUMANode, Healthy: true})
	}
	di := device.NewInventory("node", time.Now(), specs)
	usable, avoid, why := device.Usable(di, req)
	if why != device.Fits {
		t.Fatalf("no usable GPUs: %v", why)
	}
	p, ok := device.Plan(di, make([]int, di.Len()), req, usable, avoid, device.Binpack)
	if !ok {
		t.Fatal("the planner cannot place the pod on an empty node")
	}
	a := assignment.Assignment{}
	for i, gs := range p.Grants(req) {
		for _, g := range gs {
			name := req.Containers[i].Name
			a[name] = append(a[name], assignment.Device{UUID: di.Devices[g.Device].ID, Percent: g.Units})
		}
	}
	pod.Annotations[assignment.Annotation] = a.String()
	return a
}

// kubeletLoad is how much of each GPU the kubelet's own record gives out,
// init containers included (the kubelet keeps their devices for the pod's
// life): 100 for a whole GPU, 1 per percent ID.
func kubeletLoad(k *kubelet) map[string]int {
	load := map[string]int{}
	for _, p := range k.activePods() {
		for _, c := range append(append([]v1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
			devs := k.m.GetDevices(string(p.UID), c.Name)
			for id := range devs[string(handoff.Whole)] {
				load[id] += 100
			}
			for id := range devs[string(handoff.Percent)] {
				u, _, _ := handoff.ParsePercentID(id)
				load[u]++
			}
		}
	}
	return load
}

// TestInitShareThenWholeAppOnKubelet admits a pod whose init container
// asks for a 30 % share and whose app container asks for a whole GPU, as
// the scheduler plans it. The kubelet keeps the init container's percent
// IDs for the pod's life and cannot hand them on to a whole-GPU request,
// so the plan must put the share on another GPU than the whole one; the
// device plugin must admit both, and the record needs no correction.
func TestInitShareThenWholeAppOnKubelet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k, ledger, _, inv := pluginOnKubelet(ctx, t, "node-a", false)
	k.waitAllocatable(v1.ResourceName(handoff.Whole), 8)
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 800)

	pod := planPod("mixed-init", nil, v1.Container{Name: "prep", Resources: gpuLimit(handoff.Percent, 30)},
		v1.Container{Name: "main", Resources: gpuLimit(handoff.Whole, 1)})
	a := schedulerPlan(t, inv, pod)
	if a["prep"][0].UUID == a["main"][0].UUID {
		t.Fatalf("the plan %s puts the init share on the app's whole GPU", a)
	}
	admitPlanned(ctx, t, k, ledger, pod)
	observe(ctx, t, k, ledger)
	noCorrections(t, ledger, "the kubelet served the plan")
	for u, n := range kubeletLoad(k) {
		if n > 100 {
			t.Errorf("GPU %s at %d%%", u, n)
		}
	}
	// The share's GPU no longer counts whole, the whole GPU offers no
	// shares, and both stay so after the init container has run.
	k.waitAllocatable(v1.ResourceName(handoff.Whole), 7)
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 700)
}

// TestPluginRestartKeepsInitGPUsOnKubelet: an init container holds a whole
// GPU (the app container asks only a share, so nothing takes the GPU over)
// when the device plugin restarts with a blank ledger. The new ledger reads
// the pods and the kubelet's record before serving, as the agent does, so
// pods of another scheduler admitted afterwards never get shares of that
// GPU: no GPU is given out beyond 100 %.
func TestPluginRestartKeepsInitGPUsOnKubelet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := startKubelet(t, shortTempDir(t))
	_, inv := fakeNodeGPUs(t, "dgxh100", "node-a")
	ledger := handoff.NewLedger(uuidsOf(inv))
	pctx, stopPlugin := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = server.New(server.Options{Dir: k.dir}, ledger, serverGPUs(inv)).Run(pctx)
	}()
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 800)

	pod := planPod("warm", nil, v1.Container{Name: "prep", Resources: gpuLimit(handoff.Whole, 1)},
		v1.Container{Name: "main", Resources: gpuLimit(handoff.Percent, 40)})
	a := schedulerPlan(t, inv, pod)
	admitPlanned(ctx, t, k, ledger, pod)
	observe(ctx, t, k, ledger)
	noCorrections(t, ledger, "the kubelet served the plan")
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 700)

	// The plugin goes away and comes back with nothing in memory.
	stopPlugin()
	<-stopped
	// The kubelet drops a vanished plugin's devices from allocatable (pods
	// admitted in that window fail with "no healthy devices present");
	// wait for that, so the count below is the new plugin's.
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 0)
	ledger = handoff.NewLedger(uuidsOf(inv))
	if err := ledger.UpsertPod(pod); err != nil {
		t.Fatal(err)
	}
	observe(ctx, t, k, ledger)
	go server.New(server.Options{Dir: k.dir}, ledger, serverGPUs(inv)).Run(ctx)
	k.waitAllocatable(v1.ResourceName(handoff.Percent), 700)

	// Seven pods of another scheduler (no assignment) ask 90 % each: six
	// fit on the six empty GPUs, and the seventh must not be put on the
	// init container's GPU.
	for i := 0; i < 7; i++ {
		foreign := assignedPod(fmt.Sprintf("foreign-%d", i), nil, v1.ResourceName(handoff.Percent), 90)
		delete(foreign.Annotations, assignment.Annotation)
		if err := ledger.UpsertPod(foreign); err != nil {
			t.Fatal(err)
		}
		err := k.admit(ctx, foreign)
		if i < 6 && err != nil {
			t.Errorf("foreign pod %d not admitted with an empty GPU left: %v", i, err)
		}
		observe(ctx, t, k, ledger)
	}
	held := a["prep"][0].UUID
	load := kubeletLoad(k)
	for u, n := range load {
		if n > 100 {
			t.Errorf("GPU %s at %d%% (the init container's GPU is %s)", u, n, held)
		}
	}
	// The device plugin's per-GPU allocation gauge reads the restarted
	// ledger: it must be what the kubelet really gave out.
	for u, n := range ledger.Allocated() {
		if n != load[u] {
			t.Errorf("the ledger counts GPU %s at %d%%, the kubelet at %d%%", u, n, load[u])
		}
	}
}

// waitServing waits until the server's Serving (the device plugin's
// readiness) is want.
func waitServing(t *testing.T, srv *server.Server, want bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return srv.Serving() == want, nil
	}); err != nil {
		t.Fatalf("the device plugin's Serving never became %v", want)
	}
}
