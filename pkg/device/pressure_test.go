package device

import (
	"testing"
	"time"
)

func TestModelPressure(t *testing.T) {
	capacity := map[string]int{"T4": 800, "P100": 200, "G2": 4400}
	inv := func(model string) *Inventory {
		return NewInventory("n", time.Now(), []DeviceSpec{{ID: "a", Model: model, Healthy: true}})
	}
	anyGPU := WorkloadClass{CPUMilli: 8000, Count: 1, Units: FullUnits, Weight: 80}
	for _, tt := range []struct {
		name    string
		classes []WorkloadClass
		claimed []string
	}{
		{"unrestricted", []WorkloadClass{anyGPU}, nil},
		{"cpu only", []WorkloadClass{{CPUMilli: 4000, Weight: 1}}, nil},
		// 20 of 100 GPUs wanted go to T4 only: 2.5% of T4's devices per
		// unit of demand against 1.85% for the cluster, above 0.3×.
		{"T4 only", []WorkloadClass{anyGPU, {Count: 1, Units: FullUnits, Models: []string{"T4"}, Weight: 20}}, []string{"T4"}},
		// Spread over T4 and G2 by their sizes, the same 20 weigh on
		// neither: 0.4% per device against 1.85%.
		{"T4 or G2", []WorkloadClass{anyGPU, {Count: 1, Units: FullUnits, Models: []string{"T4", "G2"}, Weight: 20}}, nil},
		// A trickle of P100-only shares stays under the threshold.
		{"few P100 shares", []WorkloadClass{anyGPU, {Count: 1, Units: 10, Models: []string{"P100"}, Weight: 2}}, nil},
		// A model named twice counts once: spread over T4 and G2 by their
		// sizes, 20 weigh on T4 at 0.38% per device against 0.56% for
		// 0.3× the cluster (naming T4 twice would have made it 0.67%).
		{"T4 named twice, or G2", []WorkloadClass{anyGPU, {Count: 1, Units: FullUnits, Models: []string{"T4", "T4", "G2"}, Weight: 20}}, nil},
		// A model the cluster lacks takes nothing from the others.
		{"absent model", []WorkloadClass{anyGPU, {Count: 1, Units: FullUnits, Models: []string{"A100"}, Weight: 20}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mp := Pressure(tt.classes, capacity, 0.3, 0.3, nil)
			for _, m := range []string{"T4", "P100", "G2"} {
				want := false
				for _, c := range tt.claimed {
					want = want || c == m
				}
				if got := mp.Claimed(inv(m)); got != want {
					t.Errorf("%s claimed = %v, want %v", m, got, want)
				}
			}
		})
	}
	if Pressure(nil, capacity, 0.3, 0.3, nil).Claimed(inv("T4")) {
		t.Error("no classes put T4 under pressure")
	}
	// Names no node has are not interned: every rare shape seen reaches
	// Pressure, and the ID table is small.
	Pressure([]WorkloadClass{{Count: 1, Units: FullUnits, Models: []string{"no-such-model-in-any-cluster"}, Weight: 1}}, capacity, 0.3, 0.3, nil)
	models.Lock()
	_, interned := models.ids["no-such-model-in-any-cluster"]
	models.Unlock()
	if interned {
		t.Error("Pressure interned a model name that no node has")
	}
	var nilPressure *ModelPressure
	if nilPressure.Claimed(inv("T4")) {
		t.Error("nil pressure claims T4")
	}
	mixed := NewInventory("n", time.Now(), []DeviceSpec{{ID: "a", Model: "G2", Healthy: true}, {ID: "b", Model: "T4", Healthy: true}})
	mp := Pressure([]WorkloadClass{anyGPU, {Count: 1, Units: FullUnits, Models: []string{"T4"}, Weight: 20}}, capacity, 0.3, 0.3, nil)
	if !mp.Claimed(mixed) {
		t.Error("a node with one T4 among G2s is not claimed")
	}
}

// TestModelPressureHolds checks the gap between entering and leaving
// pressure: a model whose share sits between the two keeps the answer it
// had.
func TestModelPressureHolds(t *testing.T) {
	capacity := map[string]int{"T4": 800, "P100": 200, "G2": 4400}
	t4 := NewInventory("n", time.Now(), []DeviceSpec{{ID: "a", Model: "T4", Healthy: true}})
	anyGPU := WorkloadClass{CPUMilli: 8000, Count: 1, Units: FullUnits, Weight: 80}
	onT4 := func(w float64) []WorkloadClass {
		return []WorkloadClass{anyGPU, {Count: 1, Units: FullUnits, Models: []string{"T4"}, Weight: w}}
	}
	onP100 := []WorkloadClass{anyGPU, {Count: 1, Units: FullUnits, Models: []string{"P100"}, Weight: 20}}
	heldT4 := Pressure(onT4(20), capacity, 0.3, 0.24, nil)
	heldP100 := Pressure(onP100, capacity, 0.3, 0.24, nil)
	if !heldT4.Claimed(t4) || heldP100.Claimed(t4) {
		t.Fatal("set-up: want T4 under pressure from T4-only pods only")
	}
	for _, tt := range []struct {
		name    string
		weight  float64
		held    *ModelPressure
		claimed bool
	}{
		// 3.5/800 per T4 against 83.5/5400 per device: a share of 0.28.
		{"between the thresholds, not held", 3.5, nil, false},
		{"between the thresholds, held", 3.5, heldT4, true},
		{"between the thresholds, another model held", 3.5, heldP100, false},
		// 2.5/800 against 82.5/5400 is 0.20: below leave, so held
		// pressure ends.
		{"below leave, held", 2.5, heldT4, false},
		// 4/800 against 84/5400 is 0.32: above enter either way.
		{"above enter, not held", 4, nil, true},
		{"above enter, held", 4, heldT4, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Pressure(onT4(tt.weight), capacity, 0.3, 0.24, tt.held).Claimed(t4); got != tt.claimed {
				t.Errorf("T4 claimed = %v, want %v", got, tt.claimed)
			}
		})
	}
}
