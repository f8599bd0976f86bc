// Package discovery finds a node's GPUs through NVML and describes them in
// the terms of Tessera's GPUNode inventory: identity, model, memory, compute
// capability, NUMA node, PCI bus id and NVLink peers.
package discovery

// GPU is one physical GPU as NVML reports it.
type GPU struct {
	// UUID is the NVML UUID, e.g. "GPU-8c0e6f3a-...".
	UUID string
	// Index is the NVML device index.
	Index int
	// Model is the NVML product name, verbatim.
	Model string
	// MemoryMiB is the total framebuffer memory.
	MemoryMiB int64
	// ComputeCapability is "major.minor".
	ComputeCapability string
	// NUMANode is the NUMA node of the GPU, -1 when NVML cannot tell.
	NUMANode int
	// PCIBusID is the PCI bus id with an 8-digit domain, e.g.
	// "00000000:18:00.0".
	PCIBusID string
	// NVLinkPeers are the UUIDs of the GPUs reachable over an active
	// NVLink, sorted.
	NVLinkPeers []string
}

// Inventory is everything discovery found on the node.
type Inventory struct {
	// DriverVersion is the driver version, e.g. "550.54.15".
	DriverVersion string
	// CUDADriverVersion is the CUDA driver API version, e.g. 12040.
	CUDADriverVersion int
	// GPUs are the GPUs in index order.
	GPUs []GPU
}
