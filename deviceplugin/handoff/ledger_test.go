package handoff

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/pkg/assignment"
)

func uuids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("GPU-%d", i)
	}
	return out
}

func boundPod(name string, created int, a assignment.Assignment) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
		CreationTimestamp: metav1.NewTime(time.Unix(int64(created), 0))}}
	if a != nil {
		p.Annotations = map[string]string{assignment.Annotation: a.String()}
	}
	for _, c := range a.Containers() {
		ctr := v1.Container{Name: c}
		if devs := a[c]; devs[0].Percent == 100 {
			ctr.Resources.Limits = v1.ResourceList{v1.ResourceName(Whole): *resource.NewQuantity(int64(len(devs)), resource.DecimalSI)}
		} else {
			ctr.Resources.Limits = v1.ResourceList{v1.ResourceName(Percent): *resource.NewQuantity(int64(devs[0].Percent), resource.DecimalSI)}
		}
		p.Spec.Containers = append(p.Spec.Containers, ctr)
	}
	return p
}

func TestPercentIDs(t *testing.T) {
	id := PercentID("GPU-8c0e6f3a-1234-5678-9abc-def012345678", 7)
	if len(id) > 63 {
		t.Errorf("%q is longer than the kubelet allows", id)
	}
	u, n, ok := ParsePercentID(id)
	if !ok || u != "GPU-8c0e6f3a-1234-5678-9abc-def012345678" || n != 7 {
		t.Errorf("ParsePercentID(%q) = %q %d %v", id, u, n, ok)
	}
	for _, bad := range []string{"GPU-1", "GPU-1::", "GPU-1::100", "::01", "GPU-1::x"} {
		if _, _, ok := ParsePercentID(bad); ok {
			t.Errorf("ParsePercentID(%q) accepted", bad)
		}
	}
}

func TestPreferredFollowsOldestClaim(t *testing.T) {
	l := NewLedger(uuids(4))
	l.UpsertPod(boundPod("b", 2, assignment.Assignment{"main": {{UUID: "GPU-2", Percent: 100}}}))
	l.UpsertPod(boundPod("a", 1, assignment.Assignment{"main": {{UUID: "GPU-3", Percent: 100}}}))
	l.UpsertPod(boundPod("s", 3, assignment.Assignment{"main": {{UUID: "GPU-1", Percent: 30}}}))
	got := l.Preferred(Whole, uuids(4), nil, 1)
	if fmt.Sprint(got) != "[GPU-3]" {
		t.Errorf("Preferred = %v, want the oldest pod's GPU-3", got)
	}
	var all []string
	for _, u := range uuids(4) {
		for n := 0; n < PercentIDs; n++ {
			all = append(all, PercentID(u, n))
		}
	}
	got = l.Preferred(Percent, all, nil, 30)
	if len(got) != 30 || !strings.HasPrefix(got[0], "GPU-1::") || !strings.HasPrefix(got[29], "GPU-1::") {
		t.Errorf("share preferred %v, want 30 IDs of GPU-1", got)
	}
	// Whole claims make their GPUs' percent IDs unhealthy, shares the
	// whole ID of theirs.
	if u := l.Unhealthy(Whole); !u["GPU-1"] || u["GPU-2"] || len(u) != 1 {
		t.Errorf("unhealthy whole IDs %v, want only GPU-1", u)
	}
	if u := l.Unhealthy(Percent); !u[PercentID("GPU-2", 0)] || !u[PercentID("GPU-3", 99)] || u[PercentID("GPU-1", 0)] || len(u) != 200 {
		t.Errorf("unhealthy percent IDs: %d", len(u))
	}
}

func TestClaimsMustMatchTheContainer(t *testing.T) {
	l := NewLedger(uuids(2))
	p := boundPod("forged", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 100}}})
	p.Spec.Containers[0].Resources.Limits = nil // asks for no GPU
	if err := l.UpsertPod(p); err == nil {
		t.Error("a claim for a container that asks for no GPU was accepted")
	}
	p = boundPod("ghost", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 100}}})
	p.Spec.Containers[0].Name = "other"
	if err := l.UpsertPod(p); err == nil {
		t.Error("a claim for a missing container was accepted")
	}
	if u := l.Unhealthy(Percent); len(u) != 0 {
		t.Errorf("rejected claims still hold GPUs: %d IDs unhealthy", len(u))
	}
}

