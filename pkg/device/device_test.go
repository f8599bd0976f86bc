package device

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// dgx builds an 8-device node in two NUMA halves whose devices are fully
// linked within each half, as NVLink islands often are.
func dgx(model string) []DeviceSpec {
	specs := make([]DeviceSpec, 8)
	for i := range specs {
		specs[i] = DeviceSpec{ID: fmt.Sprintf("GPU-%d", i), Model: model, MemoryMiB: 81920, NUMANode: i / 4, Healthy: true}
		for j := (i / 4) * 4; j < (i/4)*4+4; j++ {
			if j != i {
				specs[i].LinkIDs = append(specs[i].LinkIDs, fmt.Sprintf("GPU-%d", j))
			}
		}
	}
	return specs
}

func mustRequest(t *testing.T, cs ...ContainerDemand) *Request {
	t.Helper()
	r, err := NewRequest(cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNewInventorySkipsBadDevices(t *testing.T) {
	specs := []DeviceSpec{
		{ID: "A", Model: "m", Healthy: true, LinkIDs: []string{"B", "nope"}},
		{ID: "B", Model: "m", Healthy: true},
		{ID: "", Model: "m"},
		{ID: "C", Model: ""},
		{ID: "D", Model: "m", MemoryMiB: -1},
		{ID: "E", Model: "m"},
		{ID: "E", Model: "m"},
	}
	inv := NewInventory("n", time.Time{}, specs)
	if inv.Len() != 2 {
		t.Fatalf("kept %d devices, want 2 (A, B)", inv.Len())
	}
	if len(inv.Problems) != 4 {
		t.Errorf("problems = %q, want 4", inv.Problems)
	}
	if !strings.Contains(strings.Join(inv.Problems, "\n"), "E appears 2 times") {
		t.Errorf("duplicate not reported: %q", inv.Problems)
	}
	if inv.Devices[0].Links != 0b10 || inv.Devices[1].Links != 0b01 {
		t.Errorf("links = %b %b, want symmetric A<->B", inv.Devices[0].Links, inv.Devices[1].Links)
	}
	if _, ok := inv.IndexOf("E"); ok {
		t.Error("a duplicated ID must not be usable")
	}
}

func TestNewRequest(t *testing.T) {
	tests := []struct {
		name       string
		cs         []ContainerDemand
		wantWhole  int
		wantShares []int
		wantErr    string
	}{
		{name: "whole", cs: []ContainerDemand{{Name: "a", Count: 2}}, wantWhole: 2},
		{name: "shares sorted", cs: []ContainerDemand{{Name: "a", Units: 20}, {Name: "b", Units: 60}}, wantShares: []int{60, 20}},
		{name: "init whole reused", cs: []ContainerDemand{{Name: "i", Count: 1, Init: true}, {Name: "a", Count: 2}}, wantWhole: 2},
		{name: "init whole larger", cs: []ContainerDemand{{Name: "i", Count: 4, Init: true}, {Name: "a", Count: 2}}, wantWhole: 4},
		{name: "init share reused", cs: []ContainerDemand{{Name: "i", Units: 30, Init: true}, {Name: "a", Units: 50}}, wantShares: []int{50}},
		{name: "init share larger grows the app slot", cs: []ContainerDemand{{Name: "i", Units: 70, Init: true}, {Name: "a", Units: 50}}, wantShares: []int{70}},
		{name: "init share without later share", cs: []ContainerDemand{{Name: "i", Units: 40, Init: true}, {Name: "a", Count: 1}}, wantWhole: 1, wantShares: []int{40}},
		// A sidecar declared before an init container runs beside it, so
		// the init container cannot reuse the sidecar's device.
		{name: "sidecar before init whole", cs: []ContainerDemand{{Name: "proxy", Count: 1}, {Name: "warmup", Count: 1, Init: true}}, wantWhole: 2},
		{name: "sidecar before init share", cs: []ContainerDemand{{Name: "proxy", Units: 30}, {Name: "warmup", Units: 20, Init: true}}, wantShares: []int{30, 20}},
		{name: "init before sidecar reuses it", cs: []ContainerDemand{{Name: "warmup", Count: 1, Init: true}, {Name: "proxy", Count: 1}}, wantWhole: 1},
		{name: "two inits share the extra slots", cs: []ContainerDemand{{Name: "i1", Count: 3, Init: true}, {Name: "i2", Count: 2, Init: true}, {Name: "a", Count: 1}}, wantWhole: 3},
		{name: "both", cs: []ContainerDemand{{Name: "a", Count: 1, Units: 5}}, wantErr: "at once"},
		{name: "share 100", cs: []ContainerDemand{{Name: "a", Units: 100}}, wantErr: "1-99%"},
		{name: "too many", cs: []ContainerDemand{{Name: "a", Count: 65}}, wantErr: "no node has more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRequest(tt.cs, nil, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Whole != tt.wantWhole || fmt.Sprint(r.Shares) != fmt.Sprint(tt.wantShares) {
				t.Errorf("whole %d shares %v, want %d %v", r.Whole, r.Shares, tt.wantWhole, tt.wantShares)
			}
		})
	}
}

