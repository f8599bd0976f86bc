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

package manifests

import (
	"bytes"
	"testing"
)

// The schema itself is tested in api/v1alpha1, the rendering against the
// chart and an apiserver in test/integration; this only checks the embeds.
func TestEmbedded(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want []string
	}{
		{"GPUNodeCRD", GPUNodeCRD, []string{"kind: CustomResourceDefinition", "name: gpunodes.tessera.io"}},
		{"Namespace", Namespace, []string{"kind: Namespace", "name: tessera-system"}},
		{"SchedulerRBAC", SchedulerRBAC, []string{"kind: ServiceAccount", "name: system:kube-scheduler"}},
		{"SchedulerConfig", SchedulerConfig, []string{"kind: ConfigMap", "kind: KubeSchedulerConfiguration"}},
		{"SchedulerDeployment", SchedulerDeployment, []string{"kind: Deployment", "name: tessera-scheduler"}},
		{"DevicePluginRBAC", DevicePluginRBAC, []string{"kind: ServiceAccount", "name: tessera-device-plugin"}},
		{"DevicePluginAdmissionPolicy", DevicePluginAdmissionPolicy, []string{"kind: ValidatingAdmissionPolicy",
			"system:serviceaccount:tessera-system:tessera-device-plugin"}},
		{"DevicePluginDaemonSet", DevicePluginDaemonSet, []string{"kind: DaemonSet", "name: tessera-device-plugin"}},
	} {
		for _, want := range tc.want {
			if !bytes.Contains(tc.data, []byte(want)) {
				t.Errorf("%s does not contain %q", tc.name, want)
			}
		}
	}
}
