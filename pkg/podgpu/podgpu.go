// Package podgpu is the one statement of what a bound pod holds of its
// node's GPUs, from its spec and its tessera.io/gpu-assignment annotation.
// The scheduler's cache and kubectl tessera both read pods through it, so
// that they cannot disagree about a pod.
//
// The rules:
//   - What a pod asks for is gpu.ParsePod's reading of its containers (limits,
//     else requests; init containers and sidecars by Kubernetes'
//     effective-request rules).
//   - A pod that asks for no GPU holds none, whatever its annotation says:
//     an annotation on it is ignored, so it can neither block nor steer GPUs.
//   - A pod that asks for GPUs holds what its assignment names, if the
//     assignment is readable and gives every container that asks exactly
//     what it asks: its count of whole GPUs, or its share, on one GPU or
//     (as the kubelet may hand it out) in parts over several. Entries for
//     containers that do not ask (or do not exist) are ignored.
//   - A pod that asks for GPUs without such an assignment (placed by another
//     scheduler, or its annotation damaged) holds what it asks for, on GPUs
//     not known until its node's device plugin records them.
//   - A pod whose request is invalid cannot be accounted at all.
//   - At its peak a pod holds, per GPU, the larger of what its app
//     containers and sidecars hold together and what any one init step
//     holds beside the sidecars declared before it (PeakUse).
package podgpu

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/pkg/assignment"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// State says how much is known of a pod's hold.
type State int

const (
	// None: the pod asks for no GPU and holds none.
	None State = iota
	// Recorded: the pod holds the GPUs its assignment names.
	Recorded
	// Unrecorded: the pod asks for GPUs and holds as much as it asks, on
	// GPUs no usable assignment names yet.
	Unrecorded
	// Unknown: the pod's GPU request is invalid; what it holds cannot be
	// known, so its node's GPUs must all count as taken.
	Unknown
)

// String names the state.
func (s State) String() string {
	switch s {
	case None:
		return "none"
	case Recorded:
		return "recorded"
	case Unrecorded:
		return "unrecorded"
	default:
		return "unknown"
	}
}

// Hold is what a pod holds.
type Hold struct {
	State State
	// Request is what the pod asks for (Recorded and Unrecorded).
	Request *device.Request
	// Assignment is the part of the pod's assignment that is trusted: the
	// containers that ask for GPUs (Recorded).
	Assignment assignment.Assignment
	// Use is the capacity the pod holds per GPU UUID at its peak
	// (Recorded).
	Use map[string]int
	// Problem says why the pod's annotation is ignored or only partly
	// trusted, or why the pod cannot be accounted; empty when nothing is
	// wrong. A pod of another scheduler without an annotation has none.
	Problem string
}

// Of reads what a bound pod holds.
func Of(pod *v1.Pod) Hold {
	raw, annotated := pod.Annotations[assignment.Annotation]
	req, err := gpu.ParsePod(pod)
	switch {
	case err != nil:
		return Hold{State: Unknown, Problem: "invalid gpu request: " + err.Error()}
	case req.Empty():
		h := Hold{State: None}
		if annotated {
			h.Problem = fmt.Sprintf("the pod asks for no GPU; its %s is ignored", assignment.Annotation)
		}
		return h
	}
	unrecorded := Hold{State: Unrecorded, Request: req}
	if !annotated {
		return unrecorded
	}
	a, err := assignment.Parse(raw)
	if err != nil {
		unrecorded.Problem = err.Error()
		return unrecorded
	}
	trusted, extra := only(a, req)
	if err := Matches(trusted, req); err != nil {
		unrecorded.Problem = err.Error()
		return unrecorded
	}
	use, err := PeakUse(pod, trusted)
	if err != nil {
		unrecorded.Problem = err.Error()
		return unrecorded
	}
	h := Hold{State: Recorded, Request: req, Assignment: trusted, Use: use}
	if len(extra) > 0 {
		h.Problem = fmt.Sprintf("%s names containers that ask for no GPU (%s); they are ignored", assignment.Annotation, strings.Join(extra, ", "))
	}
	return h
}

// only splits an assignment into the containers that ask for GPUs and the
// names of the others.
func only(a assignment.Assignment, req *device.Request) (assignment.Assignment, []string) {
	asks := make(map[string]bool, len(req.Containers))
	for _, c := range req.Containers {
		asks[c.Name] = true
	}
	out := make(assignment.Assignment, len(a))
	var extra []string
	for _, name := range a.Containers() {
		if asks[name] {
			out[name] = a[name]
		} else {
			extra = append(extra, name)
		}
	}
	return out, extra
}

// Matches checks that an assignment gives every container that asks for
// GPUs exactly what it asks for, so that an annotation copied from another
// pod or cut short is not trusted.
func Matches(a assignment.Assignment, req *device.Request) error {
	for _, c := range req.Containers {
		devs := a[c.Name]
		switch {
		case c.Count > 0:
			if len(devs) != c.Count {
				return fmt.Errorf("%s gives container %q %d gpus; it asks for %d", assignment.Annotation, c.Name, len(devs), c.Count)
			}
			for _, d := range devs {
				if d.Percent != device.FullUnits {
					return fmt.Errorf("%s gives container %q %d%% of gpu %s; it asks for whole gpus", assignment.Annotation, c.Name, d.Percent, d.UUID)
				}
			}
		default:
			// A share is on one GPU as the scheduler places it; the kubelet
			// may have spread it over several, and the device plugin then
			// records that truth: parts that add up to the share.
			sum := 0
			for _, d := range devs {
				if d.Percent >= device.FullUnits {
					sum = -1
					break
				}
				sum += d.Percent
			}
			if sum != c.Units {
				return fmt.Errorf("%s does not give container %q the %d%% share it asks for", assignment.Annotation, c.Name, c.Units)
			}
		}
	}
	return nil
}

// PeakUse folds an assignment into the capacity the pod holds per device at
// its peak. App containers and sidecars hold theirs for the pod's life; a
// regular init container runs alone beside the sidecars declared before
// it, and its devices pass on to later containers, so each init step
// counts once, and the peak is the larger of the steady state and the
// biggest step. Entries for containers the pod does not have count too (the
// safe side for a caller that has not filtered them). It is an error for a
// device to be held beyond its capacity.
func PeakUse(pod *v1.Pod, a assignment.Assignment) (map[string]int, error) {
	steady, peak := map[string]int{}, map[string]int{}
	sidecars := map[string]int{}
	seen := map[string]bool{}
	add := func(m map[string]int, name string) {
		for _, d := range a[name] {
			m[d.UUID] += d.Percent
		}
	}
	for _, c := range pod.Spec.InitContainers {
		seen[c.Name] = true
		if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			add(steady, c.Name)
			add(sidecars, c.Name)
			continue
		}
		step := map[string]int{}
		for u, n := range sidecars {
			step[u] = n
		}
		add(step, c.Name)
		for u, n := range step {
			peak[u] = max(peak[u], n)
		}
	}
	for _, c := range pod.Spec.Containers {
		seen[c.Name] = true
		add(steady, c.Name)
	}
	for name := range a {
		if !seen[name] {
			add(steady, name)
		}
	}
	for uuid, units := range peak {
		steady[uuid] = max(steady[uuid], units)
	}
	for uuid, units := range steady {
		if units > device.FullUnits {
			return nil, fmt.Errorf("%s gives the pod %d%% of gpu %s", assignment.Annotation, units, uuid)
		}
	}
	return steady, nil
}
