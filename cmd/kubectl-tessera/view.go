package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
	"github.com/tessera-gpu/tessera/pkg/report"
)

// view is what a command shows.
type view int

const (
	// viewOverview: the GPU table (or the per-node summary on a large
	// cluster), then the pending pods of every namespace.
	viewOverview view = iota
	// viewNodes: the GPU table only, of every GPU node or of the named
	// nodes (GPU or not) with their GPUNode events.
	viewNodes
	// viewSummary: one row per GPU node.
	viewSummary
	// viewPending: the pending pods.
	viewPending
)

// viewOptions are the flags and arguments of the viewing commands.
type viewOptions struct {
	*globals
	view          view
	out           *outputFlags
	selector      string
	allNamespaces bool
	maxGPURows    int
	watch         bool
}

func newViewOptions(g *globals, v view) *viewOptions {
	return &viewOptions{globals: g, view: v, out: newOutputFlags(), maxGPURows: 100}
}

func (o *viewOptions) addFlags(cmd *cobra.Command) {
	o.out.addFlags(cmd)
	f := cmd.Flags()
	if o.view != viewPending {
		f.StringVarP(&o.selector, "selector", "l", "", "Only GPU nodes whose Node labels match this selector (e.g. -l pool=training).")
	}
	if o.view == viewPending {
		f.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List pending pods of every namespace.")
	}
	if o.view == viewOverview {
		f.IntVar(&o.maxGPURows, "max-gpu-rows", o.maxGPURows, "Above this many GPUs, show one row per node instead of one per GPU; 0 never does.")
	}
	if o.view != viewOverview {
		f.BoolVarP(&o.watch, "watch", "w", false, "After the first listing, print what changes as GPUs, pods and GPUNodes change.")
	}
}

func newViewCommand(g *globals, v view) *cobra.Command {
	o := newViewOptions(g, v)
	cmd := &cobra.Command{Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd.Context(), args) }}
	switch v {
	case viewNodes:
		cmd.Use, cmd.Aliases = "nodes [NAME...]", []string{"node", "no"}
		cmd.Short = "Every GPU of the GPU nodes, or of the named nodes, with who holds it"
		cmd.Long = `Lists every GPU of every GPU node with its model, health, device taints and holders. With names,
lists just those nodes, GPU or not, each followed by its latest GPUNode events.`
		cmd.Args = cobra.ArbitraryArgs
		cmd.ValidArgsFunction = o.completeNodes
	case viewSummary:
		cmd.Use = "summary"
		cmd.Short = "One row per GPU node: GPUs free, partly used, full and unhealthy"
	case viewPending:
		cmd.Use = "pending"
		cmd.Short = "Pending pods of the scheduler and why each waits"
		cmd.Long = `Lists the unbound pods of --scheduler-name in the current namespace (-n, or -A for all), what they
ask for, and the scheduler's current reason: the pod's PodScheduled condition, else its latest
FailedScheduling event.`
	}
	o.addFlags(cmd)
	return cmd
}

// clients are the API clients a command uses.
type clients struct {
	cfg  *rest.Config
	kube kubernetes.Interface
	gpus versioned.Interface
}

func (g *globals) clients() (*clients, error) {
	cfg, err := g.config.ToRESTConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			err = errors.New("no cluster configured: set KUBECONFIG, pass --kubeconfig, or run inside a pod")
		}
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	rest.AddUserAgent(cfg, "kubectl-tessera")
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	// Custom resources are served as JSON only.
	gpuCfg := rest.CopyConfig(cfg)
	gpuCfg.ContentType, gpuCfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	gpus, err := versioned.NewForConfig(gpuCfg)
	if err != nil {
		return nil, err
	}
	return &clients{cfg: cfg, kube: kube, gpus: gpus}, nil
}

// namespace is the namespace the user chose: -n, else the kubeconfig
// context's; explicit says whether -n was given.
func (g *globals) namespace() (ns string, explicit bool, err error) {
	return g.config.ToRawKubeConfigLoader().Namespace()
}