func TestNeverGivesAGPUOutTwoWays(t *testing.T) {
	l := NewLedger(uuids(2))
	// A pod the ledger knows nothing of takes GPU-0 whole.
	if _, err := l.Allocate(Whole, []string{"GPU-0"}); err != nil {
		t.Fatal(err)
	}
	// The kubelet has not yet seen the new health and still offers GPU-0's
	// percent IDs: the fallback avoids them and Allocate refuses them.
	var avail []string
	for _, u := range uuids(2) {
		for n := 0; n < PercentIDs; n++ {
			avail = append(avail, PercentID(u, n))
		}
	}
	got := l.Preferred(Percent, avail, nil, 10)
	for _, id := range got {
		if strings.HasPrefix(id, "GPU-0::") {
			t.Fatalf("preferred %v on a GPU held whole", got)
		}
	}
	if _, err := l.Allocate(Percent, []string{PercentID("GPU-0", 5)}); err == nil || !strings.Contains(err.Error(), "GPU-0") {
		t.Errorf("share of a whole-held GPU allocated: err = %v", err)
	}
	if _, err := l.Allocate(Percent, []string{PercentID("GPU-1", 5)}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Allocate(Whole, []string{"GPU-1"}); err == nil {
		t.Error("a GPU with shares given out whole")
	}
}

func TestAllocateRejectsUnknownIDs(t *testing.T) {
	l := NewLedger(uuids(2))
	if _, err := l.Allocate(Whole, []string{"GPU-0", "GPU-9"}); err == nil || !strings.Contains(err.Error(), "GPU-9") {
		t.Errorf("err = %v, want one naming GPU-9", err)
	}
	if _, err := l.Allocate(Percent, []string{"GPU-0::01", "bogus"}); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("err = %v, want one naming bogus", err)
	}
	gpus, err := l.Allocate(Percent, []string{"GPU-1::01", "GPU-1::02"})
	if err != nil || fmt.Sprint(gpus) != "[GPU-1]" {
		t.Errorf("Allocate = %v, %v", gpus, err)
	}
}

func TestGarbageAnnotationIsCorrectedToTruth(t *testing.T) {
	l := NewLedger(uuids(2))
	p := boundPod("g", 1, nil)
	p.Annotations = map[string]string{assignment.Annotation: "{garbage"}
	p.Spec.Containers = []v1.Container{{Name: "main"}}
	if err := l.UpsertPod(p); err == nil {
		t.Fatal("garbage annotation accepted")
	}
	// With no claim, the kubelet's own choice is taken and written back.
	ids := l.Preferred(Whole, uuids(2), nil, 1)
	if len(ids) != 1 {
		t.Fatalf("fallback %v", ids)
	}
	if _, err := l.Allocate(Whole, ids); err != nil {
		t.Fatal(err)
	}
	l.ObserveKubelet([]ContainerDevices{{Namespace: "default", Pod: "g", Container: "main", Resource: Whole, IDs: ids}})
	cs := l.Corrections()
	if len(cs) != 1 || cs[0].Assignment.String() != fmt.Sprintf(`{"main":[{"uuid":%q,"percent":100}]}`, ids[0]) {
		t.Fatalf("corrections %+v", cs)
	}
}

// kubeletSim plays the kubelet's device manager against a ledger: it keeps
// its own allocations, offers only healthy free IDs, asks for a preference
// and takes it if it is usable, as the real one does.
type kubeletSim struct {
	l     *Ledger
	gpus  []string
	alloc map[Resource]map[string]owner
	truth []ContainerDevices
}

func (k *kubeletSim) admit(p *v1.Pod, a assignment.Assignment, rng *rand.Rand) bool {
	type want struct {
		c    string
		r    Resource
		size int
	}
	var wants []want
	for _, c := range a.Containers() {
		d := a[c]
		if d[0].Percent == 100 {
			wants = append(wants, want{c, Whole, len(d)})
		} else {
			wants = append(wants, want{c, Percent, d[0].Percent})
		}
	}
	for _, w := range wants {
		unhealthy := k.l.Unhealthy(w.r)
		var avail []string
		for _, u := range k.gpus {
			ids := []string{u}
			if w.r == Percent {
				ids = nil
				for n := 0; n < PercentIDs; n++ {
					ids = append(ids, PercentID(u, n))
				}
			}
			for _, id := range ids {
				if _, used := k.alloc[w.r][id]; !used && !unhealthy[id] {
					avail = append(avail, id)
				}
			}
		}
		if len(avail) < w.size {
			return false // admission error: the pod fails, holding nothing new
		}
		chosen := k.l.Preferred(w.r, avail, nil, w.size)
		ok := len(chosen) == w.size
		for _, id := range chosen {
			ok = ok && contains(avail, id)
		}
		if !ok {
			rng.Shuffle(len(avail), func(i, j int) { avail[i], avail[j] = avail[j], avail[i] })
			chosen = avail[:w.size]
		}
		if _, err := k.l.Allocate(w.r, chosen); err != nil {
			panic(err)
		}
		for _, id := range chosen {
			k.alloc[w.r][id] = owner{p.UID, w.c}
		}
		k.truth = append(k.truth, ContainerDevices{Namespace: p.Namespace, Pod: p.Name, Container: w.c, Resource: w.r, IDs: chosen})
	}
	return true
}

