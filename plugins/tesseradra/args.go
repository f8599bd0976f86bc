package tesseradra

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	kschedv1 "k8s.io/kube-scheduler/config/v1"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	kubeschedulerscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"
	"sigs.k8s.io/yaml"
)

// decodeArgs returns the DynamicResourcesArgs the plugin runs
// DynamicResources with: those given, defaulted as kube-scheduler defaults
// them, or the defaults alone. kube-scheduler decodes a plugin's args by
// the kind "<plugin name>Args"; this plugin has no kind of its own, so args
// written without kind reach it undecoded and are read here, strictly.
func decodeArgs(obj runtime.Object) (*schedconfig.DynamicResourcesArgs, error) {
	switch a := obj.(type) {
	case *schedconfig.DynamicResourcesArgs:
		return a, nil
	case nil:
		return convertArgs(&kschedv1.DynamicResourcesArgs{})
	case *runtime.Unknown:
		var v kschedv1.DynamicResourcesArgs
		if len(a.Raw) > 0 {
			if err := yaml.UnmarshalStrict(a.Raw, &v); err != nil {
				return nil, fmt.Errorf("decoding args as DynamicResourcesArgs: %w", err)
			}
		}
		return convertArgs(&v)
	default:
		return nil, fmt.Errorf("got args of type %T, want DynamicResourcesArgs", obj)
	}
}

func convertArgs(v *kschedv1.DynamicResourcesArgs) (*schedconfig.DynamicResourcesArgs, error) {
	kubeschedulerscheme.Scheme.Default(v)
	var out schedconfig.DynamicResourcesArgs
	if err := kubeschedulerscheme.Scheme.Convert(v, &out, nil); err != nil {
		return nil, fmt.Errorf("converting DynamicResourcesArgs: %w", err)
	}
	return &out, nil
}
