package cdi

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/tessera-gpu/tessera/deviceplugin/discovery"
	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
)

func TestWriteFakeSpec(t *testing.T) {
	m, err := fakegpu.New("dgxa100", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := discovery.Discover(m)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cdi")
	path, err := WriteFakeSpec(dir, inv)
	if err != nil {
		t.Fatal(err)
	}
	// Written twice, the file is replaced and nothing else is left in the
	// directory the runtime scans.
	if _, err := WriteFakeSpec(dir, inv); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != FakeSpecFile {
		t.Errorf("directory holds %v, want only %s", entries, FakeSpecFile)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got cdispec.Spec
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := cdispec.Spec{Version: "0.5.0", Kind: "nvidia.com/gpu"}
	for i, g := range inv.GPUs {
		if g.Index != i {
			t.Fatalf("GPU %s has index %d at position %d", g.UUID, g.Index, i)
		}
		want.Devices = append(want.Devices, cdispec.Device{
			Name: g.UUID,
			ContainerEdits: cdispec.ContainerEdits{
				Env:         []string{"TESSERA_CDI_GPU_" + strconv.Itoa(i) + "=" + g.UUID},
				DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/nvidia" + strconv.Itoa(i), HostPath: "/dev/null"}},
			},
		})
	}
	if len(want.Devices) != 8 {
		t.Fatalf("the fake machine has %d GPUs, want 8", len(want.Devices))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	// The names Allocate returns are the spec's devices.
	for _, d := range got.Devices {
		if DeviceName(d.Name) != got.Kind+"="+d.Name {
			t.Errorf("DeviceName(%s) = %s", d.Name, DeviceName(d.Name))
		}
	}
}

func TestWriteFakeSpecReportsAnUnwritableDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteFakeSpec(filepath.Join(file, "cdi"), discovery.Inventory{}); err == nil {
		t.Error("writing under a regular file succeeded")
	}
}
