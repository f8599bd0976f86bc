// Package plugins is the set of Tessera's scheduler plugins. The binary, the
// in-process tests, the benchmarks and kubectl tessera explain all build
// their frameworks from this one registry.
package plugins

import (
	"context"

	"k8s.io/apimachinery/pkg/runtime"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	fwk "k8s.io/kube-scheduler/framework"
	plfeature "k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"

	// Registers the plugin args with the scheduler's configuration scheme.
	_ "github.com/tessera-gpu/tessera/config/scheme"
	"github.com/tessera-gpu/tessera/plugins/gputaints"
	"github.com/tessera-gpu/tessera/plugins/tesseradra"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu"
)

// Registry returns Tessera's out-of-tree plugins. Like the in-tree ones,
// they are handed the scheduler's feature gates as framework Features
// (frameworkruntime.FactoryAdapter) and never read the process-global gate
// themselves. The gates are read when a profile builds its plugins, not
// here: kube-scheduler's command takes this registry before it parses
// --feature-gates.
func Registry() frameworkruntime.Registry {
	return frameworkruntime.Registry{
		tesseragpu.Name: withFeatures(tesseragpu.New),
		gputaints.Name:  withFeatures(gputaints.New),
		tesseradra.Name: withFeatures(tesseradra.New),
	}
}

// RegistryWithFeatures returns the plugins with the given feature gates,
// for callers that build frameworks with gates of their own.
func RegistryWithFeatures(fts plfeature.Features) frameworkruntime.Registry {
	return frameworkruntime.Registry{
		tesseragpu.Name: frameworkruntime.FactoryAdapter(fts, tesseragpu.New),
		gputaints.Name:  frameworkruntime.FactoryAdapter(fts, gputaints.New),
		tesseradra.Name: frameworkruntime.FactoryAdapter(fts, tesseradra.New),
	}
}

// withFeatures adapts a factory that takes Features to one that reads them
// from the scheduler's gates at the time it is called.
func withFeatures[T fwk.Plugin](f frameworkruntime.PluginFactoryWithFts[T]) frameworkruntime.PluginFactory {
	return func(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
		fts := plfeature.NewSchedulerFeaturesFromGates(utilfeature.DefaultFeatureGate)
		return frameworkruntime.FactoryAdapter(fts, f)(ctx, obj, h)
	}
}
