// Package schedulerapp wires Tessera's plugins into kube-scheduler's
// command. It is kept apart from the registry (package plugins) because
// kube-scheduler's command package registers global flags, which a kubectl
// plugin must not inherit.
package schedulerapp

import (
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"github.com/tessera-gpu/tessera/plugins"
)

// Options returns the scheduler command options that add the plugins.
func Options() []app.Option {
	var opts []app.Option
	for name, factory := range plugins.Registry() {
		opts = append(opts, app.WithPlugin(name, factory))
	}
	return opts
}
