package device

import (
	"fmt"
	"math"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func fragInventory(models ...string) *Inventory {
	specs := make([]DeviceSpec, len(models))
	for i, m := range models {
		specs[i] = DeviceSpec{ID: fmt.Sprintf("gpu-%d", i), Model: m, NUMANode: 0, Healthy: true}
	}
	return NewInventory("n", time.Time{}, specs)
}

func TestFragmentation(t *testing.T) {
	half := WorkloadClass{CPUMilli: 1000, Count: 1, Units: 50, Weight: 1}
	whole2 := WorkloadClass{CPUMilli: 1000, Count: 2, Units: FullUnits, Weight: 1}
	cpuOnly := WorkloadClass{CPUMilli: 1000, Weight: 1}
	onlyB := WorkloadClass{CPUMilli: 1000, Count: 1, Units: 10, Models: []string{"frag-B"}, Weight: 1}
	for _, tc := range []struct {
		name    string
		classes []WorkloadClass
		models  []string
		used    []int
		cpu     int64
		want    float64
	}{
		{"free node wastes nothing", []WorkloadClass{half}, []string{"frag-A", "frag-A"}, []int{0, 0}, 8000, 0},
		{"leftover below the share is wasted", []WorkloadClass{half}, []string{"frag-A", "frag-A"}, []int{60, 0}, 8000, 40},
		{"leftover above the share is not", []WorkloadClass{half}, []string{"frag-A", "frag-A"}, []int{40, 0}, 8000, 0},
		{"too little cpu wastes every free unit", []WorkloadClass{half}, []string{"frag-A", "frag-A"}, []int{60, 0}, 500, 140},
		{"too few free devices waste every free unit", []WorkloadClass{whole2}, []string{"frag-A", "frag-A"}, []int{10, 0}, 8000, 190},
		{"partly used devices are fragments for whole requests", []WorkloadClass{whole2}, []string{"frag-A", "frag-A", "frag-A"}, []int{10, 0, 0}, 8000, 90},
		{"cpu-only pods use no device", []WorkloadClass{cpuOnly}, []string{"frag-A"}, []int{30}, 8000, 70},
		{"devices of another model are out of reach", []WorkloadClass{onlyB}, []string{"frag-A", "frag-B"}, []int{0, 85}, 8000, 100},
		{"weights mix the classes", []WorkloadClass{half, cpuOnly}, []string{"frag-A", "frag-A"}, []int{60, 0}, 8000, 0.5*40 + 0.5*140},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWorkload(tc.classes, 0)
			got := w.Fragmentation(fragInventory(tc.models...), tc.used, tc.cpu)
			if math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("fragmentation = %v, want %v", got, tc.want)
			}
			// The memo answers the second time, with the same value.
			if again := w.Fragmentation(fragInventory(tc.models...), tc.used, tc.cpu); again != got {
				t.Errorf("memoised fragmentation = %v, want %v", again, got)
			}
		})
	}
}

