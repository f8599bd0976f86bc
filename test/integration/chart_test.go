package integration

// Tests of the Helm chart (manifests/charts/tessera), the plain manifests
// rendered from it (manifests/install) and the example pods
// (manifests/examples): rendered by the real helm binary, applied to the
// in-process apiserver, and the scheduler run with the rendered
// configuration, arguments and permissions.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	kubeschedulerconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	kubeschedulervalidation "k8s.io/kubernetes/pkg/scheduler/apis/config/validation"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/config/scheme"
	"github.com/tessera-gpu/tessera/manifests"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

const (
	repoRoot = "../.."
	chartDir = repoRoot + "/manifests/charts/tessera"
)

// helmBinary finds helm: $TESSERA_HELM, else bin/helm of the repository
// (make bin/helm builds it). Without one the chart tests are skipped, unless
// TESSERA_REQUIRE_HELM=1 (make test sets it), which makes that a failure.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TESSERA_HELM"); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join(repoRoot, "bin", "helm"))
	if err == nil {
		if _, err = os.Stat(p); err == nil {
			return p
		}
	}
	msg := "no helm binary: set TESSERA_HELM or run 'make bin/helm' (make test builds and requires it)"
	if os.Getenv("TESSERA_REQUIRE_HELM") == "1" {
		t.Fatal(msg + "; TESSERA_REQUIRE_HELM=1")
	}
	t.Skip(msg)
	return ""
}

// helmTemplate renders the chart as release in namespace with --set values.
func helmTemplate(t *testing.T, release, namespace string, set ...string) ([]byte, error) {
	t.Helper()
	return helmTemplateWith(t, release, namespace, nil, set...)
}

