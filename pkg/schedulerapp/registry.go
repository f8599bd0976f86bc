// Package schedulerapp wires Tessera's plugins into kube-scheduler. The
// binary, the in-process tests and the benchmarks all build the scheduler
// from here, so they run the same registry.
package schedulerapp

import (
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"

	// Registers the plugin args with the scheduler's configuration scheme.
	_ "github.com/tessera-gpu/tessera/config/scheme"
	"github.com/tessera-gpu/tessera/plugins/gputaints"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu"
)

// Registry returns Tessera's out-of-tree plugins.
func Registry() frameworkruntime.Registry {
	return frameworkruntime.Registry{
		tesseragpu.Name: tesseragpu.New,
		gputaints.Name:  gputaints.New,
	}
}

// Options returns the scheduler command options that add the plugins.
func Options() []app.Option {
	var opts []app.Option
	for name, factory := range Registry() {
		opts = append(opts, app.WithPlugin(name, factory))
	}
	return opts
}
