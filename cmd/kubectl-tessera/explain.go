package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	schedscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"
	"k8s.io/kubernetes/pkg/scheduler/apis/config/validation"
	internalcache "k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/names"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/nodevolumelimits"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"

	"github.com/tessera-gpu/tessera/config/examples"
	"github.com/tessera-gpu/tessera/pkg/report"
	tesseraplugins "github.com/tessera-gpu/tessera/plugins"
	"github.com/tessera-gpu/tessera/plugins/tesseradra"
)

// explainOptions are the flags of `kubectl tessera explain`.
type explainOptions struct {
	*globals
	node       string
	configFile string
	configMap  string
	output     string
	syncWait   time.Duration
}

func newExplainCommand(g *globals) *cobra.Command {
	o := &explainOptions{globals: g, configMap: "tessera-system/tessera-scheduler-config", syncWait: 30 * time.Second}
	cmd := &cobra.Command{
		Use:   "explain POD",
		Short: "Why a pod is not placed on each node, by the scheduler's own plugins",
		Long: `Runs the scheduler's profile (its PreFilter and Filter plugins, Tessera's and the in-tree ones)
on a snapshot of the cluster's nodes and pods, as one scheduling cycle would, and says node by
node why the pod does not fit, or that it does. With --node, about that node only.

The profile is read from the scheduler's ConfigMap (--config-map), or from a file (--config);
without access to either, the shipped profile is used. ResourceClaims are not evaluated, and the
pods the scheduler has nominated for preemption are not counted.`,
		Example: `  kubectl tessera explain -n ml train-0
  kubectl tessera explain -n ml train-0 --node gpu-node-3
  kubectl tessera explain train-0 -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd.Context(), args[0]) },
	}
	cmd.Flags().StringVar(&o.node, "node", "", "Explain this node only.")
	cmd.Flags().StringVar(&o.configFile, "config", "", "A KubeSchedulerConfiguration file with the scheduler's profile.")
	cmd.Flags().StringVar(&o.configMap, "config-map", o.configMap, "NAMESPACE/NAME of the ConfigMap holding the scheduler's configuration (key config.yaml).")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "Output format: json or yaml for the verdicts as an object; default a table.")
	return cmd
}

// Verdict is what the profile's filters say of one node.
type Verdict struct {
	Node string `json:"node"`
	Fits bool   `json:"fits"`
	// Plugin is the first plugin that rejected the node.
	Plugin string `json:"plugin,omitempty"`
	// Reasons are its reasons, as FailedScheduling events list them.
	Reasons []string `json:"reasons,omitempty"`
}

// Explanation is the whole answer.
type Explanation struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// Profile names the scheduler profile and where it was read.
	Profile string `json:"profile"`
	// PreFilter is the reason the pod fits no node at all, when the
	// profile's PreFilter plugins say so.
	PreFilter *Verdict  `json:"preFilter,omitempty"`
	Nodes     []Verdict `json:"nodes"`
	// Notes say what the explanation could not take into account.
	Notes []string `json:"notes,omitempty"`
}

func (o *explainOptions) run(ctx context.Context, name string) error {
	if o.output != "" && o.output != "json" && o.output != "yaml" {
		return usageError{fmt.Errorf("unknown output format %q; use json or yaml", o.output)}
	}
	c, err := o.clients()
	if err != nil {
		return err
	}
	ns, _, err := o.namespace()
	if err != nil {
		return err
	}
	pod, err := c.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("pod %q not found in namespace %q", name, ns)
	}
	if err != nil {
		return errors.New(describeAPIError(err, c.cfg))
	}
	if pod.Spec.NodeName != "" {
		fmt.Fprintf(o.streams.Out, "Pod %s/%s is bound to node %s; there is nothing to explain.\n", ns, name, pod.Spec.NodeName)
		return nil
	}
	ex, err := o.explain(ctx, c, pod)
	if err != nil {
		return err
	}
	if o.output != "" {
		u, err := toUnstructured(ex)
		if err != nil {
			return err
		}
		u.SetAPIVersion(reportAPIVersion)
		u.SetKind("PodExplanation")
		p, err := newOutputFlags().jsonYaml.ToPrinter(o.output)
		if err != nil {
			return err
		}
		return p.PrintObj(u, o.streams.Out)
	}
	ex.write(o.streams.Out)
	return nil
}

// profile reads the scheduler profile that serves the pod: from --config,
// else the ConfigMap, else the shipped one; it says which.
func (o *explainOptions) profile(ctx context.Context, c *clients, schedulerName string) (*schedconfig.KubeSchedulerProfile, string, error) {
	data, source := []byte(nil), ""
	switch {
	case o.configFile != "":
		b, err := os.ReadFile(o.configFile)
		if err != nil {
			return nil, "", err
		}
		data, source = b, o.configFile
	default:
		if ns, name, ok := strings.Cut(o.configMap, "/"); ok {
			cm, err := c.kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil && cm.Data["config.yaml"] != "" {
				data, source = []byte(cm.Data["config.yaml"]), "ConfigMap "+o.configMap
			}
		}
		if data == nil {
			data, source = examples.TesseraScheduler, "the shipped profile (the scheduler's ConfigMap "+o.configMap+" could not be read)"
		}
	}
	// Decoded as kube-scheduler decodes --config: defaulted to the internal
	// form (Tessera's plugin args are registered with its scheme by the
	// plugins package), then validated.
	obj, _, err := schedscheme.Codecs.UniversalDecoder().Decode(data, nil, nil)
	if err != nil {
		return nil, "", fmt.Errorf("reading the scheduler configuration from %s: %w", source, err)
	}
	cfg, ok := obj.(*schedconfig.KubeSchedulerConfiguration)
	if !ok {
		return nil, "", fmt.Errorf("%s holds a %T, not a KubeSchedulerConfiguration", source, obj)
	}
	if err := validation.ValidateKubeSchedulerConfiguration(cfg); err != nil {
		return nil, "", fmt.Errorf("the scheduler configuration in %s is not valid: %w", source, err)
	}
	for i := range cfg.Profiles {
		if cfg.Profiles[i].SchedulerName == schedulerName {
			return &cfg.Profiles[i], source, nil
		}
	}
	return nil, "", fmt.Errorf("the scheduler configuration in %s has no profile %q (the pod's spec.schedulerName)", source, schedulerName)
}

// explain runs PreFilter once and Filter on every node, on a snapshot.
func (o *explainOptions) explain(ctx context.Context, c *clients, pod *v1.Pod) (*Explanation, error) {
	ex := &Explanation{Namespace: pod.Namespace, Pod: pod.Name}
	profile, source, err := o.profile(ctx, c, pod.Spec.SchedulerName)
	if err != nil {
		return nil, err
	}
	ex.Profile = profile.SchedulerName + ", from " + source
	// Plugins that need the scheduler's own caches (ResourceClaims, pod
	// groups) are left out; say so when it matters.
	ps := profile.Plugins
	for _, set := range []*schedconfig.PluginSet{&ps.PreEnqueue, &ps.QueueSort, &ps.PreFilter, &ps.Filter, &ps.PostFilter,
		&ps.PreScore, &ps.Score, &ps.Reserve, &ps.Permit, &ps.PreBind, &ps.Bind, &ps.PostBind} {
		for _, p := range []string{names.DynamicResources, tesseradra.Name, names.GangScheduling} {
			set.Disabled = append(set.Disabled, schedconfig.Plugin{Name: p})
		}
	}
	if len(pod.Spec.ResourceClaims) > 0 {
		ex.Notes = append(ex.Notes, "the pod's ResourceClaims are not evaluated")
	}

	nodes, err := report.ListNodes(ctx, c.kube, metav1.ListOptions{})
	if err != nil {
		return nil, errors.New(describeAPIError(err, c.cfg))
	}
	pods, err := report.ListPods(ctx, c.kube, "", metav1.ListOptions{
		FieldSelector: "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"})
	if err != nil {
		return nil, errors.New(describeAPIError(err, c.cfg))
	}
	nodePtrs := make([]*v1.Node, len(nodes))
	for i := range nodes {
		nodePtrs[i] = &nodes[i]
	}
	podPtrs := make([]*v1.Pod, len(pods))
	for i := range pods {
		podPtrs[i] = &pods[i]
	}
	snapshot := internalcache.NewSnapshot(podPtrs, nodePtrs)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory := informers.NewSharedInformerFactory(c.kube, 0)
	// The framework counts plugin calls in the scheduler's metrics, which
	// must exist even though nothing serves them here.
	schedmetrics.Register()
	registry := plugins.NewInTreeRegistry()
	if err := registry.Merge(tesseraplugins.Registry()); err != nil {
		return nil, err
	}
	fw, err := frameworkruntime.NewFramework(ctx, registry, profile,
		frameworkruntime.WithKubeConfig(c.cfg),
		frameworkruntime.WithClientSet(c.kube),
		frameworkruntime.WithInformerFactory(factory),
		frameworkruntime.WithSnapshotSharedLister(snapshot),
		frameworkruntime.WithSharedCSIManager(nodevolumelimits.NewCSIManager(factory.Storage().V1().CSINodes().Lister())),
		frameworkruntime.WithEventRecorder(&events.FakeRecorder{}), // drops them: explain records nothing
		frameworkruntime.WithPodActivator(noQueue{}),
	)
	if err != nil {
		return nil, fmt.Errorf("building the scheduler profile %s: %w", profile.SchedulerName, err)
	}
	factory.Start(ctx.Done())
	syncCtx, stop := context.WithTimeout(ctx, o.syncWait)
	for typ, ok := range factory.WaitForCacheSync(syncCtx.Done()) {
		if !ok {
			ex.Notes = append(ex.Notes, fmt.Sprintf("could not read %s (no permission?); filters that need them saw none", typ))
		}
	}
	stop()
	sort.Strings(ex.Notes)

	// Tessera's plugin says "not yet synced" until its own informers have
	// listed the GPUNodes and pods.
	var status *fwk.Status
	var result *fwk.PreFilterResult
	state := framework.NewCycleState()
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, o.syncWait, true, func(context.Context) (bool, error) {
		state = framework.NewCycleState()
		result, status, _ = fw.RunPreFilterPlugins(ctx, state, pod)
		return status.IsSuccess() || !strings.Contains(status.Message(), "not yet synced"), nil
	})
	if err != nil {
		return nil, fmt.Errorf("the scheduler's plugins did not finish reading the cluster: %s", status.Message())
	}
	if !status.IsSuccess() && !status.IsSkip() {
		ex.PreFilter = &Verdict{Plugin: status.Plugin(), Reasons: status.Reasons()}
		return ex, nil
	}
	infos, err := snapshot.NodeInfos().List()
	if err != nil {
		return nil, err
	}
	found := false
	for _, ni := range infos {
		name := ni.Node().Name
		if o.node != "" && name != o.node {
			continue
		}
		found = true
		v := Verdict{Node: name}
		// Nodes a PreFilter plugin left out are judged by Filter too:
		// TesseraGPU leaves out nodes without room for the pod's GPUs,
		// and Filter says which reason that is. A node Filter passes was
		// left out by the pod's node name, affinity or selector.
		excluded := result != nil && !result.AllNodes() && !result.NodeNames.Has(name)
		if st := fw.RunFilterPlugins(ctx, state, pod, ni); !st.IsSuccess() {
			v.Plugin, v.Reasons = st.Plugin(), st.Reasons()
		} else if excluded {
			v.Plugin, v.Reasons = "PreFilter", []string{"not among the nodes the pod's node name, affinity or selector allows"}
		} else {
			v.Fits = true
		}
		ex.Nodes = append(ex.Nodes, v)
	}
	if o.node != "" && !found {
		return nil, fmt.Errorf("node %q not found", o.node)
	}
	sort.Slice(ex.Nodes, func(i, j int) bool { return ex.Nodes[i].Node < ex.Nodes[j].Node })
	return ex, nil
}

// write prints the explanation for people: a summary line as the
// scheduler's event would give it, then one row per node.
func (ex *Explanation) write(w io.Writer) {
	fmt.Fprintf(w, "Pod %s/%s, profile %s\n", ex.Namespace, ex.Pod, ex.Profile)
	for _, n := range ex.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	if ex.PreFilter != nil {
		fmt.Fprintf(w, "\nNo node can take it: %s (%s).\n", strings.Join(ex.PreFilter.Reasons, "; "), ex.PreFilter.Plugin)
		return
	}
	fits := 0
	counts := map[string]int{}
	for _, v := range ex.Nodes {
		if v.Fits {
			fits++
			continue
		}
		for _, r := range v.Reasons {
			counts[r]++
		}
	}
	reasons := make([]string, 0, len(counts))
	for r := range counts {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	var parts []string
	for _, r := range reasons {
		parts = append(parts, fmt.Sprintf("%d %s", counts[r], r))
	}
	fmt.Fprintf(w, "\n%d/%d nodes can take it", fits, len(ex.Nodes))
	if len(parts) > 0 {
		fmt.Fprintf(w, "; the others: %s", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tFITS\tPLUGIN\tREASON")
	for _, v := range ex.Nodes {
		fitsText := "no"
		if v.Fits {
			fitsText = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Node, fitsText, dash(v.Plugin), dash(strings.Join(v.Reasons, "; ")))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// noQueue stands for the scheduling queue, which explain does not have.
type noQueue struct{}

func (noQueue) Activate(klog.Logger, map[string]*v1.Pod) {}