// schedule plays tessera-scheduler: first-fit of random shapes on 8 GPUs.
func schedule(rng *rand.Rand, n int, gpus []string) []assignment.Assignment {
	used := make([]int, len(gpus))
	var out []assignment.Assignment
	for len(out) < n {
		if rng.Intn(5) == 0 {
			i := rng.Intn(len(gpus))
			if used[i] != 0 {
				continue
			}
			used[i] = 100
			out = append(out, assignment.Assignment{"main": {{UUID: gpus[i], Percent: 100}}})
			continue
		}
		pct := 10 + rng.Intn(61)
		placed := false
		for i := range gpus {
			if used[i] > 0 && used[i] < 100 && used[i]+pct <= 100 {
				used[i] += pct
				out = append(out, assignment.Assignment{"main": {{UUID: gpus[i], Percent: pct}}})
				placed = true
				break
			}
		}
		if !placed {
			free := -1
			for i := range gpus {
				if used[i] == 0 {
					free = i
					break
				}
			}
			if free < 0 {
				break
			}
			used[free] = pct
			out = append(out, assignment.Assignment{"main": {{UUID: gpus[free], Percent: pct}}})
		}
	}
	return out
}

// TestBulkHandOffSimulation admits many pods in shuffled orders, with the
// pod informer sometimes behind the kubelet, and checks that after
// reconciliation every admitted container's annotation is the kubelet's
// truth, no GPU is over 100 %, and no GPU is both whole and shared.
func TestBulkHandOffSimulation(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			gpus := uuids(8)
			l := NewLedger(gpus)
			k := &kubeletSim{l: l, gpus: gpus, alloc: map[Resource]map[string]owner{Whole: {}, Percent: {}}}
			as := schedule(rng, 64, gpus)
			pods := make([]*v1.Pod, len(as))
			for i, a := range as {
				pods[i] = boundPod(fmt.Sprintf("p%02d", i), i, a)
			}
			order := rng.Perm(len(pods))
			known := map[int]bool{}
			admitted := map[types.UID]bool{}
			for step, i := range order {
				// The informer usually knows the pod; sometimes it lags.
				if rng.Intn(4) != 0 {
					l.UpsertPod(pods[i])
					known[i] = true
				}
				// Other pods' events arrive in random order too.
				if j := order[rng.Intn(len(order))]; !known[j] {
					l.UpsertPod(pods[j])
					known[j] = true
				}
				if k.admit(pods[i], as[i], rng) {
					admitted[pods[i].UID] = true
				}
				if step%7 == 0 {
					l.ObserveKubelet(k.truth)
				}
			}
			for i := range pods {
				l.UpsertPod(pods[i])
			}
			l.ObserveKubelet(k.truth)
			for _, c := range l.Corrections() {
				for _, p := range pods {
					if p.UID == c.Pod {
						p.Annotations[assignment.Annotation] = c.Assignment.String()
						l.UpsertPod(p)
					}
				}
			}
			if cs := l.Corrections(); len(cs) != 0 {
				t.Fatalf("corrections do not converge: %+v", cs)
			}
			perGPU := map[string]int{}
			whole := map[string]bool{}
			for _, p := range pods {
				if !admitted[p.UID] {
					continue
				}
				a, err := assignment.Parse(p.Annotations[assignment.Annotation])
				if err != nil {
					t.Fatalf("%s: %v", p.Name, err)
				}
				var truth []string
				for _, d := range k.truth {
					if d.Pod == p.Name {
						for _, x := range devicesOf(d) {
							truth = append(truth, fmt.Sprintf("%s:%d", x.UUID, x.Percent))
						}
					}
				}
				var ann []string
				for _, x := range a["main"] {
					ann = append(ann, fmt.Sprintf("%s:%d", x.UUID, x.Percent))
					perGPU[x.UUID] += x.Percent
					if x.Percent == 100 {
						whole[x.UUID] = true
					}
				}
				sort.Strings(truth)
				sort.Strings(ann)
				if fmt.Sprint(truth) != fmt.Sprint(ann) {
					t.Errorf("%s: annotation %v, kubelet %v", p.Name, ann, truth)
				}
			}
			for u, pct := range perGPU {
				if pct > 100 || (whole[u] && pct != 100) {
					t.Errorf("GPU %s at %d%% (whole %v)", u, pct, whole[u])
				}
			}
			t.Logf("%d pods, %d admitted", len(pods), len(admitted))
		})
	}
}

