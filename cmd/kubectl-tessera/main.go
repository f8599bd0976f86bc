// Command kubectl-tessera is a kubectl plugin that shows Tessera's view of a
// cluster's GPUs: for every GPU node, each GPU with its model, health and
// device taints and which pods hold which share of it, and the GPU pods
// still pending with the scheduler's last reason. Installed on the PATH it
// runs as `kubectl tessera`.
//
// It only reads the API (GPUNodes, nodes, pods, events) and derives
// allocation from the pods' tessera.io/gpu-assignment annotations, exactly
// as the scheduler's cache does, so what it shows is what the scheduler
// sees.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
	"github.com/tessera-gpu/tessera/pkg/report"
	"github.com/tessera-gpu/tessera/pkg/version"
)

const usage = `kubectl tessera shows how Tessera has allocated the cluster's GPUs.

Usage:
  kubectl tessera [flags]                  GPU nodes, per GPU who holds which share, and pending GPU pods
  kubectl tessera nodes [NAME...] [flags]  GPU nodes only, or the named nodes (GPU or not) with their GPUNode events
  kubectl tessera pending [flags]          pending pods of the scheduler and their last FailedScheduling reason
  kubectl tessera version                  the plugin's version

Examples:
  kubectl tessera
  kubectl tessera nodes gpu-node-3 -o wide
  kubectl tessera pending -n ml-team
  kubectl tessera -o json | jq '.nodes[].gpus[] | select(.used < 100)'

Pending pods are listed for all namespaces unless -n/--namespace is given.

Flags:
`

// clock is when the snapshot counts as taken; tests pin it so that ages in
// golden output do not move.
var clock = time.Now

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// options are the parsed command line.
type options struct {
	command       string
	names         []string
	format        report.Format
	schedulerName string
	namespace     string
	clientConfig  clientcmd.ClientConfig
}

// run is the whole command; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, done, err := parse(args, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\nSee 'kubectl tessera --help'.\n", err)
		return 1
	}
	if done {
		return 0
	}
	cfg, err := opts.clientConfig.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			err = errors.New("no cluster configured: set KUBECONFIG, pass --kubeconfig, or run inside a pod")
		}
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	snap, err := take(ctx, cfg, opts)
	if err != nil {
		fmt.Fprintf(stderr, "error: %s\n", explain(err, cfg))
		return 1
	}
	if err := snap.Write(stdout, opts.format); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	if opts.format != report.JSON {
		sayEmpty(stderr, snap, opts)
	}
	for _, name := range snap.Missing {
		fmt.Fprintf(stderr, "error: node %q not found: there is neither a Node nor a GPUNode of that name\n", name)
	}
	if len(snap.Missing) > 0 {
		return 1
	}
	return 0
}

