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
			mp := Pressure(tt.classes, capacity, 0.3)
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
	if Pressure(nil, capacity, 0.3).Claimed(inv("T4")) {
		t.Error("no classes put T4 under pressure")
	}
	// Names no node has are not interned: every rare shape seen reaches
	// Pressure, and the ID table is small.
	Pressure([]WorkloadClass{{Count: 1, Units: FullUnits, Models: []string{"no-such-model-in-any-cluster"}, Weight: 1}}, capacity, 0.3)
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
	mp := Pressure([]WorkloadClass{anyGPU, {Count: 1, Units: FullUnits, Models: []string{"T4"}, Weight: 20}}, capacity, 0.3)
	if !mp.Claimed(mixed) {
		t.Error("a node with one T4 among G2s is not claimed")
	}
}
