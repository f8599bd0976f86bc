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

// The schema itself is tested in api/v1alpha1; this only checks the embed.
func TestGPUNodeCRDEmbedded(t *testing.T) {
	for _, want := range []string{"kind: CustomResourceDefinition", "name: gpunodes.tessera.io"} {
		if !bytes.Contains(GPUNodeCRD, []byte(want)) {
			t.Errorf("GPUNodeCRD does not contain %q", want)
		}
	}
}
