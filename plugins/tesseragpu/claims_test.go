package tesseragpu

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

// fakeDRA serves claims and classes from maps.
type fakeDRA struct {
	fwk.SharedDRAManager
	claims  map[string]*resourceapi.ResourceClaim
	classes map[string]*resourceapi.DeviceClass
}

type fakeClaims struct {
	fwk.ResourceClaimTracker
	f *fakeDRA
}

type fakeClasses struct {
	fwk.DeviceClassLister
	f *fakeDRA
}

func (f *fakeDRA) ResourceClaims() fwk.ResourceClaimTracker { return fakeClaims{f: f} }
func (f *fakeDRA) DeviceClasses() fwk.DeviceClassLister     { return fakeClasses{f: f} }

func (c fakeClaims) Get(ns, name string) (*resourceapi.ResourceClaim, error) {
	if rc, ok := c.f.claims[ns+"/"+name]; ok {
		return rc, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "resourceclaims"}, name)
}

func (c fakeClasses) Get(name string) (*resourceapi.DeviceClass, error) {
	if dc, ok := c.f.classes[name]; ok {
		return dc, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "deviceclasses"}, name)
}

// exact is a request for count devices of class, asking capacity.
func exact(class string, count int64, capacity map[resourceapi.QualifiedName]string) resourceapi.DeviceRequest {
	r := &resourceapi.ExactDeviceRequest{DeviceClassName: class, Count: count, AllocationMode: resourceapi.DeviceAllocationModeExactCount}
	if capacity != nil {
		r.Capacity = &resourceapi.CapacityRequirements{Requests: map[resourceapi.QualifiedName]resource.Quantity{}}
		for k, v := range capacity {
			r.Capacity.Requests[k] = resource.MustParse(v)
		}
	}
	return resourceapi.DeviceRequest{Name: "r", Exactly: r}
}

// withClaims is a plugin whose DRA manager has the claims (named c0, c1,
// ...) and the GPU class of Tessera's driver and a NIC class, and a pod
// using every claim.
func withClaims(t *testing.T, strategy config.ScoringStrategyType, requests ...[]resourceapi.DeviceRequest) (*TesseraGPU, *v1.Pod) {
	t.Helper()
	pl := testPlugin(t, strategy)
	f := &fakeDRA{claims: map[string]*resourceapi.ResourceClaim{}, classes: map[string]*resourceapi.DeviceClass{
		drainventory.TesseraDriver: drainventory.GPUClass(drainventory.TesseraDriver, ""),
		"nic": {ObjectMeta: metav1.ObjectMeta{Name: "nic"}, Spec: resourceapi.DeviceClassSpec{Selectors: []resourceapi.DeviceSelector{{
			CEL: &resourceapi.CELDeviceSelector{Expression: `device.driver == "nic.example.com"`}}}}},
	}}
	pl.draManager = f
	pod := makePod("p")
	for i, reqs := range requests {
		name := "c" + string(rune('0'+i))
		f.claims["default/"+name] = &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: reqs}}}
		pod.Spec.ResourceClaims = append(pod.Spec.ResourceClaims, v1.PodResourceClaim{Name: name, ResourceClaimName: new(name)})
	}
	return pl, pod
}

