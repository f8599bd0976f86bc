/*
Copyright The Tessera Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Package manifests embeds Tessera's Kubernetes manifests, so that tests and
// programs install exactly the files that are shipped instead of copies.
package manifests

import _ "embed" // for go:embed

// GPUNodeCRD is crd/tessera.io_gpunodes.yaml: the CustomResourceDefinition of
// the tessera.io/v1alpha1 GPUNode resource, as YAML.
//
//go:embed crd/tessera.io_gpunodes.yaml
var GPUNodeCRD []byte

// DevicePluginRBAC is deviceplugin/rbac.yaml: the namespace, service account,
// ClusterRole and binding of tessera-device-plugin.
//
//go:embed deviceplugin/rbac.yaml
var DevicePluginRBAC []byte

// DevicePluginAdmissionPolicy is deviceplugin/admission-policy.yaml: the
// ValidatingAdmissionPolicies that keep each device plugin to its own node.
//
//go:embed deviceplugin/admission-policy.yaml
var DevicePluginAdmissionPolicy []byte

// DevicePluginDaemonSet is deviceplugin/daemonset.yaml.
//
//go:embed deviceplugin/daemonset.yaml
var DevicePluginDaemonSet []byte
