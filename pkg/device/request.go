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
	// ComparisonOperators turns on the Gt/Lt toleration operators, as the
	// TaintTolerationComparisonOperators feature gate does for node taints.
	ComparisonOperators bool

	// Whole is how many whole devices the pod holds at its peak.
	Whole int
	// Shares are the share demands the pod holds at its peak, largest first.
	Shares []int
	// shareOf maps each share container (by position in Containers) to its
	// slot in Shares; wholeSlots gives each container's whole slots.
	shareOf    []int
	wholeSlots [][]int
}

// NewRequest derives the pod-level demand from container demands given in
// spec order (init containers, then app containers), following Kubernetes'
// effective-request rules: app containers and sidecars run together for the
// pod's life; a regular init container runs alone, beside the sidecars
// declared before it, and the kubelet hands its devices on to the
// containers declared after it. It returns an error for demands that
// cannot be served at all.
func NewRequest(containers []ContainerDemand, models []string, tolerations []corev1.Toleration) (*Request, error) {
	r := &Request{Containers: containers, Models: models, Tolerations: tolerations}
	n := len(containers)
	r.shareOf = make([]int, n)
	r.wholeSlots = make([][]int, n)
	var shares []int // units per share slot, before sorting
	for i, c := range containers {
		r.shareOf[i] = -1
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
			continue
		}
		// Long-running containers own their slots.
		for k := 0; k < c.Count; k++ {
			r.wholeSlots[i] = append(r.wholeSlots[i], r.Whole+k)
		}
		r.Whole += c.Count
		if c.Units > 0 {
			r.shareOf[i] = len(shares)
			shares = append(shares, c.Units)
		}
	}
	if r.Whole > MaxDevicesPerNode {
		return nil, fmt.Errorf("pod asks for %d whole devices; no node has more than %d", r.Whole, MaxDevicesPerNode)
	}
	// Init containers reuse the slots of the long-running containers
	// declared after them (those get the init container's devices from the
	// kubelet) and need extra slots only beyond those. Extra slots are shared
	// by all init containers, which run one at a time.
	extraWhole, extraShare := 0, -1
	for i, c := range containers {
		if !c.Init {
			continue
		}
		if c.Count > 0 {
			var later []int
			for j := i + 1; j < n; j++ {
				if !containers[j].Init {
					later = append(later, r.wholeSlots[j]...)
				}
			}
			take := append([]int(nil), later[:min(len(later), c.Count)]...)
			need := c.Count - len(take)
			for k := 0; k < need; k++ {
				take = append(take, r.Whole+k)
			}
			extraWhole = max(extraWhole, need)
			r.wholeSlots[i] = take
		}
		if c.Units > 0 {
			// The largest later share takes the init container's units on
			// its device, growing if it must: the kubelet reuses them there.
			best := -1
			for j := i + 1; j < n; j++ {
				if k := r.shareOf[j]; !containers[j].Init && k >= 0 && (best < 0 || shares[k] > shares[best]) {
					best = k
				}
			}
			if best < 0 {
				if extraShare < 0 {
					extraShare = len(shares)
					shares = append(shares, 0)
				}
				best = extraShare
			}
			shares[best] = max(shares[best], c.Units)
			r.shareOf[i] = best
		}
	}
	r.Whole += extraWhole
	if r.Whole > MaxDevicesPerNode {
		return nil, fmt.Errorf("pod asks for %d whole devices; no node has more than %d", r.Whole, MaxDevicesPerNode)
	}
	if len(shares) > MaxSharesPerPod {
		return nil, fmt.Errorf("pod has %d device shares; at most %d are supported", len(shares), MaxSharesPerPod)
	}
	// Placement packs the largest shares first; renumber the slots so.
	order := make([]int, len(shares))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return shares[b] - shares[a] })
	pos := make([]int, len(shares))
	for p, old := range order {
		pos[old] = p
		r.Shares = append(r.Shares, shares[old])
	}
	for i, k := range r.shareOf {
		if k >= 0 {
			r.shareOf[i] = pos[k]
		}
	}
	return r, nil
}

// Empty reports whether the request asks for nothing.
func (r *Request) Empty() bool { return r == nil || (r.Whole == 0 && len(r.Shares) == 0) }

// Units is the total capacity the pod holds at its peak.
func (r *Request) Units() int {
	if r == nil {
		return 0
	}
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
			if r.Tolerations[j].ToleratesTaint(klog.Logger{}, t, r.ComparisonOperators) {
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