// helmTemplateWith is helmTemplate with extra helm flags.
func helmTemplateWith(t *testing.T, release, namespace string, flags []string, set ...string) ([]byte, error) {
	t.Helper()
	args := append([]string{"template", release, chartDir, "--namespace", namespace}, flags...)
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helmBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// parseObjects splits a multi-document manifest into objects.
func parseObjects(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			t.Fatalf("rendered document does not parse: %v\n%s", err, doc)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

func findObject(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("the chart renders no %s %s", kind, name)
	return nil
}

func toTyped(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// Objects the chart renders are applied for real where later steps need
// them (the namespace, the CRD, every RBAC object and the admission
// policies, which then take effect) and as a server-side dry run otherwise:
// the apiserver validates and admits them but nothing runs them here.
var (
	applyForReal = map[string]bool{
		"Namespace": true, "CustomResourceDefinition": true,
		"ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
		"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
		"MutatingAdmissionPolicy": true, "MutatingAdmissionPolicyBinding": true,
	}
	applyDryRun = map[string]bool{"ServiceAccount": true, "ConfigMap": true, "Deployment": true, "DaemonSet": true,
		"PodDisruptionBudget": true, "Service": true, "Job": true}
)

// applyChart applies every rendered object and reports each error.
func applyChart(t *testing.T, ctx context.Context, c *localcluster.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		kind := o.GetKind()
		if !applyForReal[kind] && !applyDryRun[kind] {
			t.Errorf("the chart renders a %s (%s); decide in chart_test.go how to apply it", kind, o.GetName())
			continue
		}
		data, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(ctx, data, !applyForReal[kind]); err != nil {
			t.Errorf("applying (dry run %v): %v", !applyForReal[kind], err)
		}
	}
}

// loadSchedulerConfig decodes the rendered ConfigMap's configuration the way
// tessera-scheduler does (kube-scheduler's loader with Tessera's arg types
// registered), runs the scheduler's own validation and the plugins' arg
// decoding, and returns it with the raw YAML.
func loadSchedulerConfig(t *testing.T, objs []*unstructured.Unstructured, cmName string) (*kubeschedulerconfig.KubeSchedulerConfiguration, []byte) {
	t.Helper()
	var cm v1.ConfigMap
	toTyped(t, findObject(t, objs, "ConfigMap", cmName), &cm)
	raw, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no config.yaml", cmName)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := options.LoadConfigFromFile(klog.Background(), path)
	if err != nil {
		t.Fatalf("the scheduler cannot load the rendered configuration: %v\n%s", err, raw)
	}
	if err := kubeschedulervalidation.ValidateKubeSchedulerConfiguration(cfg); err != nil {
		t.Fatalf("the scheduler's validation rejects the rendered configuration: %v", err)
	}
	if len(cfg.Profiles) != 1 {
		t.Fatalf("rendered configuration has %d profiles, want 1", len(cfg.Profiles))
	}
	for _, pc := range cfg.Profiles[0].PluginConfig {
		var err error
		switch pc.Name {
		case config.TesseraGPUName:
			_, err = scheme.DecodeTesseraGPUArgs(pc.Args)
		case config.TesseraTaintTolerationName:
			_, err = scheme.DecodeTesseraTaintTolerationArgs(pc.Args)
		}
		if err != nil {
			t.Errorf("%s args: %v", pc.Name, err)
		}
	}
	return cfg, []byte(raw)
}

func gpuArgs(t *testing.T, cfg *kubeschedulerconfig.KubeSchedulerConfiguration) *config.TesseraGPUArgs {
	t.Helper()
	for _, pc := range cfg.Profiles[0].PluginConfig {
		if pc.Name == config.TesseraGPUName {
			a, err := scheme.DecodeTesseraGPUArgs(pc.Args)
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
	}
	t.Fatal("no TesseraGPU args")
	return nil
}

func startChartCluster(t *testing.T) (context.Context, *localcluster.Cluster, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, TB: t})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return ctx, c, dir
}

func serviceAccountUser(namespace, name string) (string, []string) {
	return "system:serviceaccount:" + namespace + ":" + name,
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}

// TestChartInstallsAndSchedules renders the chart with its default values,
// applies it, runs tessera-scheduler as the Deployment would (its
// arguments, the ConfigMap's configuration, the service account's
// permissions), checks its HTTPS probes, and schedules every example pod on
// fake GPU nodes.
func TestChartInstallsAndSchedules(t *testing.T) {
	helmBinary(t)
	const release, ns = "tessera", "tessera-system"
	out, err := helmTemplate(t, release, ns, "namespace.create=true")
	if err != nil {
		t.Fatal(err)
	}
	objs := parseObjects(t, out)
	ctx, c, dir := startChartCluster(t)
	applyChart(t, ctx, c, objs)
	if t.Failed() {
		t.FailNow()
	}

	// The configuration: the shipped profile, leader election on in the
	// release namespace.
	cfg, raw := loadSchedulerConfig(t, objs, "tessera-scheduler-config")
	le := cfg.LeaderElection
	if !le.LeaderElect || le.ResourceName != "tessera-scheduler" || le.ResourceNamespace != ns || le.ResourceLock != "leases" {
		t.Errorf("leader election = %+v, want on with lease %s/tessera-scheduler", le, ns)
	}
	example, err := options.LoadConfigFromFile(klog.Background(), filepath.Join(repoRoot, "config/examples/tessera-scheduler.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(example.Profiles, cfg.Profiles); diff != "" {
		t.Errorf("the chart's default profile differs from config/examples/tessera-scheduler.yaml (-example +chart):\n%s", diff)
	}

	// The Deployment mounts that ConfigMap where its --config points.
	var deploy appsv1.Deployment
	toTyped(t, findObject(t, objs, "Deployment", "tessera-scheduler"), &deploy)
	pod := deploy.Spec.Template.Spec
	ctr := pod.Containers[0]
	var configArg string
	for _, a := range ctr.Args {
		if strings.HasPrefix(a, "--config=") {
			configArg = strings.TrimPrefix(a, "--config=")
		}
	}
	mounted := false
	for _, m := range ctr.VolumeMounts {
		for _, vol := range pod.Volumes {
			if vol.Name == m.Name && vol.ConfigMap != nil && vol.ConfigMap.Name == "tessera-scheduler-config" &&
				filepath.Join(m.MountPath, "config.yaml") == configArg {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Fatalf("--config=%s is not the config.yaml of the mounted ConfigMap tessera-scheduler-config", configArg)
	}
	if pod.ServiceAccountName != "tessera-scheduler" {
		t.Errorf("serviceAccountName = %q", pod.ServiceAccountName)
	}
	sc := ctr.SecurityContext
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || len(sc.Capabilities.Drop) == 0 {
		t.Errorf("scheduler is not locked down: pod %+v, container %+v", pod.SecurityContext, sc)
	}
	for _, p := range []*v1.Probe{ctr.LivenessProbe, ctr.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != v1.URISchemeHTTPS || p.HTTPGet.Port.String() != "https" {
			t.Errorf("probe %+v is not an HTTPS GET on the https port", p)
		}
	}

	// Run the scheduler as its service account, with the Deployment's
	// arguments. In-process, leader election stays off: kube-scheduler
	// exits the process when it stops leading; the lease permissions are
	// checked below instead.
	user, groups := serviceAccountUser(ns, "tessera-scheduler")
	kubeconfig := filepath.Join(dir, "scheduler.kubeconfig")
	if err := c.WriteKubeconfigAs(kubeconfig, user, groups...); err != nil {
		t.Fatal(err)
	}
	var cfgMap map[string]any
	if err := yaml.Unmarshal(raw, &cfgMap); err != nil {
		t.Fatal(err)
	}
	cfgMap["clientConnection"] = map[string]any{"kubeconfig": kubeconfig}
	cfgMap["leaderElection"] = map[string]any{"leaderElect": false}
	cfgData, err := yaml.Marshal(cfgMap)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "scheduler-config.yaml")
	if err := os.WriteFile(cfgPath, cfgData, 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	var args []string
	for _, a := range ctr.Args {
		switch {
		case strings.HasPrefix(a, "--config="):
			a = "--config=" + cfgPath
		case strings.HasPrefix(a, "--secure-port="):
			a = fmt.Sprintf("--secure-port=%d", port)
		}
		args = append(args, a)
	}
	args = append(args, "--bind-address=127.0.0.1",
		"--authentication-kubeconfig="+kubeconfig, "--authorization-kubeconfig="+kubeconfig)
	sched, err := localcluster.RunScheduler(ctx, args)
	if err != nil {
		t.Fatalf("tessera-scheduler with the Deployment's arguments %v: %v", args, err)
	}
	t.Cleanup(sched.Stop)

	// The probes' endpoints answer anonymous HTTPS requests; /metrics does
	// not.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, path := range []string{ctr.LivenessProbe.HTTPGet.Path, ctr.ReadinessProbe.HTTPGet.Path} {
		url := fmt.Sprintf("https://127.0.0.1:%d%s", port, path)
		var last string
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
			resp, err := client.Get(url)
			if err != nil {
				last = err.Error()
				return false, nil
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
			return resp.StatusCode == http.StatusOK, nil
		}); err != nil {
			t.Errorf("GET %s: %s", url, last)
		}
	}
	if resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/metrics", port)); err != nil {
		t.Errorf("GET /metrics: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous GET /metrics = %d, want 401 or 403", resp.StatusCode)
		}
	}

	// Leader election: the service account may take and renew its own
	// lease in the release namespace, and no other.
	checkLeasePermissions(t, ctx, c, ns, user, groups)

	// The example pods: accepted by the apiserver, then scheduled.
	nodes := []localcluster.FakeNode{
		{Name: "gpu-h100", GPUs: 8, Islands: 2},
		{Name: "gpu-a100", GPUs: 8, Islands: 2, Model: "NVIDIA A100-SXM4-80GB"},
	}
	for _, n := range nodes {
		if err := c.AddNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	examples := readExamples(t)
	for name, data := range examples {
		if err := c.Apply(ctx, data, true); err != nil {
			t.Errorf("%s (dry run): %v", name, err)
		}
	}
	for name, data := range examples {
		if err := c.Apply(ctx, data, false); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for name, data := range examples {
		for _, o := range parseObjects(t, data) {
			if o.GetKind() != "Pod" {
				continue
			}
			p := waitPodBound(t, ctx, c, o.GetName())
			a, err := assignment.Parse(p.Annotations[assignment.Annotation])
			if err != nil || len(a) == 0 {
				t.Errorf("%s: pod %s on %s has no valid assignment (%v): %q", name, p.Name, p.Spec.NodeName, err, p.Annotations[assignment.Annotation])
				continue
			}
			t.Logf("%s: pod %s on %s: %s", name, p.Name, p.Spec.NodeName, p.Annotations[assignment.Annotation])
			if p.Name == "model-constrained" && p.Spec.NodeName != "gpu-h100" && p.Spec.NodeName != "gpu-a100" {
				t.Errorf("model-constrained went to %s", p.Spec.NodeName)
			}
		}
	}

	// DRA, with the service account's permissions (system:kube-scheduler's):
	// a pod with a ResourceClaim and a pod whose nvidia.com/gpu a
	// DeviceClass maps, both on a node whose GPUs a DRA driver publishes.
	// DynamicResources creates the second pod's claim, allocates both and
	// records the allocations (resourceclaims, resourceclaims/status,
	// resourceclaims/binding, pods/status).
	if err := c.AddGPUDeviceClass(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.AddDRANode(ctx, "dra", h100, h100); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.ResourceV1().ResourceClaims("default").Create(ctx, oneGPUClaim("one-gpu", "default"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	onDRANode := func(p *v1.Pod) { p.Spec.NodeSelector = map[string]string{v1.LabelHostname: "dra"} }
	var devices []string
	for _, p := range []*v1.Pod{
		newPod("dra-claim", usingClaim("one-gpu"), onDRANode),
		newPod("dra-mapped", gpus(1), onDRANode),
	} {
		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var claims []string
		if p.Name == "dra-claim" {
			claims = []string{"one-gpu"}
		}
		devices = append(devices, allocatedDevices(t, ctx, c, waitPodBound(t, ctx, c, p.Name), claims...)...)
	}
	if len(devices) != 2 || devices[0] == devices[1] {
		t.Errorf("DRA pods got devices %v, want two different ones", devices)
	}
}

// checkLeasePermissions acts as the scheduler's service account on leases.
func checkLeasePermissions(t *testing.T, ctx context.Context, c *localcluster.Cluster, ns, user string, groups []string) {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	leases := kube.CoordinationV1().Leases(ns)
	holder := "tessera-scheduler-0"
	lease, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "tessera-scheduler"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the leader-election lease as the scheduler: %v", err)
	}
	if lease, err = leases.Get(ctx, lease.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("reading the lease as the scheduler: %v", err)
	}
	lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Errorf("renewing the lease as the scheduler: %v", err)
	}
	other := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "someone-else", Namespace: ns}}
	if _, err := c.Client.CoordinationV1().Leases(ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Update(ctx, other, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the scheduler updated another component's lease: err = %v", err)
	}
}

func waitPodBound(t *testing.T, ctx context.Context, c *localcluster.Cluster, name string) *v1.Pod {
	t.Helper()
	var pod *v1.Pod
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(metav1.NamespaceDefault).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return p.Spec.NodeName != "", nil
	})
	if err != nil {
		evs, _ := c.Client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		var msgs []string
		for _, ev := range evs.Items {
			if ev.InvolvedObject.Name == name {
				msgs = append(msgs, ev.Reason+": "+ev.Message)
			}
		}
		t.Fatalf("example pod %s was not scheduled: %v; events: %s", name, err, strings.Join(msgs, " | "))
	}
	return pod
}

