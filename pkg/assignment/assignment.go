// Package assignment is the contract between tessera-scheduler and the
// device plugin: the pod annotation that records which GPUs, and how much of
// each, the scheduler chose for every container of a pod.
package assignment

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Annotation is the pod annotation that carries the assignment, e.g.
// {"main":[{"uuid":"GPU-...","percent":100}]}. Whole GPUs carry 100.
const Annotation = "tessera.io/gpu-assignment"

// Device is one container's use of one device.
type Device struct {
	// UUID identifies the device.
	UUID string `json:"uuid"`
	// Percent is the share of the device, 100 for a whole device.
	Percent int `json:"percent"`
}

// Assignment maps container names to the devices they were given.
type Assignment map[string][]Device

// Parse decodes and validates an annotation value. Every problem is an
// error: the caller must not guess at a half-readable assignment.
func Parse(value string) (Assignment, error) {
	if strings.TrimSpace(value) == "" {
		return nil, fmt.Errorf("%s is empty", Annotation)
	}
	dec := json.NewDecoder(strings.NewReader(value))
	dec.DisallowUnknownFields()
	var a Assignment
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("%s is not valid: %w", Annotation, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s has trailing data after the JSON object", Annotation)
	}
	if a == nil {
		return nil, fmt.Errorf("%s is null", Annotation)
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a, nil
}

// Validate checks the structure: at least one container, DNS-label container names, non-empty
// UUIDs, percents in 1..100, whole devices (100) never repeated in one
// container, and each device named at most once per container.
func (a Assignment) Validate() error {
	if len(a) == 0 {
		return fmt.Errorf("%s names no containers", Annotation)
	}
	for _, name := range a.Containers() {
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			return fmt.Errorf("%s: container name %q is invalid: %s", Annotation, name, strings.Join(errs, "; "))
		}
		devs := a[name]
		if len(devs) == 0 {
			return fmt.Errorf("%s: container %q has no devices", Annotation, name)
		}
		seen := make(map[string]bool, len(devs))
		for _, d := range devs {
			if strings.TrimSpace(d.UUID) == "" {
				return fmt.Errorf("%s: container %q has a device without uuid", Annotation, name)
			}
			if d.Percent < 1 || d.Percent > 100 {
				return fmt.Errorf("%s: container %q has %d%% of %s; percent must be 1-100", Annotation, name, d.Percent, d.UUID)
			}
			if seen[d.UUID] {
				return fmt.Errorf("%s: container %q names device %s twice", Annotation, name, d.UUID)
			}
			seen[d.UUID] = true
		}
	}
	return nil
}

// Containers returns the container names, sorted.
func (a Assignment) Containers() []string {
	names := make([]string, 0, len(a))
	for n := range a {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// String encodes the assignment as the annotation value. Keys come out
// sorted, so equal assignments encode to equal strings.
func (a Assignment) String() string {
	b, err := json.Marshal(map[string][]Device(a))
	if err != nil {
		// A map of strings to plain structs always marshals.
		panic(err)
	}
	return string(b)
}
