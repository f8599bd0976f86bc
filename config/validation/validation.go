// Package validation checks the internal plugin args of package config.
//
// The scheduler's own configuration validation only knows the in-tree plugin
// args, so Tessera's plugins validate their args themselves when they are
// constructed (config/scheme's Decode helpers do this). Errors carry the
// field path of the offending value so that a user can find it in the
// KubeSchedulerConfiguration file.
package validation

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	v1helper "k8s.io/kubernetes/pkg/apis/core/v1/helper"

	"github.com/tessera-gpu/tessera/config"
)

const (
	// MinInventoryStaleness is the smallest accepted inventoryStaleness. A
	// shorter bound would be below any realistic heartbeat period, so every
	// node would flap between trusted and stale.
	MinInventoryStaleness = time.Second
	// MinScoringWeight and MaxScoringWeight bound each TesseraGPU weight,
	// matching the range the scheduler uses for its own score weights so that
	// the weighted sum cannot overflow the plugin's score range.
	MinScoringWeight int32 = 0
	// MaxScoringWeight is the largest accepted TesseraGPU weight.
	MaxScoringWeight int32 = 100
)

// ValidateTesseraGPUArgs checks TesseraGPUArgs. path is the location of the
// args in the enclosing document (nil for none); every error names the field
// below it. It returns nil or an aggregate of field errors.
func ValidateTesseraGPUArgs(path *field.Path, args *config.TesseraGPUArgs) error {
	if args == nil {
		return field.ErrorList{field.Required(path, "TesseraGPU args must not be nil")}.ToAggregate()
	}
	var allErrs field.ErrorList
	allErrs = append(allErrs, validateScoringStrategy(path.Child("scoringStrategy"), args.ScoringStrategy)...)
	allErrs = append(allErrs, validateInventoryStaleness(path.Child("inventoryStaleness"), args.InventoryStaleness.Duration)...)
	allErrs = append(allErrs, validateScoringWeights(path.Child("weights"), args.Weights)...)
	return allErrs.ToAggregate()
}

func validateScoringStrategy(path *field.Path, s config.ScoringStrategy) field.ErrorList {
	typePath := path.Child("type")
	switch {
	case s.Type == "":
		return field.ErrorList{field.Required(typePath, fmt.Sprintf("must be one of %s", supportedStrategiesText()))}
	case s.Type == config.ScoringStrategyFragmentation:
		return validateFragmentation(path.Child("fragmentation"), s.Fragmentation)
	case s.Type.IsSupported():
		if s.Fragmentation != nil {
			return field.ErrorList{field.Forbidden(path.Child("fragmentation"),
				fmt.Sprintf("only valid with type %q", config.ScoringStrategyFragmentation))}
		}
		return nil
	default:
		return field.ErrorList{field.NotSupported(typePath, s.Type, config.SupportedScoringStrategyNames())}
	}
}

const (
	// MaxFragmentationWindowPods bounds windowPods: beyond a million pods
	// the estimate would no longer follow any drift a cluster sees.
	MaxFragmentationWindowPods int32 = 1000000
	// MaxCPUStarvation bounds cpuStarvation: ten times a fragment's weight
	// already lets CPU decide every placement it has a say in.
	MaxCPUStarvation int32 = 1000
	// MaxSeedClasses bounds the seed: fragmentation scoring costs time per
	// class, and no real workload needs more shapes to be described.
	MaxSeedClasses = 1024
)

func validateFragmentation(path *field.Path, f *config.FragmentationArgs) field.ErrorList {
	if f == nil {
		return field.ErrorList{field.Required(path, "the fragmentation strategy needs its settings (defaulting fills them in)")}
	}
	var errs field.ErrorList
	if f.WindowPods < 0 || f.WindowPods > MaxFragmentationWindowPods {
		errs = append(errs, field.Invalid(path.Child("windowPods"), f.WindowPods,
			fmt.Sprintf("must be between 0 and %d", MaxFragmentationWindowPods)))
	}
	if f.WindowPods == 0 && len(f.Seed) == 0 {
		errs = append(errs, field.Required(path.Child("seed"), "windowPods 0 turns online estimation off, so the seed is the whole workload and must not be empty"))
	}
	if f.Coverage < 1 || f.Coverage > 100 {
		errs = append(errs, field.Invalid(path.Child("coverage"), f.Coverage, "must be a percentage between 1 and 100"))
	}
	if f.CPUStarvation < 0 || f.CPUStarvation > MaxCPUStarvation {
		errs = append(errs, field.Invalid(path.Child("cpuStarvation"), f.CPUStarvation,
			fmt.Sprintf("must be a percentage between 0 and %d", MaxCPUStarvation)))
	}
	if f.SeedPods < 0 {
		errs = append(errs, field.Invalid(path.Child("seedPods"), f.SeedPods, "must not be negative"))
	}
	if len(f.Seed) > MaxSeedClasses {
		errs = append(errs, field.TooMany(path.Child("seed"), len(f.Seed), MaxSeedClasses))
	}
	for i, c := range f.Seed {
		p := path.Child("seed").Index(i)
		if c.CPUMilli < 0 {
			errs = append(errs, field.Invalid(p.Child("cpu"), c.CPUMilli, "must not be negative"))
		}
		switch {
		case c.GPUs < 0 || c.GPUs > 64:
			errs = append(errs, field.Invalid(p.Child("gpus"), c.GPUs, "must be between 0 and 64"))
		case c.GPUs > 0 && (c.GPUPercent < 1 || c.GPUPercent > 100):
			errs = append(errs, field.Invalid(p.Child("gpuPercent"), c.GPUPercent, "must be between 1 and 100"))
		case c.GPUs > 1 && c.GPUPercent != 100:
			errs = append(errs, field.Invalid(p.Child("gpuPercent"), c.GPUPercent, "pods with several GPUs take them whole; only single-GPU pods take a share"))
		case c.GPUs == 0 && c.GPUPercent != 0:
			errs = append(errs, field.Invalid(p.Child("gpuPercent"), c.GPUPercent, "must be unset for a pod without GPUs"))
		case c.GPUs == 0 && len(c.Models) > 0:
			errs = append(errs, field.Invalid(p.Child("models"), c.Models, "must be empty for a pod without GPUs"))
		}
		for j, m := range c.Models {
			if strings.TrimSpace(m) == "" {
				errs = append(errs, field.Invalid(p.Child("models").Index(j), m, "must not be empty"))
			}
		}
		if c.Weight < 1 {
			errs = append(errs, field.Invalid(p.Child("weight"), c.Weight, "must be at least 1"))
		}
	}
	return errs
}