func readExamples(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := fs.WalkDir(manifests.Examples, "examples", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		data, err := manifests.Examples.ReadFile(path)
		out[path] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 6 {
		t.Fatalf("found %d examples", len(out))
	}
	for path, data := range out {
		for _, o := range parseObjects(t, data) {
			var p v1.Pod
			toTyped(t, o, &p)
			if p.Spec.SchedulerName != schedulerName {
				t.Errorf("%s: pod %s has schedulerName %q, want %q", path, p.Name, p.Spec.SchedulerName, schedulerName)
			}
		}
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestChartOverrides renders the chart with values changed (another release
// name and namespace, fake GPUs, leader election off, the spread strategy)
// and applies it; and checks that the chart refuses replicas without leader
// election.
func TestChartOverrides(t *testing.T) {
	helmBinary(t)
	const release, ns = "gpu", "gpu-system"
	out, err := helmTemplate(t, release, ns,
		"namespace.create=true",
		"devicePlugin.fakeMode=dgxh100",
		"devicePlugin.taintNode=true",
		"devicePlugin.kubeletDir=/data/kubelet/",
		"scheduler.leaderElection.enabled=false",
		"scheduler.pluginArgs.TesseraGPU.scoringStrategy.type=spread",
		"scheduler.pluginArgs.TesseraTaintToleration.guardGPUNodes=true",
		"scheduler.pluginArgs.NodeResourcesFit.scoringStrategy.type=MostAllocated",
	)
	if err != nil {
		t.Fatal(err)
	}
	objs := parseObjects(t, out)
	ctx, c, _ := startChartCluster(t)
	applyChart(t, ctx, c, objs)

	cfg, _ := loadSchedulerConfig(t, objs, "gpu-tessera-scheduler-config")
	if cfg.LeaderElection.LeaderElect {
		t.Errorf("leader election on with scheduler.leaderElection.enabled=false")
	}
	if got := gpuArgs(t, cfg).ScoringStrategy.Type; got != config.ScoringStrategySpread {
		t.Errorf("scoring strategy = %q, want spread", got)
	}
	taint := false
	for _, pc := range cfg.Profiles[0].PluginConfig {
		switch pc.Name {
		case config.TesseraTaintTolerationName:
			a, err := scheme.DecodeTesseraTaintTolerationArgs(pc.Args)
			if err != nil {
				t.Fatal(err)
			}
			taint = a.GuardGPUNodes && a.GPUNodeTaintKey == "nvidia.com/gpu"
		case "NodeResourcesFit":
			data, _ := json.Marshal(pc.Args)
			if !strings.Contains(string(data), "MostAllocated") {
				t.Errorf("NodeResourcesFit args = %s, want the added MostAllocated strategy", data)
			}
		}
	}
	if !taint {
		t.Errorf("TesseraTaintToleration args lost the override or the defaults beside it")
	}

	var ds appsv1.DaemonSet
	toTyped(t, findObject(t, objs, "DaemonSet", "gpu-tessera-device-plugin"), &ds)
	ctr := ds.Spec.Template.Spec.Containers[0]
	fake := ""
	for _, e := range ctr.Env {
		if e.Name == "TESSERA_FAKE_GPUS" {
			fake = e.Value
		}
	}
	if fake != "dgxh100" || !contains(ctr.Args, "--taint-node") {
		t.Errorf("device plugin: TESSERA_FAKE_GPUS=%q, args %v", fake, ctr.Args)
	}
	// With taintNode, uninstalling runs a hook Job that removes the taint
	// where the plugin added it, under an identity that may only list and
	// patch nodes.
	var job batchv1.Job
	hookJob := findObject(t, objs, "Job", "gpu-tessera-device-plugin-remove-node-taints")
	toTyped(t, hookJob, &job)
	if got := hookJob.GetAnnotations()["helm.sh/hook"]; got != "pre-delete" || !contains(job.Spec.Template.Spec.Containers[0].Args, "--remove-node-taints") ||
		job.Spec.Template.Spec.ServiceAccountName != "gpu-tessera-device-plugin-remove-node-taints" {
		t.Errorf("uninstall hook: hook %q, args %v, service account %q", got, job.Spec.Template.Spec.Containers[0].Args, job.Spec.Template.Spec.ServiceAccountName)
	}
	var hookRole rbacv1.ClusterRole
	toTyped(t, findObject(t, objs, "ClusterRole", "gpu-tessera-device-plugin-remove-node-taints"), &hookRole)
	if diff := cmp.Diff([]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "patch"}}}, hookRole.Rules); diff != "" {
		t.Errorf("uninstall hook's permissions (-want +got):\n%s", diff)
	}

	// The kubelet keeps device-plugin sockets in /var/lib/kubelet whatever
	// its root directory; only pod-resources moves with it.
	hostPaths := map[string]string{}
	for _, vol := range ds.Spec.Template.Spec.Volumes {
		if vol.HostPath != nil {
			hostPaths[vol.Name] = vol.HostPath.Path
		}
	}
	if diff := cmp.Diff(map[string]string{"device-plugins": "/var/lib/kubelet/device-plugins", "pod-resources": "/data/kubelet/pod-resources"}, hostPaths); diff != "" {
		t.Errorf("device plugin hostPaths with kubeletDir=/data/kubelet/ (-want +got):\n%s", diff)
	}
	vap := findObject(t, objs, "ValidatingAdmissionPolicy", "gpu-tessera-device-plugin-own-gpunode")
	data, _ := vap.MarshalJSON()
	if !strings.Contains(string(data), "system:serviceaccount:gpu-system:gpu-tessera-device-plugin") {
		t.Errorf("the admission policy does not name the release's service account: %s", data)
	}

	if _, err := helmTemplate(t, release, ns, "scheduler.replicas=2", "scheduler.leaderElection.enabled=false"); err == nil ||
		!strings.Contains(err.Error(), "leaderElection") {
		t.Errorf("two replicas without leader election: err = %v, want the chart to refuse", err)
	}
}

// TestChartRejectsBadValues: values.schema.json makes helm refuse a
// misspelt key or a bad value before anything reaches the cluster, naming
// the value, where without it the scheduler would exit at start-up.
func TestChartRejectsBadValues(t *testing.T) {
	helmBinary(t)
	for set, want := range map[string]string{
		"scheduler.pluginArgs.TesseraGPU.scoringStrategy.type=binpak": "/scheduler/pluginArgs/TesseraGPU/scoringStrategy/type",
		"scheduler.pluginArgs.TesseraGPU.inventoryStaleness=2min":     "/scheduler/pluginArgs/TesseraGPU/inventoryStaleness",
		"scheduler.pluginArgs.TesseraGPU.weights.gpu=101":             "/scheduler/pluginArgs/TesseraGPU/weights/gpu",
		"scheduler.pluginArgs.TesseraGPU.scoringStratgy.type=spread":  "scoringStratgy",
		"scheduler.leaderElection.leaseDuration=15":                   "/scheduler/leaderElection/leaseDuration",
		"scheduler.replicass=2":                                       "replicass",
		"devicePlugin.fakeMode=dgxh1000":                              "/devicePlugin/fakeMode",
		"devicePlugin.heartbeat=30 s":                                 "/devicePlugin/heartbeat",
		"devicePlugin.healthTaintEffect=Evict":                        "/devicePlugin/healthTaintEffect",
		"devicePlugin.image.pullPolicy=Sometimes":                     "/devicePlugin/image/pullPolicy",
	} {
		_, err := helmTemplate(t, "tessera", "tessera-system", set)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: err = %v, want one naming %s", set, err, want)
		}
	}
	// Values a user may give, beside the defaults: other plugins' args,
	// durations in any Go form, a digest.
	if _, err := helmTemplate(t, "tessera", "tessera-system",
		"scheduler.pluginArgs.NodeResourcesFit.scoringStrategy.type=MostAllocated",
		"scheduler.pluginArgs.TesseraGPU.inventoryStaleness=1m30s",
		"devicePlugin.heartbeat=500ms",
		"devicePlugin.image.digest=sha256:"+strings.Repeat("0", 64)); err != nil {
		t.Errorf("valid values refused: %v", err)
	}
}

