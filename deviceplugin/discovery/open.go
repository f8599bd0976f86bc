package discovery

import (
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"
)

// defaultLibraryName is what NVML is loaded as when no path is given; it is
// only used to make error messages say what was looked for.
const defaultLibraryName = "libnvidia-ml.so.1"

// Open loads and initialises the real NVML library. An empty libraryPath
// means the system's libnvidia-ml.so.1 (found through the dynamic loader's
// search path).
//
// On success it returns the library and a close function that shuts NVML
// down; close is safe to call more than once and logs, rather than returns,
// a failed shutdown because there is nothing useful a caller could do then.
//
// On a node without the NVIDIA driver the error says "NVML library not found"
// and wraps nvml.ERROR_LIBRARY_NOT_FOUND, so that a caller can tell with
// errors.Is that this node simply has no GPUs, print that one line, and carry
// on with an empty inventory. Other failures wrap the nvml.Return as well.
func Open(libraryPath string) (nvml.Interface, func(), error) {
	name := libraryPath
	var opts []nvml.LibraryOption
	if libraryPath != "" {
		opts = append(opts, nvml.WithLibraryPath(libraryPath))
	} else {
		name = defaultLibraryName
	}

	lib := nvml.New(opts...)
	switch ret := lib.Init(); ret {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return nil, nil, fmt.Errorf("NVML library not found (%s could not be loaded; is the NVIDIA driver installed and its libraries visible to this container?): %w", name, ret)
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return nil, nil, fmt.Errorf("NVML found (%s) but the NVIDIA kernel driver is not loaded: %w", name, ret)
	case nvml.ERROR_NO_PERMISSION:
		return nil, nil, fmt.Errorf("NVML found (%s) but this process may not open the NVIDIA devices: %w", name, ret)
	default:
		return nil, nil, fmt.Errorf("initialising NVML (%s): %w", name, ret)
	}

	var once sync.Once
	closeFn := func() {
		once.Do(func() {
			if ret := lib.Shutdown(); ret != nvml.SUCCESS {
				klog.Background().Error(ret, "Shutting down NVML failed", "library", name)
			}
		})
	}
	return lib, closeFn, nil
}
