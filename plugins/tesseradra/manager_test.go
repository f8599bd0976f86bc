package tesseradra

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	st "k8s.io/kubernetes/pkg/scheduler/testing"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

// The profile's own DRA objects, as far as the view uses them.
type fakeTracker struct {
	fwk.ResourceClaimTracker
	claims  map[string]*resourceapi.ResourceClaim
	pending map[types.UID]bool
}

func (f *fakeTracker) Get(ns, name string) (*resourceapi.ResourceClaim, error) {
	if c, ok := f.claims[ns+"/"+name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "resourceclaims"}, name)
}

func (f *fakeTracker) SignalClaimPendingAllocation(uid types.UID, _ *resourceapi.ResourceClaim) error {
	f.pending[uid] = true
	return nil
}

func (f *fakeTracker) MaybeRemoveClaimPendingAllocation(uid types.UID, _ bool) bool {
	had := f.pending[uid]
	delete(f.pending, uid)
	return had
}

type fakeSlices []*resourceapi.ResourceSlice

func (f fakeSlices) ListWithDeviceTaintRules() ([]*resourceapi.ResourceSlice, error) { return f, nil }

type fakeDRA struct {
	fwk.SharedDRAManager
	tracker *fakeTracker
	slices  fakeSlices
}

func (f *fakeDRA) ResourceClaims() fwk.ResourceClaimTracker { return f.tracker }
func (f *fakeDRA) ResourceSlices() fwk.ResourceSliceLister  { return f.slices }

type fakeHandle struct {
	fwk.Handle
	dra *fakeDRA
}

func (h *fakeHandle) SharedDRAManager() fwk.SharedDRAManager { return h.dra }

// recorder is a TesseraGPU that prefers fixed devices and records what it
// is told.
type recorder struct {
	order   map[string][]string
	events  []string
	settled map[types.UID]*resourceapi.ResourceClaim
}

func (r *recorder) DeviceOrder(_ context.Context, pod *v1.Pod) func(string) []string {
	r.events = append(r.events, "order "+pod.Name)
	return func(node string) []string { return r.order[node] }
}
func (r *recorder) ClaimPending(c *resourceapi.ResourceClaim) {
	r.events = append(r.events, "pending "+string(c.UID))
}
func (r *recorder) ClaimSettled(uid types.UID, now *resourceapi.ResourceClaim) {
	r.events = append(r.events, "settled "+string(uid))
	r.settled[uid] = now
}

// TestManager: the view lists the pod's preferred devices first only
// within forPod, and reports pending allocations to TesseraGPU with what
// the tracker knows of the claim once they end.
func TestManager(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	written := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "written", UID: "w"},
		Status: resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{}}}
	dra := &fakeDRA{
		tracker: &fakeTracker{claims: map[string]*resourceapi.ResourceClaim{"ns/written": written}, pending: map[types.UID]bool{}},
		slices:  fakeSlices{slice("a", drainventory.TesseraDriver, new("a"), "g0", "g1")},
	}
	h := &fakeHandle{dra: dra}
	rec := &recorder{order: map[string][]string{"a": {drainventory.DeviceID(drainventory.TesseraDriver, "pool", "g1")}},
		settled: map[types.UID]*resourceapi.ResourceClaim{}}
	Provide(ctx, h, rec)
	m := newManager(h)

	list := func() [][]string {
		t.Helper()
		got, err := m.ResourceSlices().ListWithDeviceTaintRules()
		if err != nil {
			t.Fatal(err)
		}
		return deviceNames(got)
	}
	if diff := cmp.Diff([][]string{{"g0", "g1"}}, list()); diff != "" {
		t.Errorf("outside PreFilter (-want +got):\n%s", diff)
	}
	end := m.forPod(ctx, st.MakePod().Name("p").Obj())
	if diff := cmp.Diff([][]string{{"g1", "g0"}}, list()); diff != "" {
		t.Errorf("for pod p (-want +got):\n%s", diff)
	}
	end()
	if diff := cmp.Diff([][]string{{"g0", "g1"}}, list()); diff != "" {
		t.Errorf("after pod p (-want +got):\n%s", diff)
	}

	tr := m.ResourceClaims()
	for _, c := range []*resourceapi.ResourceClaim{written, {ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "given-up", UID: "g"}}} {
		if err := tr.SignalClaimPendingAllocation(c.UID, c); err != nil {
			t.Fatal(err)
		}
	}
	for _, uid := range []types.UID{"w", "g", "unknown"} {
		tr.MaybeRemoveClaimPendingAllocation(uid, false)
	}
	want := []string{"order p", "pending w", "pending g", "settled w", "settled g"}
	if diff := cmp.Diff(want, rec.events); diff != "" {
		t.Errorf("told TesseraGPU (-want +got):\n%s", diff)
	}
	if rec.settled["w"] != written || rec.settled["g"] != nil {
		t.Errorf("settled with %v, want the written claim for w and nothing for g", rec.settled)
	}
}