func TestUsable(t *testing.T) {
	specs := dgx("H100")
	specs[1].Healthy = false
	specs[2].Taints = []Taint{{Key: "tessera.io/xid", Value: "79", Effect: corev1.TaintEffectNoSchedule}}
	specs[3].Taints = []Taint{{Key: "maint", Effect: corev1.TaintEffectPreferNoSchedule}}
	inv := NewInventory("n", time.Now(), specs)
	tolerateXID := []corev1.Toleration{{Key: "tessera.io/xid", Operator: corev1.TolerationOpExists}}

	tests := []struct {
		name        string
		models      []string
		tolerations []corev1.Toleration
		wantUsable  uint64
		wantAvoid   uint64
		wantWhy     Reason
	}{
		{name: "plain", wantUsable: 0b11111001, wantAvoid: 0b1000},
		{name: "tolerates xid", tolerations: tolerateXID, wantUsable: 0b11111101, wantAvoid: 0b1000},
		{name: "other model", models: []string{"A100"}, wantWhy: NoAllowedModel},
		{name: "listed model", models: []string{"A100", "H100"}, wantUsable: 0b11111001, wantAvoid: 0b1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := NewRequest([]ContainerDemand{{Name: "a", Count: 1}}, tt.models, tt.tolerations)
			u, a, why := Usable(inv, r)
			if u != tt.wantUsable || a != tt.wantAvoid || why != tt.wantWhy {
				t.Errorf("Usable = %08b %08b %v, want %08b %08b %v", u, a, why, tt.wantUsable, tt.wantAvoid, tt.wantWhy)
			}
		})
	}

	one := NewInventory("n", time.Now(), []DeviceSpec{{ID: "x", Model: "m", Taints: []Taint{{Key: "k", Effect: corev1.TaintEffectNoExecute}}, Healthy: true}})
	if _, _, why := Usable(one, mustRequest(t, ContainerDemand{Name: "a", Units: 10})); why != Untolerated {
		t.Errorf("NoExecute device taint: why = %v, want Untolerated", why)
	}
	sick := NewInventory("n", time.Now(), []DeviceSpec{{ID: "x", Model: "m"}})
	if _, _, why := Usable(sick, mustRequest(t, ContainerDemand{Name: "a", Units: 10})); why != NoneHealthy {
		t.Errorf("unhealthy: why = %v, want NoneHealthy", why)
	}
}

// TestUsableMasksMatchDeviceWalk checks the mask-only verdict that Filter
// takes where no device of an accepted model is tainted against the
// device-by-device walk, over mixed-model nodes with unhealthy and tainted
// devices and every model filter.
func TestUsableMasksMatchDeviceWalk(t *testing.T) {
	modelSets := [][]string{nil, {"A"}, {"B"}, {"C"}, {"B", "A"}, {"A", "A"}, {"Z"}}
	for layout := 0; layout < 1<<6; layout++ {
		specs := make([]DeviceSpec, 6)
		for i := range specs {
			specs[i] = DeviceSpec{ID: fmt.Sprint(i), Model: []string{"A", "B"}[i%2], Healthy: layout&(1<<i) != 0}
			if layout%3 == 0 && i == 5 {
				specs[i].Model = "C"
			}
			// Some layouts taint a device, of model A or B, so that the
			// walk is also checked where it must run and where a taint on
			// a model the pod does not accept leaves the masks in charge.
			if layout%5 == i {
				specs[i].Taints = []Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}
			}
		}
		inv := NewInventory("n", time.Now(), specs)
		for _, models := range modelSets {
			r, err := NewRequest([]ContainerDemand{{Name: "a", Count: 1}}, models, nil)
			if err != nil {
				t.Fatal(err)
			}
			u, a, b, why := usable4(inv, r)
			wu, wa, wb, wwhy := usableEach(inv, r)
			if u != wu || a != wa || b != wb || why != wwhy {
				t.Errorf("layout %06b models %v: masks give %06b %06b %06b %v, the walk %06b %06b %06b %v",
					layout, models, u, a, b, why, wu, wa, wb, wwhy)
			}
		}
	}
	empty := NewInventory("n", time.Now(), nil)
	if _, _, _, why := usable4(empty, mustRequest(t, ContainerDemand{Name: "a", Count: 1})); why != NoDevices {
		t.Errorf("no devices: why = %v, want NoDevices", why)
	}
}

