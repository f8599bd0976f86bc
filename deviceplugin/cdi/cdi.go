// Package cdi names a node's GPUs for the Container Device Interface and,
// for fake machines, writes the CDI spec that lets a container runtime
// resolve those names.
//
// On a real GPU node the NVIDIA Container Toolkit generates the spec
// (nvidia-ctk cdi generate): it knows the driver's device nodes and
// libraries, which the device plugin does not. A fake machine has neither,
// so with --cdi a runtime that resolves CDI names (containerd 2.x, CRI-O)
// would refuse every GPU container for an unknown device. The spec written
// here stands in for the toolkit's: each fake GPU becomes a device node
// backed by /dev/null at the path its real counterpart would have, plus an
// environment variable naming it, so a container shows exactly the devices
// it was given, as it would on a GPU node.
package cdi

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/tessera-gpu/tessera/deviceplugin/discovery"
)

const (
	// Kind is the CDI kind of NVIDIA GPUs, the one nvidia-ctk generates
	// and NVIDIA's device plugin and DRA driver name.
	Kind = "nvidia.com/gpu"
	// FakeSpecFile is the file the fake machine's spec is written to.
	FakeSpecFile = "tessera-fake-gpus.json"
	// FakeEnvPrefix starts the variable each fake GPU adds to a container:
	// TESSERA_CDI_GPU_<index>=<uuid>.
	FakeEnvPrefix = "TESSERA_CDI_GPU_"
	// specVersion is the oldest CDI version with DeviceNode.HostPath,
	// which the fake spec needs; older runtimes read it too.
	specVersion = "0.5.0"
	// fakeBacking is the host device each fake GPU's node points at:
	// present on every Linux host, harmless to open.
	fakeBacking = "/dev/null"
)

// DeviceName is the fully qualified CDI name of the GPU with this UUID, as
// Allocate returns it.
func DeviceName(uuid string) string { return Kind + "=" + uuid }

// DevicePath is where a container finds the device node of the GPU with
// this NVML index, as on a node with NVIDIA's driver.
func DevicePath(index int) string { return "/dev/nvidia" + strconv.Itoa(index) }

// FakeSpec is the CDI spec of a fake machine's GPUs: one device per GPU,
// named by its UUID.
func FakeSpec(inv discovery.Inventory) *cdispec.Spec {
	spec := &cdispec.Spec{Version: specVersion, Kind: Kind, Devices: []cdispec.Device{}}
	for _, g := range inv.GPUs {
		spec.Devices = append(spec.Devices, cdispec.Device{
			Name: g.UUID,
			ContainerEdits: cdispec.ContainerEdits{
				Env:         []string{FakeEnvPrefix + strconv.Itoa(g.Index) + "=" + g.UUID},
				DeviceNodes: []*cdispec.DeviceNode{{Path: DevicePath(g.Index), HostPath: fakeBacking}},
			},
		})
	}
	return spec
}

// WriteFakeSpec writes the fake machine's spec into dir, replacing the file
// in one rename so that a runtime scanning the directory never reads half
// of it. It returns the file's path.
func WriteFakeSpec(dir string, inv discovery.Inventory) (string, error) {
	data, err := json.MarshalIndent(FakeSpec(inv), "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("CDI spec directory: %w", err)
	}
	path := filepath.Join(dir, FakeSpecFile)
	tmp, err := os.CreateTemp(dir, "."+FakeSpecFile+".*")
	if err != nil {
		return "", fmt.Errorf("writing the CDI spec: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("writing the CDI spec: %w", err)
	}
	// Runtimes read the spec as any user; CreateTemp made it 0600.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", fmt.Errorf("writing the CDI spec: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("writing the CDI spec: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("writing the CDI spec: %w", err)
	}
	return path, nil
}
