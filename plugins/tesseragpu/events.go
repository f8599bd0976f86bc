package tesseragpu

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
	"github.com/tessera-gpu/tessera/pkg/generated/informers"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// gpuNodeEvents is how the scheduler names GPUNode events: it watches the
// resource through a dynamic informer of its own.
const gpuNodeEvents fwk.EventResource = "gpunodes.v1alpha1.tessera.io"

var metav1PatchOptions = metav1.PatchOptions{FieldManager: gpucache.FieldManager}

// watch feeds the cache from the pod, ResourceSlice and ResourceClaim
// informers the scheduler already runs and from a GPUNode informer of the
// plugin's own. It returns a function that
// reports whether both have delivered their initial lists, so that no pod is
// placed on a cache that does not yet know what is running. It opens the
// event gate once the scheduler's informers have synced, which the
// scheduler starts only after its event broadcaster.
func (pl *TesseraGPU) watch(ctx context.Context, h fwk.Handle, gate *eventGate) (func() bool, error) {
	// Before any handler runs: the cache stops its heartbeat timers with
	// the scheduler.
	pl.store.Stop = ctx.Done()
	podReg, err := h.SharedInformerFactory().Core().V1().Pods().Informer().AddEventHandler(pl.podHandler())
	if err != nil {
		return nil, fmt.Errorf("watching pods: %w", err)
	}
	// The scheduler talks protobuf to the apiserver; custom resources
	// only speak JSON.
	cfg := rest.CopyConfig(h.KubeConfig())
	cfg.ContentType, cfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	client, err := versioned.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the GPUNode client: %w", err)
	}
	pl.store.MarkStale = func(gn *v1alpha1.GPUNode, message string) {
		go markStale(ctx, client, gn, message)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(trimManagedFields))
	gnReg, err := factory.Tessera().V1alpha1().GPUNodes().Informer().AddEventHandler(pl.gpuNodeHandler())
	if err != nil {
		return nil, fmt.Errorf("watching GPUNodes: %w", err)
	}
	factory.Start(ctx.Done())
	// GPUs of DRA drivers: the informers DynamicResources uses.
	dra := pl.dra
	resources := h.SharedInformerFactory().Resource().V1()
	sliceReg, err := resources.ResourceSlices().Informer().AddEventHandler(dra.sliceHandler())
	if err != nil {
		return nil, fmt.Errorf("watching ResourceSlices: %w", err)
	}
	claimReg, err := resources.ResourceClaims().Informer().AddEventHandler(dra.claimHandler())
	if err != nil {
		return nil, fmt.Errorf("watching ResourceClaims: %w", err)
	}
	start := time.Now()
	synced := func() bool {
		return podReg.HasSynced() && gnReg.HasSynced() && sliceReg.HasSynced() && claimReg.HasSynced()
	}
	go func() {
		if !cache.WaitForCacheSync(ctx.Done(), synced) {
			return
		}
		cacheSync.Set(time.Since(start).Seconds())
		gate.Open()
		// A pod rejected as "not yet synced" waits for a change to the
		// cache. If the initial lists were delivered before its attempt,
		// none may follow, and it would wait for the queue's periodic
		// flush; so the sync itself counts as a change.
		pl.cache.Touch()
	}()
	return synced, nil
}

// trimManagedFields cuts an object's managedFields down to the time of its
// latest write before the informer stores it. The plugin reads only that
// time (firstSeen: the API server's clock, not the node's), and on a large
// cluster the field sets are most of a GPUNode's pointers, which the
// garbage collector would trace in every cycle.
func trimManagedFields(obj any) (any, error) {
	m, err := meta.Accessor(obj)
	if err != nil || m.GetManagedFields() == nil {
		return obj, nil
	}
	latest := gpucache.LastWrite(m.GetManagedFields())
	if latest == nil {
		m.SetManagedFields(nil)
	} else {
		m.SetManagedFields([]metav1.ManagedFieldsEntry{{Time: latest}})
	}
	return obj, nil
}

// markStale sets the GPUNode's InventoryFresh condition to False, as the
// scheduler's own field manager, with server-side apply on the status
// subresource: it owns that one condition and nothing else, and the device
// plugin's next heartbeat sets it True again. A dead plugin cannot say its
// inventory is stale, so the scheduler, which already judges staleness,
// says it for `kubectl wait` and health checks. A failed write is logged;
// the next transition tries again.
func markStale(ctx context.Context, client versioned.Interface, gn *v1alpha1.GPUNode, message string) {
	cond := metav1.Condition{Type: v1alpha1.ConditionInventoryFresh, Status: metav1.ConditionFalse,
		ObservedGeneration: gn.Generation, LastTransitionTime: metav1.Now(),
		Reason: v1alpha1.ReasonHeartbeatStale, Message: message}
	body, err := json.Marshal(map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "GPUNode",
		"metadata": map[string]any{"name": gn.Name, "uid": gn.UID},
		"status":   map[string]any{"conditions": []metav1.Condition{cond}},
	})
	if err == nil {
		force := true
		_, err = client.TesseraV1alpha1().GPUNodes().Patch(ctx, gn.Name, types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: gpucache.FieldManager, Force: &force}, "status")
	}
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		klog.FromContext(ctx).Error(err, "Cannot mark the GPUNode's inventory stale", "gpuNode", gn.Name)
	}
}