// TestPerIDListingIsOneContainer feeds the ledger a PodResources listing
// as the kubelet writes it, one entry per device ID: a 25% share the
// kubelet put elsewhere than the annotation said is corrected to one GPU at
// 25%, not dropped as 25 entries of 1%.
func TestPerIDListingIsOneContainer(t *testing.T) {
	l := NewLedger(uuids(2))
	p := boundPod("s", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 25}}})
	if err := l.UpsertPod(p); err != nil {
		t.Fatal(err)
	}
	var listing []ContainerDevices
	for n := 0; n < 25; n++ {
		listing = append(listing, ContainerDevices{Namespace: "default", Pod: "s", Container: "main", Resource: Percent, IDs: []string{PercentID("GPU-1", n)}})
	}
	// A device on two NUMA nodes is listed twice.
	listing = append(listing, listing[0])
	l.ObserveKubelet(listing)
	cs := l.Corrections()
	if len(cs) != 1 || cs[0].Assignment.String() != `{"main":[{"uuid":"GPU-1","percent":25}]}` {
		t.Fatalf("corrections %+v", cs)
	}
}

func TestMergeContainerDevices(t *testing.T) {
	in := []ContainerDevices{
		{Namespace: "b", Pod: "p", Container: "main", Resource: Whole, IDs: []string{"GPU-1"}},
		{Namespace: "a", Pod: "p", Container: "main", Resource: Percent, IDs: []string{"GPU-0::02"}},
		{Namespace: "b", Pod: "p", Container: "main", Resource: Whole, IDs: []string{"GPU-0"}},
		{Namespace: "a", Pod: "p", Container: "main", Resource: Percent, IDs: []string{"GPU-0::01"}},
		{Namespace: "b", Pod: "p", Container: "main", Resource: Whole, IDs: []string{"GPU-1"}},
	}
	got := fmt.Sprint(MergeContainerDevices(in))
	want := fmt.Sprint([]ContainerDevices{
		{Namespace: "a", Pod: "p", Container: "main", Resource: Percent, IDs: []string{"GPU-0::01", "GPU-0::02"}},
		{Namespace: "b", Pod: "p", Container: "main", Resource: Whole, IDs: []string{"GPU-0", "GPU-1"}},
	})
	if got != want {
		t.Errorf("MergeContainerDevices = %s, want %s", got, want)
	}
}

