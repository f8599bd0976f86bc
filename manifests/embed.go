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
//
// The Helm chart in charts/tessera is their only source. The files embedded
// here are install/: the chart rendered with its default values (release
// tessera, namespace tessera-system) by `make manifests`, which `make verify`
// and the tests keep in sync with the chart.
package manifests

import (
	"embed"
)

// GPUNodeCRD is install/crd.yaml: the CustomResourceDefinition of the
// tessera.io/v1alpha1 GPUNode resource, as YAML.
//
//go:embed install/crd.yaml
var GPUNodeCRD []byte

// Namespace is install/namespace.yaml: the tessera-system namespace both
// components run in. Apply it before the namespaced objects.
//
//go:embed install/namespace.yaml
var Namespace []byte

// SchedulerRBAC is install/scheduler-rbac.yaml: the service account of
// tessera-scheduler and its bindings and roles.
//
//go:embed install/scheduler-rbac.yaml
var SchedulerRBAC []byte

// AssignmentAdmissionPolicy is install/assignment-admission-policy.yaml: the
// ValidatingAdmissionPolicy that lets only tessera-scheduler and the device
// plugin of a pod's node write its tessera.io/gpu-assignment annotation.
//
//go:embed install/assignment-admission-policy.yaml
var AssignmentAdmissionPolicy []byte

// SchedulerGPUNodePolicy is install/scheduler-gpunode-policy.yaml: the
// ValidatingAdmissionPolicy that lets tessera-scheduler change nothing in a
// GPUNode's status but set its InventoryFresh condition to False.
//
//go:embed install/scheduler-gpunode-policy.yaml
var SchedulerGPUNodePolicy []byte

// SchedulerConfig is install/scheduler-config.yaml: the ConfigMap with
// tessera-scheduler's KubeSchedulerConfiguration.
//
//go:embed install/scheduler-config.yaml
var SchedulerConfig []byte

// SchedulerDeployment is install/scheduler-deployment.yaml.
//
//go:embed install/scheduler-deployment.yaml
var SchedulerDeployment []byte

// DevicePluginRBAC is install/deviceplugin-rbac.yaml: the service account,
// ClusterRole and binding of tessera-device-plugin.
//
//go:embed install/deviceplugin-rbac.yaml
var DevicePluginRBAC []byte

// DevicePluginAdmissionPolicy is install/deviceplugin-admission-policy.yaml:
// the ValidatingAdmissionPolicies that keep each device plugin to its own
// node.
//
//go:embed install/deviceplugin-admission-policy.yaml
var DevicePluginAdmissionPolicy []byte

// DevicePluginDaemonSet is install/deviceplugin-daemonset.yaml.
//
//go:embed install/deviceplugin-daemonset.yaml
var DevicePluginDaemonSet []byte

// Install is the install/ directory: every rendered file and its
// kustomization.yaml.
//
//go:embed install
var Install embed.FS

// Examples is the examples/ directory: example pods for tessera-scheduler.
//
//go:embed examples
var Examples embed.FS
