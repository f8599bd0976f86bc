package gpucache

import (
	v1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
)

func gpuNodeRef(gn *v1alpha1.GPUNode) *v1.ObjectReference {
	return &v1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "GPUNode", Name: gn.Name, UID: gn.UID}
}

// maxNote is the longest note EventNote returns.
const maxNote = 1000

// EventNote shortens s, where needed, to a note the events API accepts
// (under 1 kB).
func EventNote(s string) string {
	if len(s) <= maxNote {
		return s
	}
	return s[:maxNote-3] + "..."
}
