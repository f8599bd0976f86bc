package config

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
)

// GroupName is the API group of the plugin args: the kube-scheduler's own
// configuration group, because the scheduler only looks up pluginConfig args
// in that group.
const GroupName = schedconfig.GroupName

// SchemeGroupVersion is the internal version of GroupName, the version that
// plugins receive their args in.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: runtime.APIVersionInternal}

var (
	// SchemeBuilder collects the functions that add the internal args types
	// to a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the internal args types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion,
		&TesseraGPUArgs{},
		&TesseraTaintTolerationArgs{},
	)
	return nil
}

func init() {
	// Also register with the in-tree builder for the internal version: every
	// scheme the scheduler builds from it later (for example the one that
	// converts and defaults pluginConfig args, created lazily on first use)
	// then knows these kinds without further wiring.
	schedconfig.SchemeBuilder.Register(addKnownTypes)
}
