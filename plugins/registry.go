// Package plugins is the set of Tessera's scheduler plugins. The binary, the
// in-process tests, the benchmarks and kubectl tessera explain all build
// their frameworks from this one registry.
package plugins

import (
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
