package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// nvidiaDriver is the driver name of NVIDIA's DRA driver for GPUs.
const nvidiaDriver = drainventory.NVIDIADriver

// h100 is the model of the DRA nodes' GPUs unless a test names others.
const h100 = "NVIDIA H100 80GB HBM3"

// oneGPUClaim is a ResourceClaim for one GPU of NVIDIA's class.
func oneGPUClaim(name, ns string) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: "gpu", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: nvidiaDriver},
		}}}},
	}
}

// usingClaim makes the pod's container use the ResourceClaim named claim.
func usingClaim(claim string) podOpt {
	return func(p *v1.Pod) {
		p.Spec.ResourceClaims = []v1.PodResourceClaim{{Name: "gpu", ResourceClaimName: new(claim)}}
		p.Spec.Containers[0].Resources.Claims = []v1.ResourceClaim{{Name: "gpu"}}
	}
}

// allocatedDevices waits until the pod's ResourceClaims (by default the one
// DynamicResources made for its extended resources) are allocated and
// returns the devices, as pool/device; all must be NVIDIA's.
func allocatedDevices(t *testing.T, ctx context.Context, c *localcluster.Cluster, pod *v1.Pod, claims ...string) []string {
	t.Helper()
	return allocatedDevicesOf(t, ctx, c, pod, nvidiaDriver, claims...)
}