// TestChartConventions: every object carries app.kubernetes.io/name (the
// component's, as on its pods), a PodDisruptionBudget keeps a standby
// scheduler through drains once there is more than one replica, and
// imageRegistry moves both images to a mirror.
func TestChartConventions(t *testing.T) {
	helmBinary(t)
	out, err := helmTemplate(t, "tessera", "tessera-system", "namespace.create=true")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range parseObjects(t, out) {
		if o.GetLabels()["app.kubernetes.io/name"] == "" || o.GetLabels()["app.kubernetes.io/instance"] != "tessera" {
			t.Errorf("%s %s has labels %v", o.GetKind(), o.GetName(), o.GetLabels())
		}
		if o.GetKind() == "PodDisruptionBudget" {
			t.Errorf("a PodDisruptionBudget for one replica would block every drain of its node")
		}
	}

	out, err = helmTemplate(t, "tessera", "tessera-system", "scheduler.replicas=3",
		"imageRegistry=registry.example.com:5000/mirror",
		"scheduler.image.repository=tessera-scheduler",
		"devicePlugin.image.digest=sha256:"+strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	objs := parseObjects(t, out)
	var pdb policyv1.PodDisruptionBudget
	toTyped(t, findObject(t, objs, "PodDisruptionBudget", "tessera-scheduler"), &pdb)
	var dep appsv1.Deployment
	toTyped(t, findObject(t, objs, "Deployment", "tessera-scheduler"), &dep)
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(dep.Spec.Template.Labels)) || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget %+v does not keep one scheduler pod %v", pdb.Spec, dep.Spec.Template.Labels)
	}
	if got := dep.Spec.Template.Spec.Containers[0].Image; got != "registry.example.com:5000/mirror/tessera-scheduler:v0.1.0" {
		t.Errorf("scheduler image %s", got)
	}
	var ds appsv1.DaemonSet
	toTyped(t, findObject(t, objs, "DaemonSet", "tessera-device-plugin"), &ds)
	if got, want := ds.Spec.Template.Spec.Containers[0].Image, "registry.example.com:5000/mirror/tessera-gpu/tessera-device-plugin@sha256:"+strings.Repeat("ab", 32); got != want {
		t.Errorf("device plugin image %s, want %s", got, want)
	}
}