// reportOptions turns the command line into what report.Take reads.
func (o *viewOptions) reportOptions(names []string) (report.Options, error) {
	if o.schedulerName == "" {
		return report.Options{}, usageError{errors.New("--scheduler-name must not be empty")}
	}
	if o.selector != "" {
		if _, err := labels.Parse(o.selector); err != nil {
			return report.Options{}, usageError{fmt.Errorf("invalid label selector %q: %v", o.selector, err)}
		}
	}
	ro := report.Options{SchedulerName: o.schedulerName, NodeSelector: o.selector}
	ns, explicit, err := o.namespace()
	if err != nil {
		return ro, err
	}
	switch o.view {
	case viewOverview:
		// An overview of the cluster: every namespace unless -n says one.
		if explicit {
			ro.Namespace = ns
		}
	case viewNodes:
		// Named nodes get their GPUNode events too, as kubectl describe
		// would show them.
		ro.Nodes, ro.NoPending, ro.NodeEvents = names, true, len(names) > 0
	case viewSummary:
		ro.NoPending = true
	case viewPending:
		ro.NoNodes = true
		if !o.allNamespaces {
			ro.Namespace = ns
		}
	}
	return ro, nil
}

func (o *viewOptions) run(ctx context.Context, names []string) error {
	if o.view != viewNodes && len(names) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", names)}
	}
	printer, err := o.out.printer(o.view)
	if err != nil {
		return err
	}
	ro, err := o.reportOptions(names)
	if err != nil {
		return err
	}
	c, err := o.clients()
	if err != nil {
		return err
	}
	snap, err := o.take(ctx, c, ro)
	if err != nil {
		return errors.New(describeAPIError(err, c.cfg))
	}
	if err := printer.print(o.streams.Out, snap, o.shape(snap)); err != nil {
		return err
	}
	if printer.table() {
		o.sayEmpty(snap, ro)
	}
	for _, name := range snap.Missing {
		fmt.Fprintf(o.streams.ErrOut, "error: node %q not found: there is neither a Node nor a GPUNode of that name\n", name)
	}
	if o.watch {
		return o.follow(ctx, c, ro, printer, snap)
	}
	if len(snap.Missing) > 0 {
		return exitError{1}
	}
	return nil
}

// take reads one snapshot.
func (o *viewOptions) take(ctx context.Context, c *clients, ro report.Options) (*report.Snapshot, error) {
	snap, err := report.Take(ctx, c.kube, c.gpus, ro)
	if err != nil {
		return nil, err
	}
	snap.Now = clock()
	return snap, nil
}

// shape is how the snapshot is laid out: one row per GPU, or per node.
func (o *viewOptions) shape(snap *report.Snapshot) shape {
	switch o.view {
	case viewSummary:
		return shapeSummary
	case viewOverview:
		gpus := 0
		for _, n := range snap.Nodes {
			gpus += len(n.GPUs)
		}
		if o.maxGPURows > 0 && gpus > o.maxGPURows {
			if o.out.isTable() {
				fmt.Fprintf(o.streams.ErrOut, "%d GPUs on %d nodes: one row per node (kubectl tessera nodes lists every GPU; --max-gpu-rows=0 always does).\n",
					gpus, len(snap.Nodes))
			}
			return shapeSummary
		}
	}
	return shapeGPUs
}

// sayEmpty tells, on stderr as kubectl does, that a section has nothing.
func (o *viewOptions) sayEmpty(snap *report.Snapshot, ro report.Options) {
	if snap.Nodes != nil && len(snap.Nodes) == 0 && len(ro.Nodes) == 0 {
		if ro.NodeSelector != "" {
			fmt.Fprintf(o.streams.ErrOut, "No GPU nodes match the selector %s.\n", ro.NodeSelector)
		} else {
			fmt.Fprintln(o.streams.ErrOut, "No GPU nodes found: there is no GPUNode yet. Is tessera-device-plugin running on the GPU nodes?")
		}
	}
	if snap.Pending != nil && len(snap.Pending) == 0 && o.view == viewPending {
		where := "in any namespace"
		if ro.Namespace != "" {
			where = "in namespace " + ro.Namespace
		}
		fmt.Fprintf(o.streams.ErrOut, "No pending pods for scheduler %s %s.\n", o.schedulerName, where)
	}
}

// completeNodes completes node names for `nodes` from the GPUNodes.
func (o *viewOptions) completeNodes(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	c, err := o.clients()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	list, err := c.gpus.TesseraV1alpha1().GPUNodes().List(cmd.Context(), metav1.ListOptions{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, gn := range list.Items {
		if strings.HasPrefix(gn.Name, prefix) {
			out = append(out, gn.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