// allocatedDevicesOf is allocatedDevices for devices of driver.
func allocatedDevicesOf(t *testing.T, ctx context.Context, c *localcluster.Cluster, pod *v1.Pod, driver string, claims ...string) []string {
	t.Helper()
	var out []string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		out = nil
		names := claims
		if len(names) == 0 {
			p, err := c.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil || p.Status.ExtendedResourceClaimStatus == nil {
				return false, nil
			}
			names = []string{p.Status.ExtendedResourceClaimStatus.ResourceClaimName}
		}
		for _, n := range names {
			claim, err := c.Client.ResourceV1().ResourceClaims(pod.Namespace).Get(ctx, n, metav1.GetOptions{})
			if err != nil || claim.Status.Allocation == nil {
				return false, nil
			}
			for _, r := range claim.Status.Allocation.Devices.Results {
				if r.Driver != driver {
					return false, fmt.Errorf("claim %s has a device of driver %s", n, r.Driver)
				}
				out = append(out, r.Pool+"/"+r.Device)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("pod %s: no allocated claim: %v", pod.Name, err)
	}
	return out
}

// TestMixedClusterPlacesMappedGPUsOnDRANodes: one pod spec asking for
// nvidia.com/gpu runs on a device-plugin node (Tessera picks and records
// the GPUs) and, once that is full, on a node whose GPUs a DRA driver
// publishes and a DeviceClass maps to nvidia.com/gpu (DynamicResources
// allocates them in the pod's extended-resource claim, no GPU is given
// twice). Model lists hold on a DRA node whose GPUs are all of an allowed
// model and are refused, with their own reason, on a node of mixed models,
// where the allocator could pick another; a pod with a ResourceClaim of
// the class gets a GPU of the DRA node too, and Tessera counts it.
func TestMixedClusterPlacesMappedGPUsOnDRANodes(t *testing.T) {
	e := newEnv(t, localcluster.SchedulerOptions{})
	e.addNode("dp", localcluster.FakeNode{GPUs: 2})
	if err := e.c.AddGPUDeviceClass(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.c.AddDRANode(e.ctx, "dra", h100, h100, h100, h100); err != nil {
		t.Fatal(err)
	}

	nodes := map[string]int{}
	seen := map[string]bool{}
	onDRA := func(p *v1.Pod, claims ...string) {
		t.Helper()
		if _, ok := p.Annotations["tessera.io/gpu-assignment"]; ok {
			t.Errorf("pod %s on the DRA node has an assignment: %s", p.Name, p.Annotations["tessera.io/gpu-assignment"])
		}
		for _, d := range allocatedDevices(t, e.ctx, e.c, p, claims...) {
			if seen[d] {
				t.Errorf("device %s allocated twice", d)
			}
			seen[d] = true
		}
	}
	for i := range 4 {
		name := fmt.Sprintf("gpu-%d", i)
		e.createPod(name, gpus(1))
		p := e.waitBound(name)
		nodes[p.Spec.NodeName]++
		switch p.Spec.NodeName {
		case "dp":
			if a := e.assignmentOf(p); len(a["main"]) != 1 {
				t.Errorf("pod %s on the device-plugin node has assignment %v", name, a)
			}
		case "dra":
			onDRA(p)
		}
	}
	// binpack fills the smaller node first.
	if nodes["dp"] != 2 || nodes["dra"] != 2 {
		t.Errorf("pods per node %v, want 2 on dp and 2 on dra", nodes)
	}

	e.createPod("h100-only", gpus(1), annotated(gpu.ModelsAnnotation, h100))
	if p := e.waitBound("h100-only"); p.Spec.NodeName != "dra" {
		t.Errorf("h100-only went to %s", p.Spec.NodeName)
	} else {
		onDRA(p)
	}
	if _, err := e.c.Client.ResourceV1().ResourceClaims("default").Create(e.ctx, oneGPUClaim("one-gpu", "default"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.createPod("with-claim", usingClaim("one-gpu"))
	onDRA(e.waitBound("with-claim"), "one-gpu")
	// The DRA node is full now, in Tessera's view too: the claim counts,
	// beside the two GPUs of the device-plugin node.
	waitAllocatedGPUs(t, e.ctx, 6)

	if err := e.c.AddDRANode(e.ctx, "dra-mixed", h100, "NVIDIA A100-SXM4-80GB"); err != nil {
		t.Fatal(err)
	}
	e.createPod("h100-again", gpus(1), annotated(gpu.ModelsAnnotation, h100))
	msg := e.waitUnschedulable("h100-again", "gpu models are not checked on a node that serves gpus through dra")
	// DynamicResources filters before TesseraGPU, so a full DRA node
	// carries its reason.
	if !strings.Contains(msg, "cannot allocate all claims") && !strings.Contains(msg, "insufficient gpu capacity") {
		t.Errorf("the full DRA node's reason is missing: %s", msg)
	}
}

// waitAllocatedGPUs waits until tessera-scheduler counts n H100s held.
func waitAllocatedGPUs(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	want := fmt.Sprintf(`tessera_scheduler_gpus_allocated{model="%s"} %d`, h100, n)
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return strings.Contains(scrapeSchedulerMetrics(t), want+"\n"), nil
	}); err != nil {
		t.Fatalf("the scheduler does not count %d GPUs allocated:\n%s", n, grepLines(scrapeSchedulerMetrics(t), "gpus_allocated"))
	}
}

// TestBinpackOnDRANodes: Tessera scores DRA nodes from their ResourceSlices
// and claims. Under binpack, pods asking for nvidia.com/gpu, and pods with
// a ResourceClaim for a GPU of NVIDIA's class, one after the other fill the
// 4-GPU DRA node "b" before they go to the 8-GPU node "a": the pod fills
// more of the smaller node. The other scorers cannot tell the two nodes
// apart (same CPU and memory). Each claim's GPU is counted once: the
// scheduler's allocated-GPU gauge follows the pods one by one.
func TestBinpackOnDRANodes(t *testing.T) {
	for _, kind := range []string{"mapped", "claim"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, localcluster.SchedulerOptions{})
			if err := e.c.AddGPUDeviceClass(e.ctx); err != nil {
				t.Fatal(err)
			}
			if err := e.c.AddDRANode(e.ctx, "a", h100, h100, h100, h100, h100, h100, h100, h100); err != nil {
				t.Fatal(err)
			}
			if err := e.c.AddDRANode(e.ctx, "b", h100, h100, h100, h100); err != nil {
				t.Fatal(err)
			}
			var placed []string
			for i := range 5 {
				name := fmt.Sprintf("gpu-%d", i)
				var claims []string
				if kind == "claim" {
					if _, err := e.c.Client.ResourceV1().ResourceClaims("default").Create(e.ctx, oneGPUClaim(name, "default"), metav1.CreateOptions{}); err != nil {
						t.Fatal(err)
					}
					e.createPod(name, usingClaim(name))
					claims = []string{name}
				} else {
					e.createPod(name, gpus(1))
				}
				p := e.waitBound(name)
				allocatedDevices(t, e.ctx, e.c, p, claims...)
				placed = append(placed, p.Spec.NodeName)
				waitAllocatedGPUs(t, e.ctx, i+1)
			}
			if want := []string{"b", "b", "b", "b", "a"}; !slices.Equal(placed, want) {
				t.Errorf("pods went to %v, want %v", placed, want)
			}
		})
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
