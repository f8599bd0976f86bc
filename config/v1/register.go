package v1

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
)

// SchemeGroupVersion is kubescheduler.config.k8s.io/v1, the version users
// write plugin args in. It must be the scheduler's own group and version:
// the scheduler looks up the args kind of each pluginConfig entry there.
var SchemeGroupVersion = schema.GroupVersion{Group: schedconfigv1.GroupName, Version: "v1"}

var (
	// SchemeBuilder collects the functions that add the v1 args types, their
	// defaulting and their conversions to a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes, RegisterDefaults, RegisterConversions)
	// AddToScheme adds the v1 args types, defaulting and conversions to a
	// scheme.
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
	// Also register with the in-tree builder for kubescheduler.config.k8s.io/v1:
	// every scheme the scheduler builds from it later (notably the lazily
	// created one that defaults and converts pluginConfig args) then knows
	// these kinds. config/scheme additionally adds them to schemes that may
	// already exist by the time this package is initialised.
	schedconfigv1.SchemeBuilder.Register(addKnownTypes, RegisterDefaults, RegisterConversions)
}
