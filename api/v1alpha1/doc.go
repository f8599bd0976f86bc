// Package v1alpha1 holds the tessera.io/v1alpha1 API: the GPUNode resource in
// which each node's device plugin publishes its GPU inventory.
//
// +k8s:deepcopy-gen=package
// +groupName=tessera.io
package v1alpha1