func TestPlan(t *testing.T) {
	inv := NewInventory("n", time.Now(), dgx("H100"))
	all := uint64(0xff)
	tests := []struct {
		name      string
		used      []int
		req       []ContainerDemand
		st        Strategy
		wantOK    bool
		wantWhole uint64
		wantShare []int
	}{
		{name: "two whole stay on one island", used: []int{100, 0, 0, 100, 0, 0, 0, 0},
			req: []ContainerDemand{{Name: "a", Count: 2}}, wantOK: true, wantWhole: 0b00000110},
		{name: "four whole take an empty island", used: []int{0, 100, 0, 0, 0, 0, 0, 0},
			req: []ContainerDemand{{Name: "a", Count: 4}}, wantOK: true, wantWhole: 0b11110000},
		{name: "eight whole", used: make([]int, 8), req: []ContainerDemand{{Name: "a", Count: 8}}, wantOK: true, wantWhole: 0xff},
		{name: "nine whole", used: make([]int, 8), req: []ContainerDemand{{Name: "a", Count: 9}}, wantOK: false},
		{name: "binpack share best fit", used: []int{50, 70, 0, 0, 0, 0, 0, 0},
			req: []ContainerDemand{{Name: "a", Units: 30}}, wantOK: true, wantShare: []int{1}},
		{name: "spread share roomiest", used: []int{50, 70, 0, 0, 0, 0, 0, 0},
			req: []ContainerDemand{{Name: "a", Units: 30}}, st: Spread, wantOK: true, wantShare: []int{2}},
		{name: "share does not fit", used: []int{50, 50, 50, 50, 50, 50, 50, 50},
			req: []ContainerDemand{{Name: "a", Units: 60}}, wantOK: false},
		{name: "whole plus share keeps share off free devices", used: []int{60, 100, 100, 100, 100, 100, 0, 0},
			req: []ContainerDemand{{Name: "a", Count: 2}, {Name: "b", Units: 40}}, wantOK: true, wantWhole: 0b11000000, wantShare: []int{0}},
		{name: "whole plus share short of devices", used: []int{70, 100, 100, 100, 100, 100, 0, 0},
			req: []ContainerDemand{{Name: "a", Count: 2}, {Name: "b", Units: 40}}, wantOK: false},
		{name: "single whole breaks the smaller island", used: []int{100, 100, 100, 0, 0, 0, 0, 0},
			req: []ContainerDemand{{Name: "a", Count: 1}}, wantOK: true, wantWhole: 0b1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRequest(t, tt.req...)
			p, ok := Plan(inv, tt.used, r, all, 0, tt.st)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			if p.Whole != tt.wantWhole {
				t.Errorf("whole = %08b, want %08b", p.Whole, tt.wantWhole)
			}
			for i, d := range tt.wantShare {
				if int(p.Share[i]) != d {
					t.Errorf("share %d on device %d, want %d", i, p.Share[i], d)
				}
			}
		})
	}
}

func TestPlanAvoidsPreferNoScheduleDevices(t *testing.T) {
	inv := NewInventory("n", time.Now(), dgx("H100"))
	r := mustRequest(t, ContainerDemand{Name: "a", Count: 1})
	p, ok := Plan(inv, make([]int, 8), r, 0xff, 0b1111, Binpack)
	if !ok || p.Whole&0b1111 != 0 {
		t.Fatalf("chose %08b; devices 0-3 should be avoided", p.Whole)
	}
	low := p.Score(inv, make([]int, 8), r, 0b1111, Binpack, Weights{Taint: 1})
	forced, _ := Plan(inv, make([]int, 8), r, 0b1111, 0b1111, Binpack)
	if got := forced.Score(inv, make([]int, 8), r, 0b1111, Binpack, Weights{Taint: 1}); got >= low {
		t.Errorf("placing on an avoided device scores %d, not below %d", got, low)
	}
}

func TestScore(t *testing.T) {
	inv := NewInventory("n", time.Now(), dgx("H100"))
	share := mustRequest(t, ContainerDemand{Name: "a", Units: 50})
	busy := []int{50, 0, 0, 0, 0, 0, 0, 0}
	idle := make([]int, 8)
	w := Weights{Node: 1, Device: 1, Topology: 1, Taint: 1}
	score := func(used []int, st Strategy) int64 {
		p, ok := Plan(inv, used, share, 0xff, 0, st)
		if !ok {
			t.Fatal("no fit")
		}
		return p.Score(inv, used, share, 0, st, w)
	}
	if b, i := score(busy, Binpack), score(idle, Binpack); b <= i {
		t.Errorf("binpack: busy node %d should beat idle node %d", b, i)
	}
	if b, i := score(busy, Spread), score(idle, Spread); b >= i {
		t.Errorf("spread: idle node %d should beat busy node %d", i, b)
	}

	two := mustRequest(t, ContainerDemand{Name: "a", Count: 2})
	linked := Placement{Whole: 0b11}
	split := Placement{Whole: 0b10001}
	if a, b := linked.Score(inv, idle, two, 0, Binpack, Weights{Topology: 1}), split.Score(inv, idle, two, 0, Binpack, Weights{Topology: 1}); a != 100 || b >= a {
		t.Errorf("topology: linked %d, split %d; want 100 and less", a, b)
	}
}

