package tesseradra

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

func slice(name, driver string, node *string, devices ...string) *resourceapi.ResourceSlice {
	s := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: resourceapi.ResourceSliceSpec{Driver: driver, NodeName: node, Pool: resourceapi.ResourcePool{Name: "pool"}}}
	for _, d := range devices {
		s.Spec.Devices = append(s.Spec.Devices, resourceapi.Device{Name: d})
	}
	return s
}

func deviceNames(all []*resourceapi.ResourceSlice) [][]string {
	var out [][]string
	for _, s := range all {
		var names []string
		for _, d := range s.Spec.Devices {
			names = append(names, d.Name)
		}
		out = append(out, names)
	}
	return out
}

// TestOrdered: each GPU node's preferred devices come first in their slice,
// in the order given; everything else is listed as it was, and the input
// is never changed.
func TestOrdered(t *testing.T) {
	gpuDriver := drainventory.TesseraDriver
	id := func(d string) string { return drainventory.DeviceID(gpuDriver, "pool", d) }
	order := map[string][]string{
		"a": {id("g3"), id("g1")},
		"b": {id("g0"), id("g1")},
		"c": nil,
	}
	tests := []struct {
		name string
		in   []*resourceapi.ResourceSlice
		want [][]string
		same []bool // which slices must be the input's own objects
	}{{
		name: "preferred first, the rest in place",
		in:   []*resourceapi.ResourceSlice{slice("a", gpuDriver, new("a"), "g0", "g1", "g2", "g3")},
		want: [][]string{{"g3", "g1", "g0", "g2"}},
		same: []bool{false},
	}, {
		name: "already in order",
		in:   []*resourceapi.ResourceSlice{slice("b", gpuDriver, new("b"), "g0", "g1", "g2")},
		want: [][]string{{"g0", "g1", "g2"}},
		same: []bool{true},
	}, {
		name: "other drivers, nodes without preference, slices of no node",
		in: []*resourceapi.ResourceSlice{
			slice("nic", "nic.example.com", new("a"), "n1", "g3"),
			slice("c", gpuDriver, new("c"), "g1", "g0"),
			slice("net", gpuDriver, nil, "g3", "g1"),
		},
		want: [][]string{{"n1", "g3"}, {"g1", "g0"}, {"g3", "g1"}},
		same: []bool{true, true, true},
	}, {
		name: "preferred devices in two slices of one node",
		in: []*resourceapi.ResourceSlice{
			slice("a-0", gpuDriver, new("a"), "g0", "g1"),
			slice("a-1", gpuDriver, new("a"), "g2", "g3"),
		},
		want: [][]string{{"g1", "g0"}, {"g3", "g2"}},
		same: []bool{false, false},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := deviceNames(tc.in)
			calls := map[string]int{}
			got, memo, _ := ordered(tc.in, func(node string) []string { calls[node]++; return order[node] }, nil)
			if diff := cmp.Diff(tc.want, deviceNames(got)); diff != "" {
				t.Errorf("devices (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, deviceNames(tc.in)); diff != "" {
				t.Errorf("the input changed (-before +after):\n%s", diff)
			}
			for i := range tc.in {
				if (got[i] == tc.in[i]) != tc.same[i] {
					t.Errorf("slice %s: same object %v, want %v", tc.in[i].Name, got[i] == tc.in[i], tc.same[i])
				}
			}
			for node, n := range calls {
				if n != 1 {
					t.Errorf("order asked %d times for node %s", n, node)
				}
			}
			// The next pod with the same preferences gets the same copies.
			again, _, _ := ordered(tc.in, func(node string) []string { return order[node] }, memo)
			for i := range got {
				if again[i] != got[i] {
					t.Errorf("slice %s was copied again for the same preferences", tc.in[i].Name)
				}
			}

		})
	}
}

// TestOrderedMemo: a node whose preferences change gets a new copy in the
// new order, even with the previous pod's copy remembered.
func TestOrderedMemo(t *testing.T) {
	gpuDriver := drainventory.TesseraDriver
	id := func(d string) string { return drainventory.DeviceID(gpuDriver, "pool", d) }
	in := []*resourceapi.ResourceSlice{slice("a", gpuDriver, new("a"), "g0", "g1", "g2", "g3")}
	first, memo, _ := ordered(in, func(string) []string { return []string{id("g3"), id("g1")} }, nil)
	second, _, _ := ordered(in, func(string) []string { return []string{id("g1"), id("g3")} }, memo)
	if diff := cmp.Diff([][]string{{"g1", "g3", "g0", "g2"}}, deviceNames(second)); diff != "" {
		t.Errorf("devices (-want +got):\n%s", diff)
	}
	if second[0] == first[0] {
		t.Error("the previous pod's copy was reused for other preferences")
	}
}

// TestChoiceOf: a claim counts as taking Tessera's choice when every GPU it
// holds on a node Tessera had preferences for is one of them; claims of
// other drivers and of nodes without preferences do not count.
func TestChoiceOf(t *testing.T) {
	gpu := drainventory.TesseraDriver
	claim := func(devices ...string) *resourceapi.ResourceClaim {
		c := &resourceapi.ResourceClaim{Status: resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{}}}
		for _, d := range devices {
			driver, name, _ := strings.Cut(d, ":")
			c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results,
				resourceapi.DeviceRequestAllocationResult{Driver: driver, Pool: "a", Device: name})
		}
		return c
	}
	preferred := map[string][]string{
		"a": {drainventory.DeviceID(gpu, "a", "g4"), drainventory.DeviceID(gpu, "a", "g5")},
		"b": nil,
	}
	tests := []struct {
		name    string
		claim   *resourceapi.ResourceClaim
		want    string
		counted bool
	}{
		{"preferred", claim(gpu+":g4", gpu+":g5"), choicePreferred, true},
		{"one elsewhere", claim(gpu+":g4", gpu+":g0"), choiceOther, true},
		{"another driver", claim("nic.example.com:n0"), "", false},
		{"GPU and NIC", claim(gpu+":g5", "nic.example.com:n0"), choicePreferred, true},
		{"unallocated", &resourceapi.ResourceClaim{}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, counted := choiceOf(tc.claim, preferred)
			if got != tc.want || counted != tc.counted {
				t.Errorf("choiceOf = %q, %v; want %q, %v", got, counted, tc.want, tc.counted)
			}
		})
	}
	if _, counted := choiceOf(claim(gpu+":g4"), map[string][]string{"b": {drainventory.DeviceID(gpu, "b", "g4")}}); counted {
		t.Error("a claim on a node without preferences was counted")
	}
}