func TestCPUStarvation(t *testing.T) {
	// 10 cores per whole device: 100 millicores per unit.
	whole := WorkloadClass{CPUMilli: 10000, Count: 1, Units: FullUnits, Weight: 1}
	cpuOnly := WorkloadClass{CPUMilli: 50000, Weight: 1}
	four := []string{"frag-A", "frag-A", "frag-A", "frag-A"}
	for _, tc := range []struct {
		name       string
		classes    []WorkloadClass
		starvation float64
		used       []int
		cpu        int64
		want       float64
	}{
		{"off: the published measure", []WorkloadClass{whole}, 0, []int{0, 0, 0, 0}, 20000, 0},
		{"cpu for two of four free devices", []WorkloadClass{whole}, 1, []int{0, 0, 0, 0}, 20000, 200},
		{"weighted", []WorkloadClass{whole}, 0.5, []int{0, 0, 0, 0}, 20000, 100},
		{"cpu for all free devices", []WorkloadClass{whole}, 1, []int{100, 0, 0, 0}, 30000, 0},
		{"used devices need no cpu", []WorkloadClass{whole}, 1, []int{100, 100, 0, 0}, 20000, 0},
		{"adds to the class fragments", []WorkloadClass{whole}, 1, []int{0, 0, 0, 0}, 5000, 400 + 350},
		// The rate is the device pods' own: counting the pods without
		// devices would make it 600 per unit and starve 383 units.
		{"pods without devices leave the rate alone", []WorkloadClass{whole, cpuOnly}, 1, []int{0, 0, 0, 0}, 10000, 0.5*400 + 300},
		// Device pods that ask no CPU give no rate to divide by: the term
		// stays off instead of counting every free unit as infinitely
		// starved.
		{"device pods asking no cpu", []WorkloadClass{{Count: 1, Units: FullUnits, Weight: 1}}, 1, []int{0, 0, 0, 0}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWorkload(tc.classes, tc.starvation)
			if got := w.Fragmentation(fragInventory(four...), tc.used, tc.cpu); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("fragmentation = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFragmentationSkipsUnusableDevices(t *testing.T) {
	inv := NewInventory("n", time.Time{}, []DeviceSpec{
		{ID: "a", Model: "frag-A", Healthy: true},
		{ID: "b", Model: "frag-A", Healthy: false},
		{ID: "c", Model: "frag-A", Healthy: true, Taints: []Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}},
	})
	w := NewWorkload([]WorkloadClass{{Count: 1, Units: 50, Weight: 1}}, 0)
	// Only device a counts; 30 free units are below the share.
	if got := w.Fragmentation(inv, []int{70, 0, 0}, 1000); got != 30 {
		t.Errorf("fragmentation = %v, want 30", got)
	}
}

func TestWorkloadPlan(t *testing.T) {
	w := NewWorkload([]WorkloadClass{{CPUMilli: 1000, Count: 1, Units: 50, Weight: 1}}, 0)
	inv := fragInventory("frag-A", "frag-A", "frag-A")
	for _, tc := range []struct {
		name      string
		used      []int
		share     int
		avoid     uint64
		wantDev   int8
		wantDelta float64
	}{
		// A 40% pod on the 60%-used device closes the 40-unit fragment;
		// binpack would do the same here.
		{"fills the fragment", []int{60, 0, 0}, 40, 0, 0, 40},
		// A 30% pod: on device 0 it leaves 10 wasted (40->10, +0 elsewhere),
		// on a free device it leaves 70 usable; device 0 shrinks the
		// fragment from 40 to 10.
		{"shrinks the fragment", []int{60, 0, 0}, 30, 0, 0, 30},
		// A 60% pod cannot use device 0; on device 1 it leaves 10 more
		// wasted, on device 2 a 40-unit fragment.
		{"creates the least fragment", []int{60, 30, 0}, 60, 0, 1, -10},
		// Equal outcomes: the device not to avoid wins.
		{"avoids tainted devices on ties", []int{0, 0, 0}, 50, 1, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRequest([]ContainerDemand{{Name: "c", Units: tc.share}}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			usable := uint64(7)
			p, ok := Plan(inv, tc.used, r, usable, tc.avoid, Binpack)
			if !ok {
				t.Fatal("Plan found no placement")
			}
			got, delta := w.Plan(inv, tc.used, r, p, usable, tc.avoid, 8000, 1000, false)
			if got.Share[0] != tc.wantDev || math.Abs(delta-tc.wantDelta) > 1e-9 {
				t.Errorf("device %d, delta %v; want device %d, delta %v", got.Share[0], delta, tc.wantDev, tc.wantDelta)
			}
		})
	}
}

func TestWorkloadPlanCPUStarvation(t *testing.T) {
	// 10 cores per whole device: 100 millicores per unit.
	w := NewWorkload([]WorkloadClass{{CPUMilli: 10000, Count: 1, Units: FullUnits, Weight: 1}}, 1)
	inv := fragInventory("frag-A", "frag-A", "frag-A", "frag-A")
	used := []int{0, 0, 0, 0}
	hungry, err := NewRequest([]ContainerDemand{{Name: "c", Count: 1}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := Plan(inv, used, hungry, 15, 0, Binpack)
	if !ok {
		t.Fatal("Plan found no placement")
	}
	for _, tc := range []struct {
		name      string
		r         *Request
		cpuFree   int64
		cpuReq    int64
		claimed   bool
		wantDelta float64
	}{
		// 30 cores for one device strand two more on a node with 40 cores
		// (enough for all four before, for one after).
		{"hungry pod on a tight node", hungry, 40000, 30000, false, -200},
		{"hungry pod on a roomy node", hungry, 100000, 30000, false, 0},
		// On a claimed node the pod pays what it asks beyond the rate:
		// 30 cores against 10 for its one device.
		{"hungry pod on a claimed roomy node", hungry, 100000, 30000, true, -200},
		{"modest pod on a claimed node", hungry, 100000, 10000, true, 0},
		// Pods without devices take no claimed device; the node's own CPU
		// counts for them.
		{"pod without devices on a claimed node", nil, 100000, 30000, true, 0},
		{"pod without devices on a tight node", nil, 40000, 30000, false, -300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := p
			if tc.r == nil {
				pl = Placement{}
			}
			_, delta := w.Plan(inv, used, tc.r, pl, 15, 0, tc.cpuFree, tc.cpuReq, tc.claimed)
			if math.Abs(delta-tc.wantDelta) > 1e-9 {
				t.Errorf("delta = %v, want %v", delta, tc.wantDelta)
			}
		})
	}

	// A workload of device pods that ask no CPU has no rate: a claimed
	// node charges nothing, where dividing by the rate would charge
	// infinity and rank every claimed node last.
	free := NewWorkload([]WorkloadClass{{Count: 1, Units: FullUnits, Weight: 1}}, 1)
	if _, delta := free.Plan(inv, used, hungry, p, 15, 0, 100000, 30000, true); delta != 0 {
		t.Errorf("zero-cpu workload on a claimed node: delta = %v, want 0", delta)
	}
}

func TestWorkloadPlanDoesNotAllocate(t *testing.T) {
	w := NewWorkload([]WorkloadClass{
		{CPUMilli: 1000, Count: 1, Units: 50, Weight: 3},
		{CPUMilli: 4000, Count: 2, Units: FullUnits, Weight: 1},
		{CPUMilli: 2000, Weight: 1},
	}, 1)
	inv := fragInventory("frag-A", "frag-A", "frag-A", "frag-A", "frag-A", "frag-A", "frag-A", "frag-A")
	used := []int{60, 30, 100, 0, 0, 10, 0, 0}
	r, err := NewRequest([]ContainerDemand{{Name: "c", Units: 30}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := Plan(inv, used, r, 255, 0, Binpack)
	w.Plan(inv, used, r, p, 255, 0, 64000, 4000, false) // fill the memo
	if n := testing.AllocsPerRun(100, func() { w.Plan(inv, used, r, p, 255, 0, 64000, 4000, false) }); n != 0 {
		t.Errorf("Plan allocates %v times per run with a warm memo", n)
	}
}

func TestClassOf(t *testing.T) {
	share, _ := NewRequest([]ContainerDemand{{Name: "a", Units: 20}, {Name: "b", Units: 30}}, []string{"m"}, nil)
	whole, _ := NewRequest([]ContainerDemand{{Name: "a", Count: 2}}, nil, nil)
	for _, tc := range []struct {
		name string
		r    *Request
		want WorkloadClass
	}{
		{"cpu only", nil, WorkloadClass{CPUMilli: 500, Weight: 1}},
		{"largest share counts", share, WorkloadClass{CPUMilli: 500, Count: 1, Units: 30, Models: []string{"m"}, Weight: 1}},
		{"whole devices", whole, WorkloadClass{CPUMilli: 500, Count: 2, Units: FullUnits, Weight: 1}},
	} {
		got := ClassOf(tc.r, 500)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: ClassOf = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// benchWorkload is a mix the size of the openb default trace's: 35 pod
// shapes, shares and whole GPUs, with and without CPU-only pods.
func benchWorkload() *Workload {
	var classes []WorkloadClass
	for i := 0; i < 35; i++ {
		c := WorkloadClass{CPUMilli: int64(1000 + 1000*(i%12)), Weight: float64(35 - i)}
		switch i % 5 {
		case 0:
		case 1, 2:
			c.Count, c.Units = 1, 5+10*(i%9)
		case 3:
			c.Count, c.Units = 1, FullUnits
		case 4:
			c.Count, c.Units = 1<<(i%4), FullUnits
		}
		classes = append(classes, c)
	}
	return NewWorkload(classes, 0)
}

// BenchmarkWorkloadPlan measures the fragmentation strategy's per-node cost
// in Score: a 30% share on a fragmented 8-GPU node, with the memo warm (the
// node unchanged since the last pod, the common case) and cold (every
// state computed afresh).
func BenchmarkWorkloadPlan(b *testing.B) {
	inv := fragInventory("frag-A", "frag-A", "frag-A", "frag-A", "frag-A", "frag-A", "frag-A", "frag-A")
	used := []int{60, 30, 100, 0, 0, 10, 0, 70}
	r, err := NewRequest([]ContainerDemand{{Name: "c", Units: 30}}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, _ := Plan(inv, used, r, 255, 0, Binpack)
	b.Run("memo=warm", func(b *testing.B) {
		w := benchWorkload()
		w.Plan(inv, used, r, p, 255, 0, 64000, 4000, false)
		b.ReportAllocs()
		for b.Loop() {
			w.Plan(inv, used, r, p, 255, 0, 64000, 4000, false)
		}
	})
	b.Run("memo=cold", func(b *testing.B) {
		w := benchWorkload()
		b.ReportAllocs()
		cpu := int64(64000)
		for b.Loop() {
			// A new CPU figure makes every state new to the memo.
			cpu++
			w.Plan(inv, used, r, p, 255, 0, cpu, 4000, false)
		}
	})
}
