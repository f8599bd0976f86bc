// Package scheme wires Tessera's plugin args into the kube-scheduler's
// configuration scheme and gives plugins one call to get typed, defaulted and
// validated args.
//
// Importing this package (the tessera-scheduler binary does, through the
// plugins) is what makes a KubeSchedulerConfiguration's pluginConfig entries
// for TesseraGPU and TesseraTaintToleration decode, strictly, into
// *config.TesseraGPUArgs and *config.TesseraTaintTolerationArgs. Without it
// the scheduler would hand the plugins an untyped *runtime.Unknown and would
// not reject misspelt fields.
package scheme

import (
	"bytes"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	kubeschedulerscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"
	kubeschedulerconfigv1 "k8s.io/kubernetes/pkg/scheduler/apis/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/config"
	configv1 "github.com/tessera-gpu/tessera/config/v1"
	"github.com/tessera-gpu/tessera/config/validation"
)

// Scheme is the kube-scheduler's configuration scheme, re-exported so that
// callers need not import the in-tree package to reach the scheme Tessera's
// args are registered in.
var Scheme = kubeschedulerscheme.Scheme

// AddToScheme adds the internal and v1 plugin args types, their defaulting
// and their conversions to s. It is idempotent, so calling it on a scheme
// that already has them (for example one built from the in-tree scheme
// builders after this package was loaded) is harmless.
func AddToScheme(s *runtime.Scheme) error {
	if err := config.AddToScheme(s); err != nil {
		return err
	}
	return configv1.AddToScheme(s)
}

func init() {
	// The scheduler decodes a configuration file with the codecs of
	// kubeschedulerscheme.Scheme, which the in-tree package built in its own
	// init, possibly before config and config/v1 registered with the in-tree
	// scheme builders; so add the kinds to it directly.
	utilruntime.Must(AddToScheme(kubeschedulerscheme.Scheme))
	// Defaulting and conversion of pluginConfig args run in a second scheme
	// that the scheduler creates on first use. Building it now (before any
	// configuration is decoded) and adding the kinds directly keeps args typed
	// even if something created that scheme before this package was loaded.
	utilruntime.Must(AddToScheme(kubeschedulerconfigv1.GetPluginArgConversionScheme()))
}

// DecodeTesseraGPUArgs turns the args the scheduler framework hands to the
// TesseraGPU plugin factory into validated internal args. It accepts:
//   - nil: the plugin has no pluginConfig entry; defaults are returned;
//   - *config.TesseraGPUArgs: what the scheduler passes when this package is
//     linked in (already defaulted); it is validated and copied;
//   - *configv1.TesseraGPUArgs: defaulted, converted and validated;
//   - *runtime.Unknown: raw JSON or YAML (for example from a scheduler built
//     without this package's registration); decoded strictly as v1, so
//     unknown fields are errors, then defaulted, converted and validated.
//
// The result is never shared with the caller's input. On error the result is
// nil: an invalid configuration must stop the plugin from starting rather than
// run with guessed values.
func DecodeTesseraGPUArgs(obj runtime.Object) (*config.TesseraGPUArgs, error) {
	var args *config.TesseraGPUArgs
	switch in := obj.(type) {
	case nil:
		args = DefaultTesseraGPUArgs()
	case *config.TesseraGPUArgs:
		if in == nil {
			args = DefaultTesseraGPUArgs()
		} else {
			args = in.DeepCopy()
		}
	case *configv1.TesseraGPUArgs:
		v, err := gpuArgsFromV1(in.DeepCopy())
		if err != nil {
			return nil, err
		}
		args = v
	case *runtime.Unknown:
		versioned := &configv1.TesseraGPUArgs{}
		if err := decodeUnknown(in, versioned); err != nil {
			return nil, err
		}
		v, err := gpuArgsFromV1(versioned)
		if err != nil {
			return nil, err
		}
		args = v
	default:
		return nil, fmt.Errorf("want args of type *config.TesseraGPUArgs, *v1.TesseraGPUArgs or *runtime.Unknown, got %T", obj)
	}
	if err := validation.ValidateTesseraGPUArgs(nil, args); err != nil {
		return nil, err
	}
	return args, nil
}

