//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/deviceplugin/cdi"
)

// TestCDIDevicesAreTheAssignment turns devicePlugin.cdi on with helm
// upgrade. The device plugin then names each container's GPUs as CDI
// devices, writes the spec of its fake GPUs into the node's /var/run/cdi,
// and containerd 2.x resolves the names from it: every container of a
// whole, a multi-GPU and a fractional pod gets exactly the device nodes
// /dev/nvidia<index> and the variables of its tessera.io/gpu-assignment,
// beside NVIDIA_VISIBLE_DEVICES. Turning CDI off again is part of the test.
func TestCDIDevicesAreTheAssignment(t *testing.T) {
	saveTesseraLogs(t)
	ctx := t.Context()
	helmSetCDI(t, true)
	t.Cleanup(func() { helmSetCDI(t, false) })
	ns := testNamespace(t)

	// The spec the plugin wrote, on the node's own /var/run/cdi.
	var node string
	for _, n := range cluster.Nodes {
		if n.Name == gpuNode {
			node = n.Dir
		}
	}
	data, err := os.ReadFile(filepath.Join(node, "cdi", cdi.FakeSpecFile))
	if err != nil {
		t.Fatalf("the device plugin wrote no CDI spec on %s: %v", gpuNode, err)
	}
	var spec cdispec.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatalf("CDI spec: %v\n%s", err, data)
	}
	index := gpuIndexes(t)
	var named []string
	for _, d := range spec.Devices {
		named = append(named, d.Name)
	}
	var inventory []string
	for u := range index {
		inventory = append(inventory, u)
	}
	sort.Strings(named)
	sort.Strings(inventory)
	if spec.Kind != cdi.Kind || !cmp.Equal(named, inventory) {
		t.Fatalf("CDI spec of kind %q names %v, the GPUNode lists %v", spec.Kind, named, inventory)
	}

	var devices []string
	for i := range len(index) {
		devices = append(devices, cdi.DevicePath(i))
	}
	pods := map[string]v1.ResourceList{"whole": gpus(1), "multi": gpus(4), "fractional": percent(25)}
	for name, res := range pods {
		if _, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, sleeperPod(name, res, devices...), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for name := range pods {
		p := waitRunning(t, ns, name)
		want := assigned(t, p)["main"]
		out := outputOf(t, ns, name, "main")
		// What CDI added: a device node and a variable per GPU.
		wantEnv, gotEnv := map[string]string{}, map[string]string{}
		wantDevices, gotDevices := map[string]bool{}, map[string]bool{}
		for u := range want {
			wantEnv[cdi.FakeEnvPrefix+strconv.Itoa(index[u])] = u
			wantDevices[cdi.DevicePath(index[u])] = true
		}
		for k, v := range out.env {
			if strings.HasPrefix(k, cdi.FakeEnvPrefix) {
				gotEnv[k] = v
			}
		}
		for _, d := range devices {
			// The sleeper prints "file PATH ERROR ..." for a path it
			// cannot read, and the (empty) content of one it can.
			if c, ok := out.files[d]; ok && !strings.HasPrefix(c, "ERROR") {
				gotDevices[d] = true
			}
		}
		if diff := cmp.Diff(wantEnv, gotEnv); diff != "" {
			t.Errorf("%s: CDI variables differ from the assignment %s (-want +got):\n%s", name, want, diff)
		}
		if diff := cmp.Diff(wantDevices, gotDevices); diff != "" {
			t.Errorf("%s: CDI device nodes differ from the assignment %s (-want +got):\n%s", name, want, diff)
		}
		if got := out.env["NVIDIA_VISIBLE_DEVICES"]; got != want.uuids() {
			t.Errorf("%s: NVIDIA_VISIBLE_DEVICES=%q, assignment %s", name, got, want)
		}
	}
}

// helmSetCDI sets devicePlugin.cdi with helm upgrade. --wait returns once
// the restarted device plugin is ready, which it is only when the kubelet
// watches its resources again: a GPU pod created after it is admitted.
func helmSetCDI(t *testing.T, on bool) {
	t.Helper()
	if _, err := shell(context.WithoutCancel(t.Context()), "helm upgrade tessera manifests/charts/tessera -n tessera-system --reuse-values --set devicePlugin.cdi="+strconv.FormatBool(on)+" --wait --timeout 5m"); err != nil {
		t.Fatal(err)
	}
}

// gpuIndexes maps the GPU node's GPUs, by UUID, to their NVML index, from
// its GPUNode.
func gpuIndexes(t *testing.T) map[string]int {
	t.Helper()
	out, err := cluster.Kubectl(t.Context(), "get", "gpunode", gpuNode, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var g v1alpha1.GPUNode
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatal(err)
	}
	index := map[string]int{}
	for _, d := range g.Status.GPUs {
		index[d.UUID] = int(d.Index)
	}
	if len(index) != 8 {
		t.Fatalf("GPUNode %s lists %d GPUs, want 8", gpuNode, len(index))
	}
	return index
}