// EventsToRegister requeues pods rejected for GPU reasons when a GPUNode
// appears or changes, when a pod that held GPUs goes away, when the pod
// gains a toleration (which may cover a device taint), and when a
// DeviceClass or a node's allocatable changes (which may let DRA serve it).
func (pl *TesseraGPU) EventsToRegister(context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		{Event: fwk.ClusterEvent{Resource: gpuNodeEvents, ActionType: fwk.Add | fwk.Update}, QueueingHintFn: pl.afterGPUNodeChange},
		{Event: fwk.ClusterEvent{Resource: fwk.Pod, ActionType: fwk.Delete}, QueueingHintFn: pl.afterPodDelete},
		{Event: fwk.ClusterEvent{Resource: fwk.TargetPod, ActionType: fwk.UpdatePodToleration}},
		// A DeviceClass that maps a GPU resource, or a node whose device
		// plugin went away, can turn a node into one that serves the pod
		// through DRA (dra.go).
		{Event: fwk.ClusterEvent{Resource: fwk.DeviceClass, ActionType: fwk.Add | fwk.Update}},
		{Event: fwk.ClusterEvent{Resource: fwk.Node, ActionType: fwk.UpdateNodeAllocatable}},
	}, nil
}

// The hints only decide; they never change the cache. The cache follows its
// own informers, and when it catches up with a change a hint saw first, the
// activation loop (waiting.go) retries the pods that were judged on the
// older state. Hints run under the scheduling queue's lock once per waiting
// pod, so they are kept cheap.

// afterGPUNodeChange queues the pod if anything but the heartbeat changed,
// if the heartbeat brought a stale inventory back, or if the cache changed
// since the pod's last attempt.
func (pl *TesseraGPU) afterGPUNodeChange(logger klog.Logger, pod *v1.Pod, oldObj, newObj any) (fwk.QueueingHint, error) {
	if invalidRequest(pod) {
		return fwk.QueueSkip, nil
	}
	gn, err := asGPUNode(newObj)
	if err != nil {
		return fwk.Queue, err
	}
	if oldObj == nil {
		return fwk.Queue, nil
	}
	old, err := asGPUNode(oldObj)
	if err != nil {
		return fwk.Queue, err
	}
	if gpucache.InventoryChanged(old, gn) {
		logger.V(5).Info("GPUNode inventory changed", "pod", klog.KObj(pod), "gpuNode", gn.Name)
		return fwk.Queue, nil
	}
	// A heartbeat may bring a stale inventory back; the cache, which may
	// not have seen this update yet, judges staleness by when it sees
	// heartbeats change.
	if !gn.Status.HeartbeatTime.Equal(old.Status.HeartbeatTime) && pl.cache.StaleNow(gn.Name) {
		return fwk.Queue, nil
	}
	return pl.changedSince(pod), nil
}

// afterPodDelete queues the pod if the deleted pod held GPUs.
func (pl *TesseraGPU) afterPodDelete(_ klog.Logger, waiting *v1.Pod, oldObj, _ any) (fwk.QueueingHint, error) {
	if invalidRequest(waiting) {
		return fwk.QueueSkip, nil
	}
	pod, ok := oldObj.(*v1.Pod)
	if !ok {
		return fwk.Queue, fmt.Errorf("expected a pod, got %T", oldObj)
	}
	// A bound pod held GPUs if it was recorded, or if it asked for some:
	// the cache counts a GPU pod without a usable assignment as what it
	// asks for.
	if _, recorded := pod.Annotations[assignment.Annotation]; pod.Spec.NodeName != "" && (recorded || gpucache.RequestedGPUs(pod) != [2]int64{}) {
		return fwk.Queue, nil
	}
	return pl.changedSince(waiting), nil
}

// invalidRequest reports whether the pod's GPU request can never be served:
// no cluster event changes that, so such pods are not retried on events.
func invalidRequest(pod *v1.Pod) bool {
	_, err := gpu.ParsePod(pod)
	return err != nil
}

// asGPUNode accepts the typed object or the unstructured one that the
// scheduler's dynamic informer delivers.
func asGPUNode(obj any) (*v1alpha1.GPUNode, error) {
	switch o := obj.(type) {
	case *v1alpha1.GPUNode:
		return o, nil
	case *unstructured.Unstructured:
		gn := &v1alpha1.GPUNode{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, gn); err != nil {
			return nil, fmt.Errorf("decoding GPUNode %s: %w", o.GetName(), err)
		}
		return gn, nil
	default:
		return nil, fmt.Errorf("expected a GPUNode, got %T", obj)
	}
}
