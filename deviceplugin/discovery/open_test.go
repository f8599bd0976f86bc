package discovery_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tessera-gpu/tessera/deviceplugin/discovery"
)

func TestOpenMissingLibrary(t *testing.T) {
	lib, closeFn, err := discovery.Open("/nonexistent/libnvidia-ml.so.1")
	if err == nil {
		closeFn()
		t.Fatalf("Open of a missing library succeeded (lib %T)", lib)
	}
	if !strings.Contains(err.Error(), "NVML library not found") {
		t.Errorf("error %q does not say \"NVML library not found\"", err)
	}
	if !errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) {
		t.Errorf("error %q does not wrap ERROR_LIBRARY_NOT_FOUND", err)
	}
	if lib != nil || closeFn != nil {
		t.Errorf("Open returned a library or close function with an error")
	}
}

// TestOpenSystemLibrary passes on both kinds of machine: without a driver it
// checks the error, with one it runs discovery on the real GPUs.
func TestOpenSystemLibrary(t *testing.T) {
	lib, closeFn, err := discovery.Open("")
	if err != nil {
		if !errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) {
			t.Fatalf("Open(\"\"): %v", err)
		}
		t.Logf("no NVML on this machine: %v", err)
		return
	}
	defer closeFn()
	defer closeFn() // close is idempotent

	inv, err := discovery.Discover(lib)
	if err != nil {
		t.Fatalf("Discover on the real library: %v", err)
	}
	t.Logf("driver %s, CUDA %d, %d GPUs", inv.DriverVersion, inv.CUDADriverVersion, len(inv.GPUs))
	for _, g := range inv.GPUs {
		t.Logf("%+v", g)
		if !uuidFormat.MatchString(g.UUID) {
			t.Errorf("GPU %d UUID %q does not match the expected format", g.Index, g.UUID)
		}
		if norm, err := discovery.NormalizePCIBusID(g.PCIBusID); err != nil || norm != g.PCIBusID {
			t.Errorf("GPU %d bus id %q is not canonical (%q, %v)", g.Index, g.PCIBusID, norm, err)
		}
		if g.MemoryMiB <= 0 || g.Model == "" || g.ComputeCapability == "" {
			t.Errorf("GPU %d is incomplete: %+v", g.Index, g)
		}
	}
}