// TestInitContainerGPUPassesOn: the kubelet hands an init container's GPU
// on to the app container and calls Allocate again with the same ID; that
// is no conflict. A whole GPU that shares hold still is.
func TestInitContainerGPUPassesOn(t *testing.T) {
	l := NewLedger(uuids(2))
	if _, err := l.Allocate(Whole, []string{"GPU-0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Allocate(Whole, []string{"GPU-0"}); err != nil {
		t.Errorf("the init container's GPU passed on: %v", err)
	}
	if _, err := l.Allocate(Percent, []string{PercentID("GPU-1", 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Allocate(Whole, []string{"GPU-1"}); err == nil || !strings.Contains(err.Error(), "already held by shares") {
		t.Errorf("whole GPU held by shares: err = %v", err)
	}
	if _, err := l.Allocate(Percent, []string{PercentID("GPU-0", 3)}); err == nil || !strings.Contains(err.Error(), "already held whole") {
		t.Errorf("share of a GPU held whole: err = %v", err)
	}
}

// TestContainersSteeredInSpecOrder: the kubelet allocates a pod's
// containers in spec order, so two containers of one shape are steered in
// that order, not by name.
func TestContainersSteeredInSpecOrder(t *testing.T) {
	l := NewLedger(uuids(2))
	p := boundPod("two", 1, assignment.Assignment{"zeta": {{UUID: "GPU-1", Percent: 100}}, "alpha": {{UUID: "GPU-0", Percent: 100}}})
	// boundPod lists containers by name; the spec has zeta first.
	p.Spec.Containers[0], p.Spec.Containers[1] = p.Spec.Containers[1], p.Spec.Containers[0]
	if p.Spec.Containers[0].Name != "zeta" {
		t.Fatalf("spec order %v", p.Spec.Containers)
	}
	if err := l.UpsertPod(p); err != nil {
		t.Fatal(err)
	}
	if got := l.Preferred(Whole, uuids(2), nil, 1); fmt.Sprint(got) != "[GPU-1]" {
		t.Errorf("first container steered to %v, want zeta's GPU-1", got)
	}
}

// TestExchangeSurvivesPodUpdate: after the kubelet served pod x on pod y's
// claim, y waits for the GPU x left; an update of y that does not touch its
// annotation (its status, say) keeps it so.
func TestExchangeSurvivesPodUpdate(t *testing.T) {
	l := NewLedger(uuids(2))
	x := boundPod("x", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 100}}})
	y := boundPod("y", 2, assignment.Assignment{"main": {{UUID: "GPU-1", Percent: 100}}})
	for _, p := range []*v1.Pod{x, y} {
		if err := l.UpsertPod(p); err != nil {
			t.Fatal(err)
		}
	}
	l.ObserveKubelet([]ContainerDevices{{Namespace: "default", Pod: "x", Container: "main", Resource: Whole, IDs: []string{"GPU-1"}}})
	if _, ok := l.Match(Whole, []string{"GPU-0"}, nil, 1); !ok {
		t.Fatal("y is not steered to the GPU x left")
	}
	y2 := y.DeepCopy()
	y2.Status.Phase = v1.PodPending
	if err := l.UpsertPod(y2); err != nil {
		t.Fatal(err)
	}
	if ids, ok := l.Match(Whole, []string{"GPU-0"}, nil, 1); !ok || fmt.Sprint(ids) != "[GPU-0]" {
		t.Errorf("after an update of y: Match = %v, %v; the exchange was lost", ids, ok)
	}
}

// TestInitContainerHoldsItsGPUForThePodsLife: an init container's share of
// GPU-0 stays held after the in-flight record of its Allocate expires, and
// after a restart of the plugin (a new ledger), for as long as the pod is
// listed: GPU-0 is never offered whole meanwhile.
func TestInitContainerHoldsItsGPUForThePodsLife(t *testing.T) {
	p := boundPod("staged", 1, assignment.Assignment{"main": {{UUID: "GPU-1", Percent: 100}}})
	p.Spec.InitContainers = []v1.Container{{Name: "prep", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{
		v1.ResourceName(Percent): *resource.NewQuantity(30, resource.DecimalSI)}}}}
	p.Annotations[assignment.Annotation] = assignment.Assignment{"prep": {{UUID: "GPU-0", Percent: 30}}, "main": {{UUID: "GPU-1", Percent: 100}}}.String()
	listing := []ContainerDevices{{Namespace: "default", Pod: "staged", Container: "main", Resource: Whole, IDs: []string{"GPU-1"}}}
	clock := time.Unix(1000, 0)

	l := NewLedger(uuids(3))
	l.now = func() time.Time { return clock }
	if err := l.UpsertPod(p); err != nil {
		t.Fatal(err)
	}
	var prep []string
	for n := 0; n < 30; n++ {
		prep = append(prep, PercentID("GPU-0", n))
	}
	if _, err := l.Allocate(Percent, prep); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Allocate(Whole, []string{"GPU-1"}); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(inflightTTL + time.Minute)
	l.ObserveKubelet(listing)
	if !l.Unhealthy(Whole)["GPU-0"] {
		t.Error("after the in-flight window, GPU-0 is offered whole while the init container holds a share")
	}

	restarted := NewLedger(uuids(3))
	if err := restarted.UpsertPod(p); err != nil {
		t.Fatal(err)
	}
	restarted.ObserveKubelet(listing)
	if !restarted.Unhealthy(Whole)["GPU-0"] {
		t.Error("after a plugin restart, GPU-0 is offered whole while the init container holds a share")
	}
	if _, err := restarted.Allocate(Whole, []string{"GPU-0"}); err == nil {
		t.Error("after a plugin restart, GPU-0 was given out whole")
	}
}