func TestGrants(t *testing.T) {
	r := mustRequest(t,
		ContainerDemand{Name: "init", Count: 1, Init: true},
		ContainerDemand{Name: "a", Count: 2},
		ContainerDemand{Name: "b", Units: 30},
		ContainerDemand{Name: "c", Units: 60},
	)
	p := Placement{Whole: 0b1100}
	p.Share[0], p.Share[1] = 5, 6 // 60 then 30
	g := p.Grants(r)
	want := "[[{2 100}] [{2 100} {3 100}] [{6 30}] [{5 60}]]"
	if fmt.Sprint(g) != want {
		t.Errorf("Grants = %v, want %v", g, want)
	}
}

func TestGrantsSidecarBeforeInit(t *testing.T) {
	r := mustRequest(t,
		ContainerDemand{Name: "proxy", Count: 1},
		ContainerDemand{Name: "warmup", Count: 2, Init: true},
		ContainerDemand{Name: "main", Count: 1},
	)
	if r.Whole != 3 {
		t.Fatalf("whole = %d, want 3 (proxy + warmup's step of 2, one reused by main)", r.Whole)
	}
	g := (&Placement{Whole: 0b111}).Grants(r)
	// proxy: slot 0; main: slot 1; warmup: main's slot 1 and extra slot 2.
	if want := "[[{0 100}] [{1 100} {2 100}] [{1 100}]]"; fmt.Sprint(g) != want {
		t.Errorf("Grants = %v, want %v", g, want)
	}
}

func TestPlanDoesNotAllocate(t *testing.T) {
	inv := NewInventory("n", time.Now(), dgx("H100"))
	used := []int{30, 100, 0, 0, 50, 0, 0, 0}
	r := mustRequest(t, ContainerDemand{Name: "a", Count: 2}, ContainerDemand{Name: "b", Units: 40})
	allocs := testing.AllocsPerRun(100, func() {
		u, a, _ := Usable(inv, r)
		p, _ := Plan(inv, used, r, u, a, Binpack)
		_ = p.Score(inv, used, r, a, Binpack, Weights{Node: 1, Device: 1, Topology: 1, Taint: 1})
	})
	if allocs != 0 {
		t.Errorf("Usable+Plan+Score allocate %v times per run", allocs)
	}
}

// TestCopyToOwnsItsLinks: a copy made with CopyTo places requests as the
// original does, and on nodes of up to 8 devices keeps the link masks in
// itself, so that wiping the original's changes nothing; larger nodes share
// the original's list.
func TestCopyToOwnsItsLinks(t *testing.T) {
	src := NewInventory("n", time.Now(), dgx("H100"))
	var cp Inventory
	src.CopyTo(&cp)
	*src = Inventory{} // the copy must not read the original's words
	used := []int{100, 0, 0, 100, 0, 0, 0, 0}
	p, ok := Plan(&cp, used, mustRequest(t, ContainerDemand{Name: "a", Count: 2}), 0xff, 0, Binpack)
	if !ok || p.Whole != 0b00000110 {
		t.Fatalf("plan on the copy = %08b, %v; want 00000110, true", p.Whole, ok)
	}
	if got := linkedPairs(&cp, 0xff); got != 12 {
		t.Errorf("linked pairs on the copy = %d, want 12", got)
	}

	specs := make([]DeviceSpec, 12)
	for i := range specs {
		specs[i] = DeviceSpec{ID: fmt.Sprintf("GPU-%d", i), Model: "H100", NUMANode: -1, Healthy: true}
		if i%2 == 1 {
			specs[i].LinkIDs = []string{fmt.Sprintf("GPU-%d", i-1)}
		}
	}
	big := NewInventory("big", time.Now(), specs)
	var bigCopy Inventory
	big.CopyTo(&bigCopy)
	if got := linkedPairs(&bigCopy, 1<<12-1); got != 6 {
		t.Errorf("linked pairs on the 12-device copy = %d, want 6", got)
	}
	if &bigCopy.links[0] != &big.links[0] {
		t.Error("the 12-device copy does not share the original's link list")
	}
}
