package metrics

import (
	"strings"
	"testing"

	"k8s.io/component-base/metrics/testutil"
)

func TestGPUGauges(t *testing.T) {
	unset := SetGPUSource("node-a", func() []GPU {
		return []GPU{
			{UUID: "GPU-0", Index: 0, Model: "H100", PCIBusID: "00000000:18:00.0", NUMANode: 0, Healthy: true, AllocatedPercent: 100},
			{UUID: "GPU-1", Index: 1, Model: "H100", PCIBusID: "00000000:2A:00.0", NUMANode: -1, Healthy: false, AllocatedPercent: 35},
		}
	})
	want := `
# HELP tessera_device_plugin_gpu_allocated_percent [ALPHA] How much of the GPU the kubelet has given out to containers, in percent (100 when held whole).
# TYPE tessera_device_plugin_gpu_allocated_percent gauge
tessera_device_plugin_gpu_allocated_percent{gpu="GPU-0",node="node-a"} 100
tessera_device_plugin_gpu_allocated_percent{gpu="GPU-1",node="node-a"} 35
# HELP tessera_device_plugin_gpu_healthy [ALPHA] 1 while the GPU is healthy, 0 once the device plugin has seen a critical XID, a double-bit ECC error or lost it.
# TYPE tessera_device_plugin_gpu_healthy gauge
tessera_device_plugin_gpu_healthy{gpu="GPU-0",node="node-a"} 1
tessera_device_plugin_gpu_healthy{gpu="GPU-1",node="node-a"} 0
# HELP tessera_device_plugin_gpu_info [ALPHA] One series per GPU of the node, with its model, index, PCI bus id and NUMA node (-1 when unknown); the value is 1.
# TYPE tessera_device_plugin_gpu_info gauge
tessera_device_plugin_gpu_info{gpu="GPU-0",index="0",model="H100",node="node-a",numa_node="0",pci_bus_id="00000000:18:00.0"} 1
tessera_device_plugin_gpu_info{gpu="GPU-1",index="1",model="H100",node="node-a",numa_node="-1",pci_bus_id="00000000:2A:00.0"} 1
`
	names := []string{"tessera_device_plugin_gpu_info", "tessera_device_plugin_gpu_healthy", "tessera_device_plugin_gpu_allocated_percent"}
	if err := testutil.GatherAndCompare(Registry, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	unset()
	if err := testutil.GatherAndCompare(Registry, strings.NewReader(""), names...); err != nil {
		t.Errorf("after unset: %v", err)
	}
}
