package device

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// MaxSharesPerPod bounds the share demands of one pod so that a placement
// fits in a fixed-size value and planning needs no heap.
const MaxSharesPerPod = 16

// ContainerDemand is what one container asks of a node's devices: either
// Count whole devices or Units of one shared device.
type ContainerDemand struct {
	// Name is the container's name.
	Name string
	// Count is the number of whole devices.
	Count int
	// Units is the share of one device, 1..FullUnits-1.
	Units int
	// Init marks a regular (non-restartable) init container. It runs before
	// the app containers, and the kubelet hands its devices on to them, so
	// it is served from the pod's own devices where it can be.
	Init bool
}

// Request is a pod's demand on one node's devices.
type Request struct {
	// Containers lists every container that asks for devices.
	Containers []ContainerDemand
	// Models restricts the device models; empty means any.
	Models []string
	// Tolerations are the pod's tolerations, matched against device taints.
	Tolerations []corev1.Toleration

	// Whole is how many whole devices the pod holds at its peak.
	Whole int
	// Shares are the share demands the pod holds at its peak, largest first.
	Shares []int
	// shareOf maps each share container (by position in Containers) to its
	// slot in Shares; wholeFrom gives the first whole slot of each container.
	shareOf   []int
	wholeFrom []int
}

// NewRequest derives the pod-level demand from container demands, following
// Kubernetes' effective-request rules: app containers (and sidecars) run
// together, init containers one at a time before them, and an init
// container's devices are reused by the containers after it. It returns an
// error for demands that cannot be served at all.
func NewRequest(containers []ContainerDemand, models []string, tolerations []corev1.Toleration) (*Request, error) {
	r := &Request{Containers: containers, Models: models, Tolerations: tolerations}
	r.shareOf = make([]int, len(containers))
	r.wholeFrom = make([]int, len(containers))
	type share struct{ units, container int }
	var appShares []share
	maxInitWhole, maxInitShare := 0, 0
	for i, c := range containers {
		r.shareOf[i], r.wholeFrom[i] = -1, -1
		switch {
		case c.Count < 0 || c.Units < 0:
			return nil, fmt.Errorf("container %q asks for a negative amount", c.Name)
		case c.Count > 0 && c.Units > 0:
			return nil, fmt.Errorf("container %q asks for whole devices and a device share at once", c.Name)
		case c.Units >= FullUnits:
			return nil, fmt.Errorf("container %q asks for a share of %d%%; shares are 1-%d%%, ask for whole devices instead", c.Name, c.Units, FullUnits-1)
		case c.Count > MaxDevicesPerNode:
			return nil, fmt.Errorf("container %q asks for %d devices; no node has more than %d", c.Name, c.Count, MaxDevicesPerNode)
		}
		if c.Init {
			maxInitWhole = max(maxInitWhole, c.Count)
			maxInitShare = max(maxInitShare, c.Units)
			continue
		}
		if c.Count > 0 {
			r.wholeFrom[i] = r.Whole
			r.Whole += c.Count
		}
		if c.Units > 0 {
			appShares = append(appShares, share{c.Units, i})
		}
	}
	if r.Whole > MaxDevicesPerNode {
		return nil, fmt.Errorf("pod asks for %d whole devices; no node has more than %d", r.Whole, MaxDevicesPerNode)
	}
	// An init container bigger than the app containers' whole devices needs
	// extra devices for its run; the app containers never use them.
	r.Whole = max(r.Whole, maxInitWhole)
	// An init share is served by the largest app share if that is big
	// enough, otherwise it needs a share slot of its own.
	largest := 0
	for _, s := range appShares {
		largest = max(largest, s.units)
	}
	if maxInitShare > largest {
		appShares = append(appShares, share{maxInitShare, -1})
	}
	slices.SortStableFunc(appShares, func(a, b share) int { return b.units - a.units })
	for _, s := range appShares {
		if s.container >= 0 {
			r.shareOf[s.container] = len(r.Shares)
		}
		r.Shares = append(r.Shares, s.units)
	}
	if len(r.Shares) > MaxSharesPerPod {
		return nil, fmt.Errorf("pod has %d containers asking for device shares; at most %d are supported", len(r.Shares), MaxSharesPerPod)
	}
	for i, c := range containers {
		if c.Init && c.Units > 0 {
			r.shareOf[i] = initShareSlot(r.Shares, c.Units)
		}
	}
	return r, nil
}

// initShareSlot picks, for an init container's share, the smallest share slot
// that can hold it: the kubelet will hand those same units on.
func initShareSlot(shares []int, units int) int {
	best := -1
	for i, s := range shares {
		if s >= units && (best < 0 || s <= shares[best]) {
			best = i
		}
	}
	return best
}

// Empty reports whether the request asks for nothing.
func (r *Request) Empty() bool { return r == nil || (r.Whole == 0 && len(r.Shares) == 0) }

// Units is the total capacity the pod holds at its peak.
func (r *Request) Units() int {
	u := r.Whole * FullUnits
	for _, s := range r.Shares {
		u += s
	}
	return u
}

// allowsModel reports whether the request accepts devices of model m.
func (r *Request) allowsModel(m string) bool {
	if len(r.Models) == 0 {
		return true
	}
	for _, x := range r.Models {
		if x == m {
			return true
		}
	}
	return false
}

// tolerates reports whether the pod's tolerations cover every taint of the
// device whose effect passes the filter.
func (r *Request) tolerates(d *Device, effect func(corev1.TaintEffect) bool) bool {
	for i := range d.Taints {
		t := &d.Taints[i]
		if !effect(t.Effect) {
			continue
		}
		ok := false
		for j := range r.Tolerations {
			if r.Tolerations[j].ToleratesTaint(klog.Logger{}, t, false) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func isHardEffect(e corev1.TaintEffect) bool {
	return e == corev1.TaintEffectNoSchedule || e == corev1.TaintEffectNoExecute
}

func isPreferEffect(e corev1.TaintEffect) bool { return e == corev1.TaintEffectPreferNoSchedule }
