package inventory

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/generated/clientset/versioned"
)

// Publisher keeps one node's GPUNode status current. Every change (a health
// transition, a rediscovery) and every heartbeat tick enqueues the node; a
// single worker writes the status computed at write time, so a burst of
// changes costs one write and a conflict never loses a change: the retry
// recomputes from the latest state.
type Publisher struct {
	node      string
	gpus      versioned.Interface
	kube      kubernetes.Interface
	heartbeat time.Duration
	status    func(now time.Time) v1alpha1.GPUNodeStatus
	now       func() time.Time
	queue     workqueue.TypedRateLimitingInterface[string]
	synced    chan struct{}

	mu sync.Mutex
	// uid is the UID of the GPUNode last written; a GPUNode deleted and
	// created again has a new one.
	uid types.UID
	// attempts counts the write attempts begun, each with its own read of
	// the GPUNode.
	attempts uint64
	// waiting are the channels handed out by NextWrite, each closed by the
	// first successful write whose attempt began after attempts had passed
	// its after.
	waiting []writeWaiter
}

// writeWaiter is one NextWrite call waiting for a write.
type writeWaiter struct {
	after uint64
	ch    chan struct{}
}

// NewPublisher returns a publisher for node's GPUNode. status computes the
// inventory to write; kube, if not nil, is used to make the Node the
// GPUNode's owner, so deleting a Node deletes its inventory.
func NewPublisher(node string, gpus versioned.Interface, kube kubernetes.Interface, heartbeat time.Duration, status func(now time.Time) v1alpha1.GPUNodeStatus) *Publisher {
	return &Publisher{
		node: node, gpus: gpus, kube: kube, heartbeat: heartbeat, status: status, now: time.Now,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "gpunode-publisher"}),
		synced: make(chan struct{}),
	}
}

// Trigger asks for a write soon; it never blocks.
func (p *Publisher) Trigger() { p.queue.Add(p.node) }

// Published is closed after the first successful write.
func (p *Publisher) Published() <-chan struct{} { return p.synced }

// UID returns the UID of the GPUNode as of the last successful write (empty
// before the first). Events about the GPUNode name it by UID, which only a
// written (or read) object has: the GPUNode may not exist yet, or be
// deleted and created again with a new UID.
func (p *Publisher) UID() types.UID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.uid
}

// NextWrite returns a channel that is closed once a write that began after
// this call has succeeded. A write already under way does not count: it
// read the GPUNode before the call, so it may carry an older status, or
// land on a GPUNode deleted since and name the wrong UID. Call it before
// Trigger, so that the write it waits for is sure to come.
func (p *Publisher) NextWrite() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := writeWaiter{after: p.attempts, ch: make(chan struct{})}
	p.waiting = append(p.waiting, w)
	return w.ch
}

// attempt counts a write attempt as begun and returns its number.
func (p *Publisher) attempt() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attempts++
	return p.attempts
}

// written records a successful write of gn by attempt n, and releases the
// NextWrite callers that were waiting for an attempt begun after theirs.
func (p *Publisher) written(gn *v1alpha1.GPUNode, n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.uid = gn.UID
	kept := p.waiting[:0]
	for _, w := range p.waiting {
		if w.after < n {
			close(w.ch)
			continue
		}
		kept = append(kept, w)
	}
	clear(p.waiting[len(kept):])
	p.waiting = kept
}

// Run writes the status now, on every Trigger and every heartbeat interval,
// until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("gpuNode", p.node)
	ctx = klog.NewContext(ctx, logger)
	defer p.queue.ShutDown()
	go wait.UntilWithContext(ctx, func(context.Context) { p.Trigger() }, p.heartbeat)
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
	}()
	first := true
	for {
		key, quit := p.queue.Get()
		if quit {
			return
		}
		err := p.sync(ctx)
		p.queue.Done(key)
		if err != nil {
			logger.Error(err, "Writing the GPU inventory failed; retrying")
			p.queue.AddRateLimited(key)
			continue
		}
		p.queue.Forget(key)
		if first {
			close(p.synced)
			first = false
		}
	}
}

// sync writes the current status, creating the GPUNode if it is missing.
func (p *Publisher) sync(ctx context.Context) error {
	client := p.gpus.TesseraV1alpha1().GPUNodes()
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		n := p.attempt()
		gn, err := client.Get(ctx, p.node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			gn, err = client.Create(ctx, p.newGPUNode(ctx), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(v1alpha1.Resource("gpunodes"), p.node, err)
			}
		}
		if err != nil {
			return fmt.Errorf("reading GPUNode %s: %w", p.node, err)
		}
		gn = gn.DeepCopy()
		now := p.now()
		old := gn.Status.Conditions
		gn.Status = p.status(now)
		SetConditions(&gn.Status, old, gn.Generation, now)
		gn, err = client.UpdateStatus(ctx, gn, metav1.UpdateOptions{})
		if err != nil {
			if apierrors.IsConflict(err) {
				return err
			}
			return fmt.Errorf("writing GPUNode %s status: %w", p.node, err)
		}
		p.written(gn, n)
		return nil
	})
}

func (p *Publisher) newGPUNode(ctx context.Context) *v1alpha1.GPUNode {
	gn := &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: p.node}}
	if p.kube == nil {
		return gn
	}
	node, err := p.kube.CoreV1().Nodes().Get(ctx, p.node, metav1.GetOptions{})
	if err != nil {
		klog.FromContext(ctx).Info("Cannot read the Node; its GPUNode is created without an owner", "err", err)
		return gn
	}
	gn.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: corev1.SchemeGroupVersion.String(), Kind: "Node", Name: node.Name, UID: node.UID,
	}}
	return gn
}
