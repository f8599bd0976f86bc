package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/deviceclass/extendedresourcecache"
	"k8s.io/dynamic-resource-allocation/resourceslice/tracker"
	"k8s.io/klog/v2"
	kschedv1 "k8s.io/kube-scheduler/config/v1"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	kubeschedulerscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/dynamicresources"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/names"
	"k8s.io/kubernetes/pkg/scheduler/util/assumecache"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
	"github.com/tessera-gpu/tessera/plugins/tesseradra"
)

// How the replay's GPU nodes serve their GPUs.
const (
	// modeDevicePlugin: each node has a GPUNode and Tessera picks the GPUs.
	modeDevicePlugin = "device-plugin"
	// modeDRA: Tessera's DRA driver publishes each node's GPUs in a
	// ResourceSlice; whole GPUs are asked as nvidia.com/gpu, which a
	// DeviceClass maps, and shares by ResourceClaims with a percent
	// capacity; TesseraDynamicResources allocates them, Tessera's choice
	// first.
	modeDRA = "dra"
	// modeDRAFirstFit is modeDRA with the in-tree DynamicResources: the
	// allocator's first fit picks the GPUs inside the node Tessera ranks
	// first.
	modeDRAFirstFit = "dra-first-fit"
)

var modes = []string{modeDevicePlugin, modeDRA, modeDRAFirstFit}

func isDRA(mode string) bool { return mode == modeDRA || mode == modeDRAFirstFit }

// traceNamespace holds the replay's ResourceClaims.
const traceNamespace = "trace"

// publishDRA publishes a node's GPUs as Tessera's DRA driver would.
func publishDRA(ctx context.Context, lc *localcluster.Cluster, n traceNode) error {
	gpus := make([]drainventory.PublishedGPU, n.gpus)
	for i := range gpus {
		gpus[i] = drainventory.PublishedGPU{Name: fmt.Sprintf("gpu-%d", i), UUID: localcluster.FakeGPUUUID(n.name, i), Index: i,
			Model: n.model, MemoryMiB: 16 << 10, NUMANode: -1, Island: -1}
	}
	if _, err := lc.Client.ResourceV1().ResourceSlices().Create(ctx, drainventory.TesseraSlice(n.name, 1, gpus), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the ResourceSlice of %s: %w", n.name, err)
	}
	return nil
}

// prepareDRA creates what every DRA replay shares: the DeviceClass that
// maps nvidia.com/gpu to the driver's GPUs, and the claims' namespace.
func prepareDRA(ctx context.Context, lc *localcluster.Cluster) error {
	if err := lc.AddTesseraDeviceClass(ctx, string(gpu.ResourceGPU)); err != nil {
		return err
	}
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: traceNamespace}}
	if _, err := lc.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", traceNamespace, err)
	}
	return nil
}

// draRuns numbers the DRA replays of this process.
var draRuns atomic.Int64