// TestClaimRequest: how a pod's claims are sized as whole GPUs and shares.
func TestClaimRequest(t *testing.T) {
	gpu := drainventory.TesseraDriver
	percent := func(p string) map[resourceapi.QualifiedName]string {
		return map[resourceapi.QualifiedName]string{"percent": p}
	}
	type sized struct {
		Whole  int
		Shares []int
		Models []string
	}
	model := func(r resourceapi.DeviceRequest, expr string) resourceapi.DeviceRequest {
		r.Exactly.Selectors = append(r.Exactly.Selectors, resourceapi.DeviceSelector{CEL: &resourceapi.CELDeviceSelector{Expression: expr}})
		return r
	}
	t4v100 := `device.attributes["gpu.tessera.io"].model in ["V100", "T4"]`
	tests := []struct {
		name   string
		claims [][]resourceapi.DeviceRequest
		want   *sized // nil: not sized
	}{
		{"two whole", [][]resourceapi.DeviceRequest{{exact(gpu, 2, nil)}}, &sized{Whole: 2}},
		{"claims add up", [][]resourceapi.DeviceRequest{{exact(gpu, 1, nil)}, {exact(gpu, 3, nil)}}, &sized{Whole: 4}},
		{"a share", [][]resourceapi.DeviceRequest{{exact(gpu, 1, percent("30"))}}, &sized{Shares: []int{30}}},
		{"qualified percent and memory", [][]resourceapi.DeviceRequest{{exact(gpu, 1, map[resourceapi.QualifiedName]string{
			"gpu.tessera.io/percent": "40", "memory": "10Gi"})}}, &sized{Shares: []int{40}}},
		{"all of it is whole", [][]resourceapi.DeviceRequest{{exact(gpu, 1, percent("100"))}}, &sized{Whole: 1}},
		{"share and whole", [][]resourceapi.DeviceRequest{{exact(gpu, 1, percent("50")), exact(gpu, 1, nil)}}, &sized{Whole: 1, Shares: []int{50}}},
		{"NIC beside", [][]resourceapi.DeviceRequest{{exact(gpu, 1, nil)}, {exact("nic", 1, nil)}}, &sized{Whole: 1}},
		{"only a NIC", [][]resourceapi.DeviceRequest{{exact("nic", 1, nil)}}, nil},
		{"shares of two GPUs in one request", [][]resourceapi.DeviceRequest{{exact(gpu, 2, percent("30"))}}, nil},
		{"another capacity", [][]resourceapi.DeviceRequest{{exact(gpu, 1, map[resourceapi.QualifiedName]string{"sm": "10"})}}, nil},
		{"unknown class", [][]resourceapi.DeviceRequest{{exact("gone", 1, nil)}}, nil},
		{"models", [][]resourceapi.DeviceRequest{{model(exact(gpu, 1, percent("30")), t4v100)}}, &sized{Shares: []int{30}, Models: []string{"T4", "V100"}}},
		{"models of two selectors", [][]resourceapi.DeviceRequest{{model(model(exact(gpu, 2, nil), t4v100), `device.attributes["gpu.tessera.io"].model == "T4"`)}},
			&sized{Whole: 2, Models: []string{"T4"}}},
		{"the same models in two claims", [][]resourceapi.DeviceRequest{{model(exact(gpu, 1, nil), t4v100)}, {model(exact(gpu, 1, nil), t4v100)}},
			&sized{Whole: 2, Models: []string{"T4", "V100"}}},
		{"models in one claim only", [][]resourceapi.DeviceRequest{{model(exact(gpu, 1, nil), t4v100)}, {exact(gpu, 1, nil)}}, &sized{Whole: 2}},
		{"a selector of another form", [][]resourceapi.DeviceRequest{{model(exact(gpu, 1, nil), `device.attributes["gpu.tessera.io"].model.startsWith("T")`)}}, &sized{Whole: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pl, pod := withClaims(t, config.ScoringStrategyBinpack, tc.claims...)
			req := pl.claimRequest(pod)
			var got *sized
			if req != nil {
				got = &sized{Whole: req.Whole, Shares: req.Shares, Models: req.Models}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("claimRequest (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFragmentationLearnsClaimShares: under the fragmentation strategy the
// workload estimate counts a pod whose share is a claim as a share pod,
// not as a pod without GPUs.
func TestFragmentationLearnsClaimShares(t *testing.T) {
	pl, pod := withClaims(t, config.ScoringStrategyFragmentation, []resourceapi.DeviceRequest{exact(drainventory.TesseraDriver, 1,
		map[resourceapi.QualifiedName]string{"percent": "30"})})
	if _, st := pl.PreFilter(context.Background(), framework.NewCycleState(), pod, nil); !st.IsSuccess() {
		t.Fatalf("PreFilter: %v", st)
	}
	fs := pl.scorer.(*fragmentationScorer)
	fs.workload.mu.Lock()
	defer fs.workload.mu.Unlock()
	var units []int
	for k := range fs.workload.shapes {
		units = append(units, k.units)
	}
	if diff := cmp.Diff([]int{30}, units); diff != "" {
		t.Errorf("shapes learnt, by share (-want +got):\n%s", diff)
	}
}