// TestSameNameReplacement: a pod force-deleted from the API while the
// kubelet still holds its GPU is replaced by a pod of the same name. The
// kubelet's listing names both "default/job"; the old pod's GPU stays its
// own, so the new pod is neither corrected to it nor taken as admitted.
func TestSameNameReplacement(t *testing.T) {
	l := NewLedger(uuids(3))
	old := boundPod("job", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 100}}})
	if err := l.UpsertPod(old); err != nil {
		t.Fatal(err)
	}
	listOld := ContainerDevices{Namespace: "default", Pod: "job", Container: "main", Resource: Whole, IDs: []string{"GPU-0"}}
	l.ObserveKubelet([]ContainerDevices{listOld})
	l.DeletePod(old.UID)

	repl := boundPod("job", 2, assignment.Assignment{"main": {{UUID: "GPU-1", Percent: 100}}})
	repl.UID = "uid-job-2"
	if err := l.UpsertPod(repl); err != nil {
		t.Fatal(err)
	}
	l.ObserveKubelet([]ContainerDevices{listOld})
	if cs := l.Corrections(); len(cs) != 0 {
		t.Fatalf("the old pod's GPU was credited to its replacement: %+v", cs)
	}
	if ids, ok := l.Match(Whole, []string{"GPU-1", "GPU-2"}, nil, 1); !ok || fmt.Sprint(ids) != "[GPU-1]" {
		t.Errorf("the replacement is not steered to its GPU: %v %v", ids, ok)
	}
	// The kubelet frees a pod gone from the API at its next admission,
	// whatever a listing taken before it processed the deletion says.
	if l.Unhealthy(Percent)[PercentID("GPU-0", 0)] {
		t.Error("the old pod's GPU is withheld from shares although the old pod is gone")
	}
	// Both are listed under one name; each keeps its own GPU.
	l.ObserveKubelet([]ContainerDevices{listOld, {Namespace: "default", Pod: "job", Container: "main", Resource: Whole, IDs: []string{"GPU-1"}}})
	if cs := l.Corrections(); len(cs) != 0 {
		t.Errorf("corrections with both listed: %+v", cs)
	}
	// The old pod's containers are gone: its GPU is free again.
	l.ObserveKubelet([]ContainerDevices{{Namespace: "default", Pod: "job", Container: "main", Resource: Whole, IDs: []string{"GPU-1"}}})
	if l.Unhealthy(Percent)[PercentID("GPU-0", 0)] {
		t.Error("GPU-0 stays held after the old pod left the listing")
	}
	if cs := l.Corrections(); len(cs) != 0 {
		t.Errorf("corrections after the old pod went: %+v", cs)
	}
}

// TestFailedAdmissionReleasesSoon: an allocation the kubelet never lists
// (its pod failed admission) stops holding its GPU after inflightTTL, not
// minutes later; one for an init container of a pod still waiting to be
// listed is kept.
func TestFailedAdmissionReleasesSoon(t *testing.T) {
	clock := time.Unix(1000, 0)
	l := NewLedger(uuids(2))
	l.now = func() time.Time { return clock }
	if _, err := l.Allocate(Whole, []string{"GPU-0"}); err != nil {
		t.Fatal(err)
	}
	// An init container's GPU, steered to its claim.
	p := boundPod("staged", 1, assignment.Assignment{"main": {{UUID: "GPU-1", Percent: 100}}})
	p.Spec.InitContainers = []v1.Container{{Name: "prep", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{
		v1.ResourceName(Whole): *resource.NewQuantity(1, resource.DecimalSI)}}}}
	p.Annotations[assignment.Annotation] = assignment.Assignment{"prep": {{UUID: "GPU-1", Percent: 100}}, "main": {{UUID: "GPU-1", Percent: 100}}}.String()
	if err := l.UpsertPod(p); err != nil {
		t.Fatal(err)
	}
	if ids := l.Preferred(Whole, []string{"GPU-1"}, nil, 1); fmt.Sprint(ids) != "[GPU-1]" {
		t.Fatalf("preferred %v", ids)
	}
	if _, err := l.Allocate(Whole, []string{"GPU-1"}); err != nil {
		t.Fatal(err)
	}
	if !l.Unhealthy(Percent)[PercentID("GPU-0", 0)] {
		t.Fatal("a fresh allocation does not hold its GPU")
	}
	clock = clock.Add(inflightTTL + time.Second)
	l.ObserveKubelet(nil)
	unhealthy := l.Unhealthy(Percent)
	if unhealthy[PercentID("GPU-0", 0)] {
		t.Error("the GPU of a failed admission is still held after inflightTTL")
	}
	if !unhealthy[PercentID("GPU-1", 0)] {
		t.Error("the init container's GPU was released while its pod waits to be listed")
	}
}

