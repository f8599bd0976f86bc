// Command kubectl-tessera is a kubectl plugin that shows Tessera's view of a
// cluster's GPUs: for every GPU node, each GPU with its model, health and
// device taints and which pods hold which share of it, the GPU pods still
// pending with the scheduler's last reason, and, for one pod, why each node
// cannot take it. Installed on the PATH it runs as `kubectl tessera`.
//
// It reads the API only (GPUNodes, nodes, pods, events) and derives
// allocation from the pods' tessera.io/gpu-assignment annotations, exactly
// as the scheduler's cache does, so what it shows is what the scheduler
// sees. Its flags, output formats and errors follow kubectl's, through
// kubectl's own libraries (cli-runtime, cobra).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/tessera-gpu/tessera/pkg/version"
)

// clock is when a snapshot counts as taken; tests pin it so that ages in
// golden output do not move.
var clock = time.Now

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// exitError carries an exit code for a failure already reported.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit code %d", e.code) }

// run is the whole command; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: stdout, ErrOut: stderr}
	root := newRootCommand(streams)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if e, ok := err.(exitError); ok {
		return e.code
	}
	fmt.Fprintf(stderr, "error: %v\n", err)
	if isUsageError(err) || strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "arg(s)") {
		fmt.Fprintln(stderr, "See 'kubectl tessera --help'.")
	}
	return 1
}

// globals are the flags every command shares.
type globals struct {
	config        *genericclioptions.ConfigFlags
	schedulerName string
	streams       genericiooptions.IOStreams
}

func newRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	g := &globals{config: genericclioptions.NewConfigFlags(true), streams: streams}
	o := newViewOptions(g, viewOverview)
	root := &cobra.Command{
		Use:   "tessera",
		Short: "Show how Tessera has allocated the cluster's GPUs",
		// As a kubectl plugin, the command is spelt "kubectl tessera".
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl tessera"},
		Long: `kubectl tessera shows how Tessera has allocated the cluster's GPUs: for every GPU node, each
GPU with its model, health and device taints and which pods hold which share of it, then the GPU
pods still pending and why. On a cluster with more GPUs than --max-gpu-rows it shows one row per
node instead (kubectl tessera nodes lists every GPU). Pending pods are listed for all namespaces
unless -n is given.`,
		Example: `  kubectl tessera
  kubectl tessera nodes gpu-node-3 -o wide
  kubectl tessera summary -l topology.kubernetes.io/zone=us-east-1a
  kubectl tessera pending -A
  kubectl tessera explain -n ml train-0
  kubectl tessera -o jsonpath='{.nodes[*].gpus[?(@.used<100)].uuid}'
  kubectl tessera nodes -o custom-columns=NODE:.node,GPU:.index,USED:.used`,
		Version:       version.String("kubectl-tessera"),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          func(cmd *cobra.Command, args []string) error { return o.run(cmd.Context(), args) },
	}
	root.SetVersionTemplate("{{.Version}}\n")
	// Defined here rather than left to cobra: cobra would otherwise take
	// any global flag of that name, and some Kubernetes packages register
	// one.
	root.Flags().Bool("version", false, "Print the plugin's version and exit.")
	g.config.AddFlags(root.PersistentFlags())
	// kubectl spells the API server flag -s.
	if f := root.PersistentFlags().Lookup("server"); f != nil {
		f.Shorthand = "s"
	}
	root.PersistentFlags().StringVar(&g.schedulerName, "scheduler-name", "tessera-scheduler", "Pending pods are those with this spec.schedulerName.")
	o.addFlags(root)
	root.AddCommand(
		newViewCommand(g, viewNodes),
		newViewCommand(g, viewSummary),
		newViewCommand(g, viewPending),
		newExplainCommand(g),
		&cobra.Command{
			Use:   "version",
			Short: "Print the plugin's version",
			Args:  cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintln(cmd.OutOrStdout(), version.String("kubectl-tessera"))
			},
		},
	)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return root
}

// usageError is a mistake on the command line.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func isUsageError(err error) bool {
	_, ok := err.(usageError)
	return ok
}
