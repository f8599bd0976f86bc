// Package tesseradra is TesseraDynamicResources: the in-tree DynamicResources
// plugin, unchanged in what it decides, with Tessera's choice of GPUs inside
// each node.
//
// The DRA allocator takes the first devices that satisfy a claim, in the
// order the node's ResourceSlices list them. That order says nothing about
// NVLink islands or about which GPU a fragmentation-aware policy would
// leave free, so on DRA nodes a 4-GPU claim could straddle two islands that
// TesseraGPU would never split. This plugin runs DynamicResources with a
// view of the DRA objects (fwk.SharedDRAManager, which the framework lets a
// caller supply) in which, for each pod, the GPUs TesseraGPU would take on a
// node are listed first. The allocator still checks every selector,
// constraint and taint and still backtracks, so a claim Tessera's choice
// cannot satisfy gets whatever the allocator finds, and devices of other
// drivers are shown as they are. The same view tells TesseraGPU at once what
// the allocator reserved, before the claim's status is written.
package tesseradra

import (
	"context"
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/dynamicresources"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/names"

	"github.com/tessera-gpu/tessera/config"
)

// Name is the plugin's name in the registry and in configuration.
const Name = config.TesseraDynamicResourcesName

// inTreeStateKey is where DynamicResources keeps its cycle state. Finding
// it before this plugin's PreFilter means the in-tree plugin runs in the
// same profile, which would allocate every claim twice.
const inTreeStateKey fwk.StateKey = names.DynamicResources

// TesseraDynamicResources is DynamicResources, whose extension points it
// promotes unchanged, built on a DRA manager that lists each node's GPUs in
// the order TesseraGPU prefers for the pod being scheduled.
type TesseraDynamicResources struct {
	*dynamicresources.DynamicResources
	manager *manager
}

var (
	_ fwk.PreEnqueuePlugin         = &TesseraDynamicResources{}
	_ fwk.PreFilterPlugin          = &TesseraDynamicResources{}
	_ fwk.FilterPlugin             = &TesseraDynamicResources{}
	_ fwk.PostFilterPlugin         = &TesseraDynamicResources{}
	_ fwk.ScorePlugin              = &TesseraDynamicResources{}
	_ fwk.ReservePlugin            = &TesseraDynamicResources{}
	_ fwk.PreBindPlugin            = &TesseraDynamicResources{}
	_ fwk.EnqueueExtensions        = &TesseraDynamicResources{}
	_ fwk.SignPlugin               = &TesseraDynamicResources{}
	_ fwk.PodGroupPostFilterPlugin = &TesseraDynamicResources{}
)

// Name returns the plugin's name.
func (pl *TesseraDynamicResources) Name() string { return Name }

// PreFilter refuses to run beside the in-tree plugin, then lets
// DynamicResources read the slices in the order TesseraGPU prefers for this
// pod. The framework runs PreFilter for one pod at a time, and
// DynamicResources reads the slices only in PreFilter.
func (pl *TesseraDynamicResources) PreFilter(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, nodes []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	if _, err := cs.Read(inTreeStateKey); err == nil {
		return nil, fwk.AsStatus(fmt.Errorf("%s and %s are both enabled in this profile and would allocate every claim twice; disable %s",
			Name, names.DynamicResources, names.DynamicResources))
	}
	end := pl.manager.forPod(ctx, pod)
	defer end()
	return pl.DynamicResources.PreFilter(ctx, cs, pod, nodes)
}

// New builds DynamicResources on Tessera's view of the DRA objects. The
// args are DynamicResourcesArgs (kind and apiVersion written out, since the
// scheduler names args kinds after plugins), or none for the defaults.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle, fts feature.Features) (*TesseraDynamicResources, error) {
	args, err := decodeArgs(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	registerMetrics()
	m := newManager(h)
	inner, err := dynamicresources.New(ctx, args, &handle{Handle: h, manager: m}, fts)
	if err != nil {
		if strings.Contains(err.Error(), "indexer conflict") {
			// Both plugins index the profile's pods by claim under one
			// name: the in-tree plugin was built first in this profile.
			return nil, fmt.Errorf("%s and %s are both enabled in profile %q and would allocate every claim twice; disable %s: %w",
				Name, names.DynamicResources, h.ProfileName(), names.DynamicResources, err)
		}
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	dr, ok := inner.(*dynamicresources.DynamicResources)
	if !ok {
		return nil, fmt.Errorf("%s: DynamicResources is a %T", Name, inner)
	}
	klog.FromContext(ctx).V(2).Info("DynamicResources runs with Tessera's choice of GPUs", "plugin", Name, "enabled", fts.EnableDynamicResourceAllocation)
	return &TesseraDynamicResources{DynamicResources: dr, manager: m}, nil
}
