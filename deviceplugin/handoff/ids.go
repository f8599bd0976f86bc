package handoff

import (
	"fmt"
	"strconv"
	"strings"
)

// Resource names the two kubelet resources Tessera's device plugin serves.
type Resource string

const (
	// Whole is nvidia.com/gpu: one device ID per GPU, the GPU's UUID.
	Whole Resource = "nvidia.com/gpu"
	// Percent is tessera.io/gpu-percent: 100 device IDs per GPU, one per
	// percent of the GPU.
	Percent Resource = "tessera.io/gpu-percent"
)

// PercentIDs is how many percent device IDs each GPU advertises.
const PercentIDs = 100

// percentSep joins a GPU UUID and a unit number in a percent device ID. It
// keeps IDs well under the kubelet's 63-character limit (40 + 2 + 2).
const percentSep = "::"

// PercentID is the device ID of unit n (0..99) of the GPU.
func PercentID(uuid string, n int) string { return fmt.Sprintf("%s%s%02d", uuid, percentSep, n) }

// ParsePercentID splits a percent device ID into the GPU UUID and the unit.
func ParsePercentID(id string) (uuid string, n int, ok bool) {
	i := strings.LastIndex(id, percentSep)
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(id[i+len(percentSep):])
	if err != nil || n < 0 || n >= PercentIDs {
		return "", 0, false
	}
	return id[:i], n, true
}