func supportedStrategiesText() string {
	names := config.SupportedScoringStrategyNames()
	for i, n := range names {
		names[i] = strconv.Quote(n)
	}
	return strings.Join(names, ", ")
}

func validateInventoryStaleness(path *field.Path, d time.Duration) field.ErrorList {
	if d < MinInventoryStaleness {
		return field.ErrorList{field.Invalid(path, d.String(),
			fmt.Sprintf("must be at least %s: a shorter bound marks healthy nodes stale between heartbeats", MinInventoryStaleness))}
	}
	return nil
}

func validateScoringWeights(path *field.Path, w config.ScoringWeights) field.ErrorList {
	var allErrs field.ErrorList
	weights := []struct {
		name  string
		value int32
	}{
		{"node", w.Node},
		{"gpu", w.GPU},
		{"topology", w.Topology},
		{"deviceTaint", w.DeviceTaint},
	}
	allZero := true
	for _, wt := range weights {
		if wt.value < MinScoringWeight || wt.value > MaxScoringWeight {
			allErrs = append(allErrs, field.Invalid(path.Child(wt.name), wt.value,
				fmt.Sprintf("must be in the range [%d, %d]", MinScoringWeight, MaxScoringWeight)))
		}
		if wt.value != 0 {
			allZero = false
		}
	}
	if allZero {
		allErrs = append(allErrs, field.Invalid(path, "all zero",
			"at least one weight must be positive; with all weights zero the plugin could not rank nodes"))
	}
	return allErrs
}

// ValidateTesseraTaintTolerationArgs checks TesseraTaintTolerationArgs. path
// is the location of the args in the enclosing document (nil for none); every
// error names the field below it. It returns nil or an aggregate of field
// errors.
func ValidateTesseraTaintTolerationArgs(path *field.Path, args *config.TesseraTaintTolerationArgs) error {
	if args == nil {
		return field.ErrorList{field.Required(path, "TesseraTaintToleration args must not be nil")}.ToAggregate()
	}
	var allErrs field.ErrorList

	keyPath := path.Child("gpuNodeTaintKey")
	if args.GPUNodeTaintKey == "" {
		allErrs = append(allErrs, field.Required(keyPath, "the key of the taint that marks GPU nodes"))
	} else {
		// Node taint keys follow the same rule, so a key accepted here can be
		// put on a node.
		for _, msg := range utilvalidation.IsQualifiedName(args.GPUNodeTaintKey) {
			allErrs = append(allErrs, field.Invalid(keyPath, args.GPUNodeTaintKey, msg))
		}
	}

	namesPath := path.Child("gpuResourceNames")
	if len(args.GPUResourceNames) == 0 {
		allErrs = append(allErrs, field.Required(namesPath, "at least one resource that makes a pod a GPU pod"))
	}
	seen := sets.New[string]()
	for i, name := range args.GPUResourceNames {
		p := namesPath.Index(i)
		if seen.Has(name) {
			allErrs = append(allErrs, field.Duplicate(p, name))
			continue
		}
		seen.Insert(name)
		allErrs = append(allErrs, validateExtendedResourceName(p, name)...)
	}
	return allErrs.ToAggregate()
}

// validateExtendedResourceName checks that name can be advertised by a device
// plugin and requested by a pod as an extended resource. Each rule gets its
// own message; the final check defers to Kubernetes' own helper so that the
// two cannot drift apart.
func validateExtendedResourceName(path *field.Path, name string) field.ErrorList {
	switch {
	case name == "":
		return field.ErrorList{field.Required(path, "resource name must not be empty")}
	case !strings.Contains(name, "/"):
		return field.ErrorList{field.Invalid(path, name,
			"must be a domain-prefixed extended resource name such as nvidia.com/gpu; unprefixed names are Kubernetes' native resources")}
	case strings.Contains(name, corev1.ResourceDefaultNamespacePrefix):
		return field.ErrorList{field.Invalid(path, name,
			fmt.Sprintf("must not be in the %q namespace, which is reserved for native resources", corev1.ResourceDefaultNamespacePrefix))}
	case strings.HasPrefix(name, corev1.DefaultResourceRequestsPrefix):
		return field.ErrorList{field.Invalid(path, name,
			fmt.Sprintf("must not start with %q, which is reserved for quota", corev1.DefaultResourceRequestsPrefix))}
	}
	var allErrs field.ErrorList
	for _, msg := range utilvalidation.IsQualifiedName(name) {
		allErrs = append(allErrs, field.Invalid(path, name, msg))
	}
	if len(allErrs) == 0 && !v1helper.IsExtendedResourceName(corev1.ResourceName(name)) {
		allErrs = append(allErrs, field.Invalid(path, name, "is not a valid extended resource name"))
	}
	return allErrs
}