// parse reads the command line. done is true when it has already answered
// (help or version).
func parse(args []string, stdout io.Writer) (opts *options, done bool, err error) {
	fs := pflag.NewFlagSet("kubectl tessera", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	// Same flag and meaning as kubectl: an explicit file replaces the
	// KUBECONFIG search.
	fs.StringVar(&rules.ExplicitPath, clientcmd.RecommendedConfigPathFlag, "", "Path to the kubeconfig file to use for CLI requests.")
	overrides := &clientcmd.ConfigOverrides{}
	flags := clientcmd.RecommendedConfigOverrideFlags("")
	flags.ClusterOverrideFlags.APIServer.ShortName = "s" // as in kubectl
	clientcmd.BindOverrideFlags(overrides, fs, flags)
	output := fs.StringP("output", "o", "", "Output format: "+strings.Join(report.Formats, " or ")+".")
	schedulerName := fs.String("scheduler-name", "tessera-scheduler", "Pending pods are those with this spec.schedulerName.")
	showVersion := fs.Bool("version", false, "Print the plugin's version and exit.")
	help := fs.BoolP("help", "h", false, "Show this help.")
	if err := fs.Parse(args); err != nil {
		return nil, false, err
	}
	if *help {
		fmt.Fprint(stdout, usage+fs.FlagUsages())
		return nil, true, nil
	}
	opts = &options{schedulerName: *schedulerName, namespace: overrides.Context.Namespace}
	positional := fs.Args()
	if len(positional) > 0 {
		opts.command, opts.names = positional[0], positional[1:]
	}
	if *showVersion || opts.command == "version" {
		fmt.Fprintln(stdout, version.String("kubectl-tessera"))
		return nil, true, nil
	}
	switch opts.command {
	case "", "pending":
		if len(opts.names) > 0 {
			return nil, false, fmt.Errorf("unexpected arguments %q", opts.names)
		}
	case "nodes", "node", "no":
		opts.command = "nodes"
	case "help":
		fmt.Fprint(stdout, usage+fs.FlagUsages())
		return nil, true, nil
	default:
		return nil, false, fmt.Errorf("unknown command %q; the commands are nodes, pending and version", opts.command)
	}
	if opts.format, err = report.ParseFormat(*output); err != nil {
		return nil, false, err
	}
	if opts.schedulerName == "" {
		return nil, false, errors.New("--scheduler-name must not be empty")
	}
	opts.clientConfig = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	return opts, false, nil
}

// take reads the snapshot the command asks for.
func take(ctx context.Context, cfg *rest.Config, opts *options) (*report.Snapshot, error) {
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
	ro := report.Options{SchedulerName: opts.schedulerName, Namespace: opts.namespace}
	switch opts.command {
	case "nodes":
		// Named nodes get their GPUNode events too, as kubectl describe
		// would show them.
		ro.Nodes, ro.NoPending, ro.NodeEvents = opts.names, true, len(opts.names) > 0
	case "pending":
		ro.NoNodes = true
	}
	snap, err := report.Take(ctx, kube, gpus, ro)
	if err != nil {
		return nil, err
	}
	snap.Now = clock()
	return snap, nil
}

// sayEmpty tells, on stderr as kubectl does, that a section has nothing.
func sayEmpty(stderr io.Writer, snap *report.Snapshot, opts *options) {
	if snap.Nodes != nil && len(snap.Nodes) == 0 && len(opts.names) == 0 {
		fmt.Fprintln(stderr, "No GPU nodes found: there is no GPUNode yet. Is tessera-device-plugin running on the GPU nodes?")
	}
	if snap.Pending != nil && len(snap.Pending) == 0 && opts.command == "pending" {
		where := "in any namespace"
		if opts.namespace != "" {
			where = "in namespace " + opts.namespace
		}
		fmt.Fprintf(stderr, "No pending pods for scheduler %s %s.\n", opts.schedulerName, where)
	}
}

// explain turns an API error into what the user can do about it.
func explain(err error, cfg *rest.Config) string {
	var status apierrors.APIStatus
	switch {
	case errors.Is(err, report.ErrNoGPUNodeAPI):
		return "Tessera is not installed in this cluster: it does not serve the GPUNode API (gpunodes.tessera.io/v1alpha1).\n" +
			"Install it with\n" +
			"  helm install tessera manifests/charts/tessera -n tessera-system --create-namespace\n" +
			"or\n" +
			"  kubectl apply -k manifests/install"
	case apierrors.IsForbidden(err):
		msg := err.Error()
		if errors.As(err, &status) {
			msg = status.Status().Message
		}
		return "permission denied: " + msg + "\n" +
			"kubectl tessera needs get and list on nodes, pods, events and gpunodes.tessera.io; ask a cluster administrator for read access."
	case apierrors.IsUnauthorized(err):
		return fmt.Sprintf("the API server at %s did not accept your credentials; check the user in your kubeconfig or log in again (%v)", cfg.Host, err)
	case utilnet.IsConnectionRefused(err) || isUnreachable(err):
		return fmt.Sprintf("cannot reach the API server at %s; check the cluster in your kubeconfig and --context (%v)", cfg.Host, err)
	}
	return err.Error()
}

// isUnreachable reports network failures other than a refused connection:
// unknown hosts, timeouts and resets.
func isUnreachable(err error) bool {
	var dns *net.DNSError
	return utilnet.IsConnectionReset(err) || utilnet.IsTimeout(err) || errors.As(err, &dns)
}
