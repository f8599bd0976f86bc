package handoff

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/tessera-gpu/tessera/deviceplugin/metrics"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/podgpu"
)

// KubeletRecord lists the GPU devices the kubelet has given each container.
type KubeletRecord interface {
	List(ctx context.Context) ([]ContainerDevices, error)
}

// Reconciler feeds the ledger from the pods bound to this node and from the
// kubelet's record, and writes the kubelet's truth back into the assignment
// annotation of every pod where the two differ, so that the scheduler's
// cache converges on what the node really did.
type Reconciler struct {
	node     string
	ledger   *Ledger
	client   kubernetes.Interface
	record   KubeletRecord
	recorder record.EventRecorder
	// changed is called after anything that may change the device lists
	// reported to the kubelet.
	changed func()
	kick    chan struct{}
	// warned remembers the annotation values already reported as invalid;
	// the informer and SyncPods (called by the device-plugin server) both
	// write it.
	warnMu sync.Mutex
	warned map[types.UID]string
	// pods is the informer's store of this node's pods, once WatchPods has
	// started it.
	pods atomic.Pointer[cache.Store]
}

// NewReconciler returns a reconciler for node.
func NewReconciler(node string, ledger *Ledger, client kubernetes.Interface, rec KubeletRecord, recorder record.EventRecorder, changed func()) *Reconciler {
	if changed == nil {
		changed = func() {}
	}
	return &Reconciler{node: node, ledger: ledger, client: client, record: rec, recorder: recorder,
		changed: changed, kick: make(chan struct{}, 1), warned: map[types.UID]string{}}
}

// Kick asks for a reconciliation soon; it never blocks.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// WatchPods starts an informer on the pods bound to this node and returns a
// function reporting whether it has synced.
func (r *Reconciler) WatchPods(ctx context.Context) (func() bool, error) {
	factory := informers.NewSharedInformerFactoryWithOptions(r.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", r.node).String()
	}))
	inf := factory.Core().V1().Pods().Informer()
	store := inf.GetStore()
	r.pods.Store(&store)
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.onPod(ctx, obj) },
		UpdateFunc: func(_, obj any) { r.onPod(ctx, obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*v1.Pod); ok {
				r.ledger.DeletePod(pod.UID)
				r.changed()
				// The ledger freed the pod's devices already; a listing
				// soon drops what the last one said of the pod (a listing
				// taken before the kubelet processed the deletion only
				// keeps its devices apart from a same-name pod).
				r.Kick()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	return reg.HasSynced, nil
}

// PodsUsing returns the running pods of this node whose assignment (which
// the reconciler keeps true to what the kubelet allocated) names the GPU,
// sorted by namespace and name.
func (r *Reconciler) PodsUsing(uuid string) []*v1.Pod {
	if r == nil {
		return nil
	}
	store := r.pods.Load()
	if store == nil {
		return nil
	}
	var out []*v1.Pod
	for _, obj := range (*store).List() {
		pod, ok := obj.(*v1.Pod)
		if !ok || pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
			continue
		}
		if h := podgpu.Of(pod); h.State == podgpu.Recorded && h.Use[uuid] > 0 {
			out = append(out, pod)
		}
	}
	slices.SortFunc(out, func(a, b *v1.Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// SyncPods reads this node's pods from the API server, bypassing the
// informer, and records those the ledger has not seen. The kubelet admits a
// pod as soon as its own watch shows it bound, and the plugin's informer
// can be a moment behind; a consistent read is the only way to know that
// no pod placed by tessera-scheduler is being admitted before steering the
// kubelet without one. It returns how many pods were new to the ledger.
func (r *Reconciler) SyncPods(ctx context.Context) (int, error) {
	list, err := r.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", r.node).String(),
	})
	if err != nil {
		return 0, fmt.Errorf("listing the pods of node %s: %w", r.node, err)
	}
	added := 0
	for i := range list.Items {
		pod := &list.Items[i]
		if ok, err := r.ledger.AddPodIfUnknown(pod); ok {
			added++
			r.warnInvalid(ctx, pod, err)
		}
	}
	if added > 0 {
		r.changed()
	}
	return added, nil
}

func (r *Reconciler) onPod(ctx context.Context, obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	r.warnInvalid(ctx, pod, r.ledger.UpsertPod(pod))
	r.changed()
	r.Kick()
}

// warnInvalid reports, once per annotation value, a pod whose assignment
// the ledger could not use.
func (r *Reconciler) warnInvalid(ctx context.Context, pod *v1.Pod, err error) {
	r.warnMu.Lock()
	defer r.warnMu.Unlock()
	if err == nil {
		delete(r.warned, pod.UID)
		return
	}
	raw := pod.Annotations[assignment.Annotation]
	if r.warned[pod.UID] == raw {
		return
	}
	r.warned[pod.UID] = raw
	klog.FromContext(ctx).Info("Ignoring an unusable GPU assignment; the kubelet's choice will be recorded instead", "pod", klog.KObj(pod), "err", err)
	if r.recorder != nil {
		r.recorder.Eventf(pod, v1.EventTypeWarning, "InvalidGPUAssignment", "%s is ignored: %v", assignment.Annotation, err)
	}
}

// Run reconciles every interval and on every Kick until ctx ends.
func (r *Reconciler) Run(ctx context.Context, interval time.Duration) {
	logger := klog.FromContext(ctx)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
			// Let a burst of allocations land before listing.
			time.Sleep(50 * time.Millisecond)
		}
		if err := r.Once(ctx); err != nil {
			logger.Error(err, "Reconciling GPU assignments with the kubelet failed")
		}
	}
}

