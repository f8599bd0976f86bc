package integration

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"
	_ "unsafe" // for go:linkname

	cadvisorapi "github.com/google/cadvisor/lib/model"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"

	"github.com/tessera-gpu/tessera/deviceplugin/handoff"
)

// newManagerImpl is the kubelet device manager's constructor that takes the
// socket path; the exported one hard-codes /var/lib/kubelet. A signature
// change in a Kubernetes bump fails the link, not silently.
//
//go:linkname newManagerImpl k8s.io/kubernetes/pkg/kubelet/cm/devicemanager.newManagerImpl
func newManagerImpl(logger klog.Logger, socketPath string, topology []cadvisorapi.Node, store topologymanager.Store) (*devicemanager.ManagerImpl, error)

// noTopology is a topology store without hints, as with the kubelet's
// default "none" topology-manager policy.
type noTopology struct{}

func (noTopology) GetAffinity(klog.Logger, string, string) topologymanager.TopologyHint {
	return topologymanager.TopologyHint{}
}
func (noTopology) GetPolicy() topologymanager.Policy { return topologymanager.NewNonePolicy() }
func (noTopology) Name() string                      { return "none" }

type allReady struct{}

func (allReady) AddSource(string) {}
func (allReady) AllReady() bool   { return true }

// kubelet is the real kubelet device manager, driven as the kubelet drives
// it: pods are admitted one at a time, each container allocated in order.
type kubelet struct {
	t   testing.TB
	dir string
	m   *devicemanager.ManagerImpl

	mu   sync.Mutex
	pods map[string]*v1.Pod
}

func startKubelet(t testing.TB, dir string) *kubelet {
	t.Helper()
	k := &kubelet{t: t, dir: dir, pods: map[string]*v1.Pod{}}
	k.start()
	t.Cleanup(func() { _ = k.m.Stop(klog.Background()) })
	return k
}

func (k *kubelet) start() {
	k.t.Helper()
	m, err := newManagerImpl(klog.Background(), filepath.Join(k.dir, "kubelet.sock"), []cadvisorapi.Node{{Id: 0}, {Id: 1}}, noTopology{})
	if err != nil {
		k.t.Fatal(err)
	}
	if err := m.Start(klog.Background(), k.activePods, allReady{}, containermap.NewContainerMap(), sets.New[string]()); err != nil {
		k.t.Fatal(err)
	}
	k.m = m
}

// restart stops the device manager and starts a new one on the same
// directory, as a kubelet restart does.
func (k *kubelet) restart() {
	k.t.Helper()
	k.stop()
	k.start()
}

// stop stops the device manager, as a kubelet that exits does.
func (k *kubelet) stop() {
	k.t.Helper()
	if err := k.m.Stop(klog.Background()); err != nil {
		k.t.Fatal(err)
	}
}

func (k *kubelet) activePods() []*v1.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*v1.Pod, 0, len(k.pods))
	for _, p := range k.pods {
		out = append(out, p)
	}
	return out
}

// admit allocates every container of the pod, init containers first, as
// the kubelet's admission does. On failure the pod is not active.
func (k *kubelet) admit(ctx context.Context, pod *v1.Pod) error {
	k.mu.Lock()
	k.pods[string(pod.UID)] = pod
	k.mu.Unlock()
	for _, cs := range [][]v1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if err := k.m.Allocate(ctx, pod, &cs[i], lifecycle.AddOperation); err != nil {
				k.mu.Lock()
				delete(k.pods, string(pod.UID))
				k.mu.Unlock()
				return err
			}
		}
	}
	return nil
}

// capacity returns the allocatable count of a resource.
func (k *kubelet) allocatable(r v1.ResourceName) int64 {
	_, alloc, _ := k.m.GetCapacity(klog.Background())
	q := alloc[r]
	return q.Value()
}

func (k *kubelet) waitAllocatable(r v1.ResourceName, want int64) {
	k.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		return k.allocatable(r) == want, nil
	})
	if err != nil {
		k.t.Fatalf("allocatable %s = %d, want %d", r, k.allocatable(r), want)
	}
}

// List is the kubelet's record, as its PodResources API reports it: one
// entry per device ID (the kubelet's container manager lists each device,
// and each NUMA node of a device, on its own), sidecars but no regular init
// containers.
func (k *kubelet) List(context.Context) ([]handoff.ContainerDevices, error) {
	var out []handoff.ContainerDevices
	for _, p := range k.activePods() {
		var cs []v1.Container
		for _, c := range p.Spec.InitContainers {
			if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
				cs = append(cs, c)
			}
		}
		cs = append(cs, p.Spec.Containers...)
		for _, c := range cs {
			for res, devs := range k.m.GetDevices(string(p.UID), c.Name) {
				if res != string(handoff.Whole) && res != string(handoff.Percent) {
					continue
				}
				for id, dev := range devs {
					entry := handoff.ContainerDevices{Namespace: p.Namespace, Pod: p.Name, Container: c.Name,
						Resource: handoff.Resource(res), IDs: []string{id}}
					nodes := 1
					if t := dev.GetTopology(); t != nil && len(t.GetNodes()) > 0 {
						nodes = len(t.GetNodes())
					}
					for i := 0; i < nodes; i++ {
						out = append(out, entry)
					}
				}
			}
		}
	}
	return out, nil
}
