package agent

import (
	"context"
	"encoding/json"
	"fmt"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// NodeTaintAnnotation marks a node whose GPU-node taint
// (nvidia.com/gpu=present:NoSchedule) tessera-device-plugin added with
// --taint-node. Only such a taint is ever removed again: GKE and AKS put the
// same taint on their GPU node pools, and it must outlive Tessera there.
const NodeTaintAnnotation = "tessera.io/node-taint"

// nodeTaint is the taint --taint-node adds.
var nodeTaint = v1.Taint{Key: gpu.NodeTaintKey, Value: "present", Effect: v1.TaintEffectNoSchedule}

// fieldManager names the device plugin in the node's managed fields, and is
// the value of NodeTaintAnnotation it writes.
const fieldManager = "tessera-device-plugin"

// taintNode adds the GPU-node taint, and the annotation that says Tessera
// added it, unless the node has a taint with that key already.
func taintNode(ctx context.Context, kube kubernetes.Interface, name string) error {
	node, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, t := range node.Spec.Taints {
		if t.Key == gpu.NodeTaintKey {
			return nil
		}
	}
	taints := append(append([]v1.Taint(nil), node.Spec.Taints...), nodeTaint)
	if err := patchNode(ctx, kube, node, taints, fieldManager); err != nil {
		return err
	}
	klog.FromContext(ctx).Info("Tainted the node", "taint", nodeTaint.ToString())
	return nil
}

// untaintNode removes the GPU-node taint and the annotation from a node
// whose taint Tessera added, and reports whether it did.
func untaintNode(ctx context.Context, kube kubernetes.Interface, node *v1.Node) (bool, error) {
	if _, ok := node.Annotations[NodeTaintAnnotation]; !ok {
		return false, nil
	}
	var taints []v1.Taint
	for _, t := range node.Spec.Taints {
		if !t.MatchTaint(&nodeTaint) {
			taints = append(taints, t)
		}
	}
	if err := patchNode(ctx, kube, node, taints, nil); err != nil {
		return false, err
	}
	klog.FromContext(ctx).Info("Removed the GPU-node taint Tessera added", "node", klog.KObj(node), "taint", nodeTaint.ToString())
	return true, nil
}

// untaintOwnNode removes the taint from this node if Tessera added it.
func untaintOwnNode(ctx context.Context, kube kubernetes.Interface, name string) error {
	node, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	_, err = untaintNode(ctx, kube, node)
	return err
}

// RemoveNodeTaints removes the GPU-node taint from every node where
// tessera-device-plugin added it, and returns how many nodes it changed.
// The chart runs it (tessera-device-plugin --remove-node-taints) when the
// release is uninstalled, so that the taint does not keep pods, the next
// install's tessera-scheduler included, off the nodes.
func RemoveNodeTaints(ctx context.Context, kube kubernetes.Interface) (int, error) {
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for i := range nodes.Items {
		done, err := untaintNode(ctx, kube, &nodes.Items[i])
		if err != nil {
			return n, fmt.Errorf("node %s: %w", nodes.Items[i].Name, err)
		}
		if done {
			n++
		}
	}
	return n, nil
}

// patchNode sets the node's taints and the ownership annotation (a nil
// value removes it), only if the node has not changed since it was read.
func patchNode(ctx context.Context, kube kubernetes.Interface, node *v1.Node, taints []v1.Taint, annotation any) error {
	if taints == nil {
		taints = []v1.Taint{}
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"resourceVersion": node.ResourceVersion,
			"annotations":     map[string]any{NodeTaintAnnotation: annotation},
		},
		"spec": map[string]any{"taints": taints},
	})
	if err != nil {
		return err
	}
	_, err = kube.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager})
	return err
}
