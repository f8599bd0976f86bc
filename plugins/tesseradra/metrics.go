package tesseradra

import (
	"slices"
	"sync"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

// Outcomes of the device choice of a claim's GPUs.
const (
	// choicePreferred: the allocator took only GPUs Tessera listed first.
	choicePreferred = "preferred"
	// choiceOther: it took a GPU Tessera did not prefer, because the
	// claim's selectors or constraints ruled the preferred ones out.
	choiceOther = "other"
)

// deviceChoices counts, per claim allocated with Tessera's preferences, whether
// the allocator took the GPUs Tessera preferred: a platform team sees from it
// whether claims' own constraints override Tessera's placement.
var deviceChoices = metrics.NewCounterVec(&metrics.CounterOpts{
	Subsystem:      "tessera_scheduler",
	Name:           "dra_device_choice_total",
	Help:           "ResourceClaims whose GPUs the DRA allocator picked while Tessera listed its choice first, by outcome: preferred (it took Tessera's GPUs) or other (the claim's selectors or constraints took others).",
	StabilityLevel: metrics.ALPHA,
}, []string{"outcome"})

var registerOnce sync.Once

func registerMetrics() {
	registerOnce.Do(func() { legacyregistry.MustRegister(deviceChoices) })
}

// choiceOf is the outcome for a claim's allocation given the GPUs Tessera
// preferred on each node for its pod; ok is false when the claim holds no
// GPU of a node Tessera had a preference for.
func choiceOf(claim *resourceapi.ResourceClaim, preferred map[string][]string) (outcome string, ok bool) {
	if claim.Status.Allocation == nil {
		return "", false
	}
	outcome = choicePreferred
	for _, r := range claim.Status.Allocation.Devices.Results {
		if !drainventory.IsGPUDriver(r.Driver) {
			continue
		}
		id := drainventory.DeviceID(r.Driver, r.Pool, r.Device)
		pool := drainventory.PoolOf(id) + "/"
		found, onPreferredNode := false, false
		for _, ids := range preferred {
			if len(ids) == 0 || len(ids[0]) < len(pool) || ids[0][:len(pool)] != pool {
				continue
			}
			onPreferredNode = true
			found = found || slices.Contains(ids, id)
		}
		if !onPreferredNode {
			continue
		}
		ok = true
		if !found {
			outcome = choiceOther
		}
	}
	if !ok {
		return "", false
	}
	return outcome, true
}