// draManager is the DRA manager kube-scheduler builds, on the replay's
// informers. The replay never binds, so every allocation stays pending in
// it, as an allocation between Reserve and PreBind does in the scheduler.
func draManager(ctx context.Context, client kubernetes.Interface, factory informers.SharedInformerFactory) (fwk.SharedDRAManager, error) {
	logger := klog.FromContext(ctx)
	claims := assumecache.NewAssumeCache(logger, factory.Resource().V1().ResourceClaims().Informer(), "ResourceClaim", "", nil)
	slices, err := tracker.StartTracker(ctx, tracker.Options{
		EnableConsumableCapacity: true,
		SliceInformer:            factory.Resource().V1().ResourceSlices(),
		KubeClient:               client,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the ResourceSlice tracker: %w", err)
	}
	m := dynamicresources.NewDRAManager(ctx, claims, slices, factory)
	// The scheduler feeds the manager's DeviceClass resolver from the
	// DeviceClass informer (its event handlers); without it no class maps
	// nvidia.com/gpu and NodeResourcesFit finds none on a DRA node.
	resolver, ok := m.DeviceClassResolver().(*extendedresourcecache.ExtendedResourceCache)
	if !ok {
		return nil, fmt.Errorf("the DRA manager resolves extended resources with a %T", m.DeviceClassResolver())
	}
	if _, err := factory.Resource().V1().DeviceClasses().Informer().AddEventHandler(resolver); err != nil {
		return nil, fmt.Errorf("watching DeviceClasses: %w", err)
	}
	return m, nil
}

// draPlugin adds the mode's DRA plugin to the replay's profile: after the
// other filters, since it is the costliest.
func draPlugin(p *schedconfig.KubeSchedulerProfile, mode string) error {
	name := tesseradra.Name
	if mode == modeDRAFirstFit {
		name = names.DynamicResources
	}
	v := &kschedv1.DynamicResourcesArgs{}
	kubeschedulerscheme.Scheme.Default(v)
	args := &schedconfig.DynamicResourcesArgs{}
	if err := kubeschedulerscheme.Scheme.Convert(v, args, nil); err != nil {
		return err
	}
	pl := schedconfig.Plugin{Name: name}
	p.Plugins.PreFilter.Enabled = append(p.Plugins.PreFilter.Enabled, pl)
	p.Plugins.Filter.Enabled = append(p.Plugins.Filter.Enabled, pl)
	p.Plugins.Reserve.Enabled = append(p.Plugins.Reserve.Enabled, pl)
	p.PluginConfig = append(p.PluginConfig, schedconfig.PluginConfig{Name: name, Args: args})
	return nil
}

// draPod turns a share pod into what a user of a DRA node submits: a
// ResourceClaim for the percent of one GPU of Tessera's class (of the
// pod's models, if it names any), created in the API server and waited
// for in the scheduler's tracker, and the pod using it. Whole-GPU pods
// keep asking nvidia.com/gpu, which the class maps.
func draPod(ctx context.Context, client kubernetes.Interface, m fwk.SharedDRAManager, run int64, p *tracePod, pod *v1.Pod) error {
	if p.numGPU == 0 || p.gpuMilli == 1000 {
		return nil
	}
	req := &resourceapi.ExactDeviceRequest{DeviceClassName: drainventory.TesseraDriver, Count: 1,
		AllocationMode: resourceapi.DeviceAllocationModeExactCount,
		Capacity: &resourceapi.CapacityRequirements{Requests: map[resourceapi.QualifiedName]resource.Quantity{
			drainventory.CapacityPercent: *resource.NewQuantity(int64(p.gpuMilli/10), resource.DecimalSI)}}}
	if len(p.models) > 0 {
		quoted := make([]string, len(p.models))
		for i, m := range p.models {
			quoted[i] = fmt.Sprintf("%q", m)
		}
		req.Selectors = []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{
			Expression: fmt.Sprintf(`device.attributes[%q].model in [%s]`, drainventory.TesseraDriver, strings.Join(quoted, ", "))}}}
	}
	claim := &resourceapi.ResourceClaim{
		// Replays share the API server: each names its claims apart.
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-r%d", pod.Name, run), Namespace: traceNamespace},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: "gpu", Exactly: req}}}},
	}
	if _, err := client.ResourceV1().ResourceClaims(traceNamespace).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the claim of %s: %w", pod.Name, err)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		_, err := m.ResourceClaims().Get(traceNamespace, claim.Name)
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("the claim of %s never reached the scheduler: %w", pod.Name, err)
	}
	c := &pod.Spec.Containers[0]
	delete(c.Resources.Limits, gpu.ResourcePercent)
	delete(c.Resources.Requests, gpu.ResourcePercent)
	pod.Namespace = traceNamespace
	pod.Spec.ResourceClaims = []v1.PodResourceClaim{{Name: "gpu", ResourceClaimName: &claim.Name}}
	c.Resources.Claims = []v1.ResourceClaim{{Name: "gpu"}}
	pod.Annotations = nil
	return nil
}
