package localcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/component-base/configz"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/config/examples"
	"github.com/tessera-gpu/tessera/pkg/schedulerapp"
)

// SchedulerOptions configure a tessera-scheduler run.
type SchedulerOptions struct {
	// GPUArgs and TaintArgs are merged over the TesseraGPU and
	// TesseraTaintToleration args of the shipped example configuration,
	// e.g. {"scoringStrategy": {"type": "spread"}}.
	GPUArgs, TaintArgs map[string]any
	// Plugins replaces extension points of the profile's plugins, by name
	// (e.g. "preBind"); a nil value removes the point, leaving
	// kube-scheduler's defaults there.
	Plugins map[string]any
}

// Scheduler is a tessera-scheduler running in this process.
type Scheduler struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// StartScheduler runs tessera-scheduler against the cluster, configured by
// the shipped example configuration (config/examples) with leader election
// off and the cluster's kubeconfig, exactly as the binary would run it.
func (c *Cluster) StartScheduler(ctx context.Context, dir string, so SchedulerOptions) (*Scheduler, error) {
	cfg, err := schedulerConfig(c.Kubeconfig, so)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("scheduler-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return nil, err
	}
	// Port 0 turns the HTTPS endpoint off: no certificates or delegated
	// authentication are needed in-process.
	return RunScheduler(ctx, []string{"--config=" + path, "--secure-port=0"})
}

// RunScheduler runs tessera-scheduler in this process with the given
// command-line arguments (kube-scheduler's flags), as the binary would run
// with them. The configuration file they name must say how to reach the
// cluster (clientConnection.kubeconfig), and must turn leader election off:
// kube-scheduler ends the process when it stops leading, Stop included.
func RunScheduler(ctx context.Context, args []string) (*Scheduler, error) {
	opts := scheduleroptions.NewOptions()
	fs := pflag.NewFlagSet("tessera-scheduler", pflag.ContinueOnError)
	for _, f := range opts.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	cc, sched, err := app.Setup(ctx, opts, schedulerapp.Options()...)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("setting up tessera-scheduler: %w", err)
	}
	s := &Scheduler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		// Run returns an error when the context ends, which is how it stops.
		_ = app.Run(ctx, cc, sched)
	}()
	return s, nil
}

// Stop stops the scheduler and waits until it has. A new scheduler may be
// started in the same process afterwards.
func (s *Scheduler) Stop() {
	s.cancel()
	<-s.done
	// Run registers the configuration globally; a second Run would fail.
	configz.Delete("componentconfig")
}

func schedulerConfig(kubeconfig string, so SchedulerOptions) ([]byte, error) {
	var cfg map[string]any
	if err := yaml.Unmarshal(examples.TesseraScheduler, &cfg); err != nil {
		return nil, fmt.Errorf("reading the example scheduler configuration: %w", err)
	}
	cfg["leaderElection"] = map[string]any{"leaderElect": false}
	cfg["clientConnection"] = map[string]any{"kubeconfig": kubeconfig, "qps": 500, "burst": 1000}
	profiles, _ := cfg["profiles"].([]any)
	for _, p := range profiles {
		prof, _ := p.(map[string]any)
		if plugins, _ := prof["plugins"].(map[string]any); plugins != nil {
			for point, set := range so.Plugins {
				if set == nil {
					delete(plugins, point)
					continue
				}
				plugins[point] = set
			}
		}
		pcs, _ := prof["pluginConfig"].([]any)
		for _, pc := range pcs {
			entry, _ := pc.(map[string]any)
			var extra map[string]any
			switch entry["name"] {
			case "TesseraGPU":
				extra = so.GPUArgs
			case "TesseraTaintToleration":
				extra = so.TaintArgs
			}
			args, _ := entry["args"].(map[string]any)
			if args == nil {
				args = map[string]any{}
			}
			for k, v := range extra {
				args[k] = v
			}
			entry["args"] = args
		}
	}
	return yaml.Marshal(cfg)
}