// TestChartMonitoring renders the monitoring kit: by default only the
// metrics Services and the metrics-reader ClusterRole (without the
// Prometheus Operator's API, "auto" renders no monitors); with the API
// served, ServiceMonitors that select those Services and a PrometheusRule
// with the shipped alerts; on request, the dashboard ConfigMap with the
// shipped dashboard and a binding for Prometheus' service account.
func TestChartMonitoring(t *testing.T) {
	helmBinary(t)
	kinds := func(objs []*unstructured.Unstructured) map[string]int {
		out := map[string]int{}
		for _, o := range objs {
			out[o.GetKind()]++
		}
		return out
	}
	out, err := helmTemplate(t, "tessera", "tessera-system")
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(parseObjects(t, out)); k["ServiceMonitor"]+k["PodMonitor"]+k["PrometheusRule"] != 0 || k["Service"] != 2 {
		t.Errorf("default render without the Prometheus Operator: %v", k)
	}
	out, err = helmTemplateWith(t, "tessera", "tessera-system",
		[]string{"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"},
		"monitoring.dashboard.enabled=true", "monitoring.serviceMonitor.labels.release=prom",
		"monitoring.metricsReader.subjects[0].name=prometheus", "monitoring.metricsReader.subjects[0].namespace=monitoring")
	if err != nil {
		t.Fatal(err)
	}
	objs := parseObjects(t, out)
	if k := kinds(objs); k["ServiceMonitor"] != 2 || k["PrometheusRule"] != 1 || k["PodMonitor"] != 0 {
		t.Errorf("with the Prometheus Operator's API: %v", k)
	}
	var dep appsv1.Deployment
	toTyped(t, findObject(t, objs, "Deployment", "tessera-scheduler"), &dep)
	var svc v1.Service
	toTyped(t, findObject(t, objs, "Service", "tessera-scheduler-metrics"), &svc)
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) || svc.Spec.Ports[0].TargetPort.String() != "https" {
		t.Errorf("the scheduler's metrics Service %+v does not reach its pods %v", svc.Spec, dep.Spec.Template.Labels)
	}
	sm := findObject(t, objs, "ServiceMonitor", "tessera-scheduler")
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if !labels.SelectorFromSet(sel).Matches(labels.Set(svc.Labels)) || sm.GetLabels()["release"] != "prom" {
		t.Errorf("the scheduler's ServiceMonitor selects %v, labels %v; the Service has %v", sel, sm.GetLabels(), svc.Labels)
	}
	rule := findObject(t, objs, "PrometheusRule", "tessera")
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	alerts, err := os.ReadFile(filepath.Join(chartDir, "files", "monitoring", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []any
	if err := yaml.Unmarshal(alerts, &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, groups); diff != "" {
		t.Errorf("PrometheusRule groups differ from files/monitoring/alerts.yaml (-file +rendered):\n%s", diff)
	}
	var cm v1.ConfigMap
	toTyped(t, findObject(t, objs, "ConfigMap", "tessera-dashboard"), &cm)
	dash, err := os.ReadFile(filepath.Join(chartDir, "files", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Labels["grafana_dashboard"] != "1" || strings.TrimSpace(cm.Data["tessera-gpu-scheduling.json"]) != strings.TrimSpace(string(dash)) {
		t.Errorf("dashboard ConfigMap labels %v, or its JSON differs from files/monitoring/dashboard.json", cm.Labels)
	}
	var crb rbacv1.ClusterRoleBinding
	toTyped(t, findObject(t, objs, "ClusterRoleBinding", "tessera-metrics-reader"), &crb)
	if crb.RoleRef.Name != "tessera-metrics-reader" || len(crb.Subjects) != 1 || crb.Subjects[0].Namespace != "monitoring" {
		t.Errorf("metrics-reader binding %+v", crb)
	}
}

// TestChartFragmentationStrategy renders the chart with the fragmentation
// strategy and its settings given as values, as the chart's README shows,
// and checks that the scheduler loads them: the values reach the plugin's
// args, and the defaults fill what the values leave out.
func TestChartFragmentationStrategy(t *testing.T) {
	helmBinary(t)
	const prefix = "scheduler.pluginArgs.TesseraGPU.scoringStrategy."
	out, err := helmTemplate(t, "tessera", "kube-system",
		prefix+"type=fragmentation",
		prefix+"fragmentation.windowPods=2000",
		prefix+"fragmentation.cpuStarvation=50",
		prefix+"fragmentation.seed[0].cpu=4",
		prefix+"fragmentation.seed[0].gpus=1",
		prefix+"fragmentation.seed[0].weight=3",
	)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := loadSchedulerConfig(t, parseObjects(t, out), "tessera-scheduler-config")
	s := gpuArgs(t, cfg).ScoringStrategy
	if s.Type != config.ScoringStrategyFragmentation || s.Fragmentation == nil {
		t.Fatalf("scoring strategy = %+v, want fragmentation with its settings", s)
	}
	f := s.Fragmentation
	if f.WindowPods != 2000 || f.CPUStarvation != 50 || f.Coverage != 95 || f.SeedPods != 100 {
		t.Errorf("fragmentation args = %+v, want windowPods 2000 and cpuStarvation 50 from the values, coverage 95 and seedPods 100 by default", f)
	}
	if len(f.Seed) != 1 || f.Seed[0].CPUMilli != 4000 || f.Seed[0].GPUs != 1 || f.Seed[0].GPUPercent != 100 || f.Seed[0].Weight != 3 {
		t.Errorf("seed = %+v, want one class of 4 CPUs and one whole GPU, weight 3", f.Seed)
	}

	// The chart's schema refuses a bad setting, naming the value; with the
	// schema skipped, the scheduler refuses it when it builds the plugin's
	// args, naming the field.
	if _, err := helmTemplate(t, "tessera", "kube-system", prefix+"type=fragmentation", prefix+"fragmentation.coverage=0"); err == nil ||
		!strings.Contains(err.Error(), "/scheduler/pluginArgs/TesseraGPU/scoringStrategy/fragmentation/coverage") {
		t.Errorf("coverage 0: err = %v, want the schema to refuse it", err)
	}
	out, err = helmTemplateWith(t, "tessera", "kube-system", []string{"--skip-schema-validation"}, prefix+"type=fragmentation", prefix+"fragmentation.coverage=0")
	if err != nil {
		t.Fatal(err)
	}
	var cm v1.ConfigMap
	toTyped(t, findObject(t, parseObjects(t, out), "ConfigMap", "tessera-scheduler-config"), &cm)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	bad, err := options.LoadConfigFromFile(klog.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range bad.Profiles[0].PluginConfig {
		if pc.Name != config.TesseraGPUName {
			continue
		}
		if _, err := scheme.DecodeTesseraGPUArgs(pc.Args); err == nil || !strings.Contains(err.Error(), "coverage") {
			t.Errorf("coverage 0: err = %v, want an error naming coverage", err)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestInstallManifestsUpToDate checks that manifests/install (embedded in
// package manifests) is what `make manifests` renders from the chart now,
// and that the chart's copy of the scheduler profile is the example's.
func TestInstallManifestsUpToDate(t *testing.T) {
	helm := helmBinary(t)
	example, err := os.ReadFile(filepath.Join(repoRoot, "config/examples/tessera-scheduler.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	chartCopy, err := os.ReadFile(filepath.Join(chartDir, "files/tessera-scheduler.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(example, chartCopy) {
		t.Errorf("manifests/charts/tessera/files/tessera-scheduler.yaml differs from config/examples/tessera-scheduler.yaml; run 'make manifests'")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(repoRoot, "hack/update-manifests.sh"), out)
	cmd.Env = append(os.Environ(), "HELM="+helm)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/update-manifests.sh: %v\n%s", err, b)
	}
	fresh, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := fs.ReadDir(manifests.Install, "install")
	if err != nil {
		t.Fatal(err)
	}
	var freshNames, embeddedNames []string
	for _, e := range fresh {
		freshNames = append(freshNames, e.Name())
	}
	for _, e := range embedded {
		embeddedNames = append(embeddedNames, e.Name())
	}
	if diff := cmp.Diff(freshNames, embeddedNames); diff != "" {
		t.Fatalf("manifests/install has other files than a fresh render (-fresh +install); run 'make manifests':\n%s", diff)
	}
	for _, name := range freshNames {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := manifests.Install.ReadFile("install/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("manifests/install/%s is out of date (-fresh +install); run 'make manifests':\n%s", name, diff)
		}
	}
	// The embedded CRD is the one every cluster test installs.
	crd := parseObjects(t, manifests.GPUNodeCRD)
	if len(crd) != 1 || crd[0].GetName() != "gpunodes.tessera.io" {
		t.Errorf("manifests.GPUNodeCRD is not the GPUNode CRD")
	}
}