// DecodeTesseraTaintTolerationArgs is DecodeTesseraGPUArgs for the
// TesseraTaintToleration plugin: it accepts nil, the internal or v1 args or a
// *runtime.Unknown, and returns defaulted, validated internal args or an
// error.
func DecodeTesseraTaintTolerationArgs(obj runtime.Object) (*config.TesseraTaintTolerationArgs, error) {
	var args *config.TesseraTaintTolerationArgs
	switch in := obj.(type) {
	case nil:
		args = DefaultTesseraTaintTolerationArgs()
	case *config.TesseraTaintTolerationArgs:
		if in == nil {
			args = DefaultTesseraTaintTolerationArgs()
		} else {
			args = in.DeepCopy()
		}
	case *configv1.TesseraTaintTolerationArgs:
		v, err := taintArgsFromV1(in.DeepCopy())
		if err != nil {
			return nil, err
		}
		args = v
	case *runtime.Unknown:
		versioned := &configv1.TesseraTaintTolerationArgs{}
		if err := decodeUnknown(in, versioned); err != nil {
			return nil, err
		}
		v, err := taintArgsFromV1(versioned)
		if err != nil {
			return nil, err
		}
		args = v
	default:
		return nil, fmt.Errorf("want args of type *config.TesseraTaintTolerationArgs, *v1.TesseraTaintTolerationArgs or *runtime.Unknown, got %T", obj)
	}
	if err := validation.ValidateTesseraTaintTolerationArgs(nil, args); err != nil {
		return nil, err
	}
	return args, nil
}

// DefaultTesseraGPUArgs returns the internal TesseraGPUArgs a scheduler uses
// when TesseraGPU has no pluginConfig entry. Tests and tools should start
// from it rather than from a zero value, which is invalid.
func DefaultTesseraGPUArgs() *config.TesseraGPUArgs {
	args, err := gpuArgsFromV1(&configv1.TesseraGPUArgs{})
	utilruntime.Must(err) // cannot fail: the conversion has no error paths
	return args
}

// DefaultTesseraTaintTolerationArgs returns the internal
// TesseraTaintTolerationArgs a scheduler uses when TesseraTaintToleration has
// no pluginConfig entry.
func DefaultTesseraTaintTolerationArgs() *config.TesseraTaintTolerationArgs {
	args, err := taintArgsFromV1(&configv1.TesseraTaintTolerationArgs{})
	utilruntime.Must(err) // cannot fail: the conversion has no error paths
	return args
}

var (
	kindTesseraGPUArgs             = configv1.SchemeGroupVersion.WithKind(config.TesseraGPUName + "Args")
	kindTesseraTaintTolerationArgs = configv1.SchemeGroupVersion.WithKind(config.TesseraTaintTolerationName + "Args")
)

// gpuArgsFromV1 defaults v (in place) and converts it to internal args.
func gpuArgsFromV1(v *configv1.TesseraGPUArgs) (*config.TesseraGPUArgs, error) {
	configv1.SetDefaults_TesseraGPUArgs(v)
	out := &config.TesseraGPUArgs{}
	if err := configv1.Convert_v1_TesseraGPUArgs_To_config_TesseraGPUArgs(v, out, nil); err != nil {
		return nil, fmt.Errorf("converting %s: %w", kindTesseraGPUArgs.Kind, err)
	}
	return out, nil
}

// taintArgsFromV1 defaults v (in place) and converts it to internal args.
func taintArgsFromV1(v *configv1.TesseraTaintTolerationArgs) (*config.TesseraTaintTolerationArgs, error) {
	configv1.SetDefaults_TesseraTaintTolerationArgs(v)
	out := &config.TesseraTaintTolerationArgs{}
	if err := configv1.Convert_v1_TesseraTaintTolerationArgs_To_config_TesseraTaintTolerationArgs(v, out, nil); err != nil {
		return nil, fmt.Errorf("converting %s: %w", kindTesseraTaintTolerationArgs.Kind, err)
	}
	return out, nil
}

// decodeUnknown decodes the raw JSON or YAML of u into the v1 object into
// with the scheduler's strict codecs, the same way the scheduler decodes
// known plugin args: apiVersion and kind may be omitted, unknown and
// duplicate fields are errors.
func decodeUnknown(u *runtime.Unknown, into runtime.Object) error {
	gvk := schema.GroupVersionKind{}
	switch into.(type) {
	case *configv1.TesseraGPUArgs:
		gvk = kindTesseraGPUArgs
	case *configv1.TesseraTaintTolerationArgs:
		gvk = kindTesseraTaintTolerationArgs
	}
	raw := bytes.TrimSpace(u.Raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil // no args at all: defaults apply
	}
	// The strict JSON decoder catches unknown and duplicate fields; YAML is
	// turned into JSON first so both spellings get the same checks.
	data, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return fmt.Errorf("decoding %s: %w", gvk.Kind, err)
	}
	decoder := kubeschedulerscheme.Codecs.UniversalDeserializer()
	obj, gotGVK, err := decoder.Decode(data, &gvk, into)
	if err != nil {
		return fmt.Errorf("decoding %s: %w", gvk.Kind, err)
	}
	if gotGVK == nil || *gotGVK != gvk || obj != into {
		return fmt.Errorf("decoding %s: got %v (%T) instead", gvk.Kind, gotGVK, obj)
	}
	return nil
}
