// Package gputest builds the GPU nodes, pods and scheduler NodeInfo
// objects that the tests of the TesseraGPU plugin and of its cache share.
package gputest

import (
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Now is the tests' clock: GPUNode heartbeats are ten seconds before it.
var Now = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// GPUNode builds an inventory of n healthy GPUs of one model, in two NVLink
// islands split by NUMA node, with a fresh heartbeat.
func GPUNode(name string, n int, model string) *v1alpha1.GPUNode {
	gn := &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "1"}}
	hb := metav1.NewTime(Now.Add(-10 * time.Second))
	gn.Status.HeartbeatTime = &hb
	half := max(n/2, 1)
	for i := 0; i < n; i++ {
		g := v1alpha1.GPU{UUID: UUID(name, i), Index: int32(i), Model: model, MemoryMiB: 81920,
			NUMANode: int32(i / half), Health: v1alpha1.GPUHealth{Healthy: true}}
		for j := (i / half) * half; j < (i/half)*half+half && j < n; j++ {
			if j != i {
				g.NVLinkPeers = append(g.NVLinkPeers, UUID(name, j))
			}
		}
		gn.Status.GPUs = append(gn.Status.GPUs, g)
	}
	return gn
}

// UUID is the UUID of GPU i of node.
func UUID(node string, i int) string { return fmt.Sprintf("GPU-%s-%d", node, i) }

// PodOpt changes a pod that Pod builds.
type PodOpt func(*v1.Pod)

// Pod builds a pod of one container, main, in namespace default, with
// UID uid-<name>.
func Pod(name string, opts ...PodOpt) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec:       v1.PodSpec{Containers: []v1.Container{{Name: "main"}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Limit sets the container's limit of res.
func Limit(res v1.ResourceName, n string) PodOpt {
	return func(p *v1.Pod) {
		c := &p.Spec.Containers[0]
		if c.Resources.Limits == nil {
			c.Resources.Limits = v1.ResourceList{}
		}
		c.Resources.Limits[res] = resource.MustParse(n)
	}
}

// Whole asks for n whole GPUs.
func Whole(n string) PodOpt { return Limit(gpu.ResourceGPU, n) }

// Percent asks for a share of n percent of a GPU.
func Percent(n string) PodOpt { return Limit(gpu.ResourcePercent, n) }

// Annotate sets an annotation.
func Annotate(k, v string) PodOpt {
	return func(p *v1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}

// OnNode binds the pod to node n.
func OnNode(n string) PodOpt { return func(p *v1.Pod) { p.Spec.NodeName = n } }

// Tolerate adds a toleration of any taint with the key.
func Tolerate(key string) PodOpt {
	return func(p *v1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, v1.Toleration{Key: key, Operator: v1.TolerationOpExists})
	}
}

// NodeInfo is a scheduler NodeInfo of a node with no pods.
func NodeInfo(name string) fwk.NodeInfo {
	ni := framework.NewNodeInfo()
	ni.SetNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
	return ni
}

// Holds is a pod bound to node that holds pct percent of each listed GPU,
// as its assignment annotation records.
func Holds(name, node string, pct int, gpus ...int) *v1.Pod {
	var devs []string
	for _, g := range gpus {
		devs = append(devs, fmt.Sprintf(`{"uuid":%q,"percent":%d}`, UUID(node, g), pct))
	}
	opt := Whole(fmt.Sprint(len(gpus)))
	if pct < 100 {
		opt = Percent(fmt.Sprint(pct))
	}
	return Pod(name, OnNode(node), opt,
		Annotate(assignment.Annotation, `{"main":[`+strings.Join(devs, ",")+`]}`))
}