// TestRejectedPodReleasesAtOnce: when the pod informer shows a pod Failed
// (the kubelet rejected it at admission) the GPU steered to it is free at
// once, without waiting for inflightTTL; another pod's allocation stays.
func TestRejectedPodReleasesAtOnce(t *testing.T) {
	l := NewLedger(uuids(2))
	rejected := boundPod("rejected", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 100}}})
	other := boundPod("other", 1, assignment.Assignment{"main": {{UUID: "GPU-1", Percent: 100}}})
	for _, p := range []*v1.Pod{rejected, other} {
		if err := l.UpsertPod(p); err != nil {
			t.Fatal(err)
		}
		u := p.Name
		want := map[string]string{"rejected": "GPU-0", "other": "GPU-1"}[u]
		if ids := l.Preferred(Whole, []string{"GPU-0", "GPU-1"}, nil, 1); fmt.Sprint(ids) != "["+want+"]" {
			t.Fatalf("preferred %v for %s", ids, u)
		}
		if _, err := l.Allocate(Whole, []string{want}); err != nil {
			t.Fatal(err)
		}
	}
	failed := rejected.DeepCopy()
	failed.Status.Phase = v1.PodFailed
	failed.Status.Reason = "UnexpectedAdmissionError"
	if err := l.UpsertPod(failed); err != nil {
		t.Fatal(err)
	}
	unhealthy := l.Unhealthy(Percent)
	if unhealthy[PercentID("GPU-0", 0)] {
		t.Error("the GPU of a rejected pod is still held")
	}
	if !unhealthy[PercentID("GPU-1", 0)] {
		t.Error("another pod's fresh allocation was released with the rejected pod's")
	}
}

// TestSplitShareIsAClaim: a share the kubelet spread over GPUs, once the
// reconciler has written it back, is the pod's claim, not an annotation to
// ignore (the scheduler counts it the same way, pkg/podgpu).
func TestSplitShareIsAClaim(t *testing.T) {
	l := NewLedger(uuids(2))
	p := boundPod("split", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 30}}})
	p.Spec.Containers[0].Resources.Limits = v1.ResourceList{v1.ResourceName(Percent): *resource.NewQuantity(50, resource.DecimalSI)}
	p.Annotations[assignment.Annotation] = assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 30}, {UUID: "GPU-1", Percent: 20}}}.String()
	if err := l.UpsertPod(p); err != nil {
		t.Fatalf("the written-back truth was refused: %v", err)
	}
	var ids []string
	for n := 0; n < 30; n++ {
		ids = append(ids, PercentID("GPU-0", n))
	}
	for n := 0; n < 20; n++ {
		ids = append(ids, PercentID("GPU-1", n))
	}
	l.ObserveKubelet([]ContainerDevices{{Namespace: "default", Pod: "split", Container: "main", Resource: Percent, IDs: ids}})
	if cs := l.Corrections(); len(cs) != 0 {
		t.Errorf("corrections %+v", cs)
	}
}

