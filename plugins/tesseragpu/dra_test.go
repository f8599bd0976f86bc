package tesseragpu

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// mappedClasses is a DeviceClassResolver that maps the named resources.
type mappedClasses map[v1.ResourceName]bool

func (m mappedClasses) GetDeviceClass(r v1.ResourceName) *resourceapi.DeviceClass {
	if !m[r] {
		return nil
	}
	return &resourceapi.DeviceClass{ObjectMeta: metav1.ObjectMeta{Name: "class-of-" + string(r)}}
}

// TestFilterOnDRANodes: a node without GPUNode is left to DynamicResources
// exactly when a DeviceClass maps every GPU resource the pod asks for and
// the node has none of them allocatable; otherwise it is rejected as
// before. Pods naming models are refused there.
func TestFilterOnDRANodes(t *testing.T) {
	node := func(alloc v1.ResourceList) fwk.NodeInfo {
		ni := framework.NewNodeInfo()
		ni.SetNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "dra"}, Status: v1.NodeStatus{Allocatable: alloc}})
		return ni
	}
	withPlugin := v1.ResourceList{gpu.ResourceGPU: resource.MustParse("8"), gpu.ResourcePercent: resource.MustParse("800")}
	tests := []struct {
		name    string
		classes mappedClasses
		pod     *v1.Pod
		alloc   v1.ResourceList
		want    *fwk.Status
	}{
		{name: "mapped whole", classes: mappedClasses{gpu.ResourceGPU: true}, pod: makePod("p", whole("2"))},
		{name: "mapped, device plugin there too", classes: mappedClasses{gpu.ResourceGPU: true}, pod: makePod("p", whole("2")), alloc: withPlugin,
			want: fwk.NewStatus(fwk.UnschedulableAndUnresolvable, reasonNoInventory)},
		{name: "not mapped", pod: makePod("p", whole("1")),
			want: fwk.NewStatus(fwk.UnschedulableAndUnresolvable, reasonNoInventory)},
		{name: "share not mapped", classes: mappedClasses{gpu.ResourceGPU: true}, pod: makePod("p", percent("30")),
			want: fwk.NewStatus(fwk.UnschedulableAndUnresolvable, reasonNoInventory)},
		{name: "mapped share", classes: mappedClasses{gpu.ResourcePercent: true}, pod: makePod("p", percent("30"))},
		{name: "models", classes: mappedClasses{gpu.ResourceGPU: true}, pod: makePod("p", whole("1"), annotate(gpu.ModelsAnnotation, "H100")),
			want: fwk.NewStatus(fwk.UnschedulableAndUnresolvable, reasonDRAModels)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("dp", 8, "H100"))
			if tc.classes != nil {
				pl.classes = tc.classes
			}
			cs, st := preFilter(t, pl, tc.pod)
			if !st.IsSuccess() {
				t.Fatalf("PreFilter: %v", st)
			}
			got := pl.Filter(context.Background(), cs, tc.pod, node(tc.alloc))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Filter (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPreFilterDoesNotSizeOrPruneForDRA: a pod larger than any node Tessera
// knows is not refused when a DeviceClass maps its resource, since a DRA
// node may hold it.
func TestPreFilterDoesNotSizeOrPruneForDRA(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("dp", 8, "H100"))
	pod := makePod("p", whole("16"))
	if _, st := preFilter(t, pl, pod); st.Code() != fwk.UnschedulableAndUnresolvable {
		t.Fatalf("without a mapping PreFilter gave %v, want the size refusal", st)
	}
	pl.classes = mappedClasses{gpu.ResourceGPU: true}
	if _, st := preFilter(t, pl, pod); !st.IsSuccess() {
		t.Errorf("with a mapping PreFilter gave %v", st)
	}
}

// TestScoreClaimsOnNodesTesseraCannotRead: a pod ranked for its claims
// scores 0, without a panic, on a node the cache knows nothing of and on a
// device-plugin node; Filter rejects neither (DynamicResources decides).
func TestScoreClaimsOnNodesTesseraCannotRead(t *testing.T) {
	pl := testPlugin(t, config.ScoringStrategyBinpack, gpuNode("dp", 8, "H100"))
	req, err := device.NewRequest([]device.ContainerDemand{{Name: "claims", Count: 1}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs := framework.NewCycleState()
	cs.Write(stateKey, &cycleState{req: req, claimOnly: true, now: now, cycle: cycles.Add(1)})
	pod := makePod("p")
	for _, name := range []string{"unknown", "dp"} {
		ni := framework.NewNodeInfo()
		ni.SetNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
		if st := pl.Filter(context.Background(), cs, pod, ni); st != nil {
			t.Errorf("Filter on %s: %v", name, st)
		}
		if score, st := pl.Score(context.Background(), cs, pod, ni); score != 0 || st != nil {
			t.Errorf("Score on %s = %d, %v; want 0", name, score, st)
		}
	}
}
