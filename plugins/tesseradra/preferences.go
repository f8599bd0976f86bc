package tesseradra

import (
	"context"
	"sync"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
)

// Preferences is what TesseraGPU tells this plugin, and what this plugin
// tells TesseraGPU. It is the one link between the two plugins.
type Preferences interface {
	// DeviceOrder returns, for the pod, the devices TesseraGPU would take on
	// a node, best first, as drainventory device IDs ("driver/pool/name"),
	// or nil for no preference there. It returns nil when TesseraGPU has no
	// preference for the pod at all. The function is called once per node
	// in one PreFilter, before Filter runs.
	DeviceOrder(ctx context.Context, pod *v1.Pod) func(node string) []string
	// ClaimPending reports a claim that DynamicResources has allocated in
	// Reserve and writes when the pod binds; claim.Status.Allocation is
	// set.
	ClaimPending(claim *resourceapi.ResourceClaim)
	// ClaimSettled reports that the claim's pending allocation has ended:
	// now is the claim as the scheduler knows it afterwards (written,
	// assumed, or nil when it is gone), so that an allocation that was
	// written is not forgotten before the informer brings it.
	ClaimSettled(uid types.UID, now *resourceapi.ResourceClaim)
}

// providers links each profile's TesseraGPU to its TesseraDynamicResources.
// Every plugin of a profile is built with the same framework handle, so the
// handle is the key; either plugin may be built first.
var providers sync.Map // fwk.Handle -> Preferences

// Provide makes p the preferences of the profile whose framework handle is
// h, until ctx ends. TesseraGPU calls it from its New.
func Provide(ctx context.Context, h fwk.Handle, p Preferences) {
	providers.Store(h, p)
	go func() {
		<-ctx.Done()
		providers.CompareAndDelete(h, p)
	}()
}

// preferencesOf returns the preferences of the profile of h, nil when it
// runs no TesseraGPU.
func preferencesOf(h fwk.Handle) Preferences {
	if p, ok := providers.Load(h); ok {
		return p.(Preferences)
	}
	return nil
}