// TestAllocated: per-GPU allocation as the kubelet gave it: whole GPUs at
// 100, shares by their percent IDs, an init container's whole GPU (never
// listed) for its listed pod, an init share handed on to the app container
// counted once, and allocations not listed yet.
func TestAllocated(t *testing.T) {
	l := NewLedger(uuids(4))
	p := boundPod("staged", 1, assignment.Assignment{"main": {{UUID: "GPU-1", Percent: 20}}})
	p.Spec.InitContainers = []v1.Container{{Name: "prep", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{
		v1.ResourceName(Whole): *resource.NewQuantity(1, resource.DecimalSI)}}}}
	p.Annotations[assignment.Annotation] = assignment.Assignment{"prep": {{UUID: "GPU-0", Percent: 100}}, "main": {{UUID: "GPU-1", Percent: 20}}}.String()
	if err := l.UpsertPod(p); err != nil {
		t.Fatal(err)
	}
	q := boundPod("reuse", 1, assignment.Assignment{"main": {{UUID: "GPU-1", Percent: 30}}})
	q.Spec.InitContainers = []v1.Container{{Name: "prep", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{
		v1.ResourceName(Percent): *resource.NewQuantity(10, resource.DecimalSI)}}}}
	q.Annotations[assignment.Annotation] = assignment.Assignment{"prep": {{UUID: "GPU-1", Percent: 10}}, "main": {{UUID: "GPU-1", Percent: 30}}}.String()
	if err := l.UpsertPod(q); err != nil {
		t.Fatal(err)
	}
	ids := func(uuid string, from, n int) []string {
		var out []string
		for i := from; i < from+n; i++ {
			out = append(out, PercentID(uuid, i))
		}
		return out
	}
	l.ObserveKubelet([]ContainerDevices{
		{Namespace: "default", Pod: "staged", Container: "main", Resource: Percent, IDs: ids("GPU-1", 0, 20)},
		{Namespace: "default", Pod: "reuse", Container: "main", Resource: Percent, IDs: ids("GPU-1", 20, 30)},
	})
	if _, err := l.Allocate(Whole, []string{"GPU-3"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"GPU-0": 100, "GPU-1": 50, "GPU-2": 0, "GPU-3": 100}
	if diff := cmp.Diff(want, l.Allocated()); diff != "" {
		t.Errorf("allocated (-want +got):\n%s", diff)
	}
}

// TestDeletedPodFreesItsGPUAtOnce: when a pod holding a share leaves the
// API, its GPU is offered whole again before the next listing of the
// kubelet's record: the scheduler may already have placed a whole-GPU pod
// there, and the kubelet admits it at once. A late listing that still shows
// the share does not hold it again.
func TestDeletedPodFreesItsGPUAtOnce(t *testing.T) {
	l := NewLedger(uuids(2))
	share := boundPod("share", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 50}}})
	if err := l.UpsertPod(share); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for n := range 50 {
		ids = append(ids, PercentID("GPU-0", n))
	}
	listed := []ContainerDevices{{Namespace: "default", Pod: "share", Container: "main", Resource: Percent, IDs: ids}}
	l.ObserveKubelet(listed)
	if !l.Unhealthy(Whole)["GPU-0"] {
		t.Fatal("a GPU held by a share is offered whole")
	}
	l.DeletePod(share.UID)
	whole := boundPod("whole", 2, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 100}}})
	if err := l.UpsertPod(whole); err != nil {
		t.Fatal(err)
	}
	if l.Unhealthy(Whole)["GPU-0"] {
		t.Error("the GPU of a deleted pod is still withheld from the whole-GPU resource")
	}
	if got, ok := l.Match(Whole, []string{"GPU-0", "GPU-1"}, nil, 1); !ok || fmt.Sprint(got) != "[GPU-0]" {
		t.Errorf("the whole-GPU pod is not steered to the GPU the deleted pod left: %v %v", got, ok)
	}
	// A listing the kubelet gave before it processed the deletion changes
	// nothing: the kubelet frees the share at its next admission.
	l.ObserveKubelet(listed)
	if l.Unhealthy(Whole)["GPU-0"] {
		t.Error("a listing that still shows the deleted pod's share withholds the GPU again")
	}
	if cs := l.Corrections(); len(cs) != 0 {
		t.Errorf("the deleted pod's share was credited to another pod: %+v", cs)
	}
}

// TestSameSecondPodsSteeredInTheOrderSeen: pods created in the same second
// are steered in the order the ledger saw them bound, the order the
// kubelet's watch delivers them in, not by name.
func TestSameSecondPodsSteeredInTheOrderSeen(t *testing.T) {
	l := NewLedger(uuids(2))
	for _, p := range []*v1.Pod{
		boundPod("zeta", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 100}}}),
		boundPod("alpha", 1, assignment.Assignment{"main": {{UUID: "GPU-1", Percent: 100}}}),
	} {
		if err := l.UpsertPod(p); err != nil {
			t.Fatal(err)
		}
	}
	// A status update must not move a pod to the back.
	if err := l.UpsertPod(boundPod("zeta", 1, assignment.Assignment{"main": {{UUID: "GPU-0", Percent: 100}}})); err != nil {
		t.Fatal(err)
	}
	if ids, ok := l.Match(Whole, []string{"GPU-0", "GPU-1"}, nil, 1); !ok || fmt.Sprint(ids) != "[GPU-0]" {
		t.Errorf("steered to %v (%v), want the GPU of zeta, seen first", ids, ok)
	}
}