// Once lists the kubelet's record and corrects the annotations that differ.
func (r *Reconciler) Once(ctx context.Context) error {
	devs, err := r.record.List(ctx)
	if err != nil {
		return fmt.Errorf("reading the kubelet's pod resources: %w", err)
	}
	r.ledger.ObserveKubelet(devs)
	r.changed()
	var errs []error
	for _, c := range r.ledger.Corrections() {
		if err := r.correct(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d corrections failed, first: %w", len(errs), errs[0])
	}
	return nil
}

func (r *Reconciler) correct(ctx context.Context, c Correction) error {
	value := c.Assignment.String()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		// The UID precondition keeps a correction from landing on a new
		// pod that reuses the name.
		"uid":         c.Pod,
		"annotations": map[string]string{assignment.Annotation: value},
	}})
	if err != nil {
		return err
	}
	pod, err := r.client.CoreV1().Pods(c.Namespace).Patch(ctx, c.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tessera-device-plugin"})
	if err != nil {
		return fmt.Errorf("correcting the GPU assignment of pod %s/%s: %w", c.Namespace, c.Name, err)
	}
	metrics.Corrections.Inc()
	klog.FromContext(ctx).Info("Corrected a GPU assignment to what the kubelet allocated", "pod", klog.KObj(pod), "was", c.Was, "now", value)
	if r.recorder != nil {
		was := c.Was
		if was == "" {
			was = "(none)"
		}
		r.recorder.Eventf(pod, v1.EventTypeNormal, "GPUAssignmentCorrected", "The kubelet allocated %s; the annotation said %s", value, was)
	}
	return nil
}

// PodResources reads the kubelet's record through its PodResources API.
type PodResources struct {
	// Socket is the API's unix socket, normally
	// /var/lib/kubelet/pod-resources/kubelet.sock.
	Socket string
}

// List returns the GPU devices of every container on the node.
func (p PodResources) List(ctx context.Context) ([]ContainerDevices, error) {
	conn, err := grpc.NewClient("unix://"+p.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := podresourcesapi.NewPodResourcesListerClient(conn).List(ctx, &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		return nil, err
	}
	var out []ContainerDevices
	for _, pr := range resp.PodResources {
		for _, c := range pr.Containers {
			for _, d := range c.Devices {
				r := Resource(d.ResourceName)
				if r != Whole && r != Percent {
					continue
				}
				out = append(out, ContainerDevices{Namespace: pr.Namespace, Pod: pr.Name, Container: c.Name, Resource: r, IDs: d.DeviceIds})
			}
		}
	}
	return out, nil
}
