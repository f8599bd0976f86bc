package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// GPUNode is the GPU inventory of one node. It is cluster-scoped, named after
// the node, and its status is written only by that node's device plugin.
// Allocation is deliberately absent: the scheduler derives it from the pods
// bound to the node, so there is nothing to contend on and nothing to drift.
type GPUNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec holds what administrators set on the node's GPUs.
	// +optional
	Spec GPUNodeSpec `json:"spec,omitempty"`
	// Status is the inventory observed by the node's device plugin.
	// +optional
	Status GPUNodeStatus `json:"status,omitempty"`
}

// GPUNodeSpec holds administrator intent for the node's GPUs.
type GPUNodeSpec struct {
	// DeviceTaints are taints an administrator puts on single GPUs, for
	// example to drain one for maintenance. They add to the taints the device
	// plugin reports in status.
	// +optional
	// +listType=atomic
	DeviceTaints []GPUDeviceTaint `json:"deviceTaints,omitempty"`
}

// GPUDeviceTaint is an administrator's taint on the GPU with the given UUID.
type GPUDeviceTaint struct {
	// UUID names the GPU.
	UUID string `json:"uuid"`
	// Taint is the taint to apply to it.
	DeviceTaint `json:",inline"`
}

// GPUNodeStatus is the inventory a device plugin publishes for its node.
type GPUNodeStatus struct {
	// DriverVersion is the NVIDIA driver version, e.g. "550.54.15".
	// +optional
	DriverVersion string `json:"driverVersion,omitempty"`
	// CUDADriverVersion is the CUDA driver API version as NVML reports it,
	// e.g. 12040 for CUDA 12.4.
	// +optional
	CUDADriverVersion int32 `json:"cudaDriverVersion,omitempty"`
	// HeartbeatTime is when the device plugin last confirmed this inventory.
	// An inventory whose heartbeat is older than the scheduler's staleness
	// bound is treated as unknown.
	// +optional
	HeartbeatTime *metav1.Time `json:"heartbeatTime,omitempty"`
	// GPUs lists the node's GPUs.
	// +optional
	// +listType=atomic
	GPUs []GPU `json:"gpus,omitempty"`
	// GPUCount is len(GPUs), kept so that `kubectl get gpunodes` can show it.
	// +optional
	GPUCount int32 `json:"gpuCount,omitempty"`
	// HealthyCount is the number of healthy GPUs, for printer columns.
	// +optional
	HealthyCount int32 `json:"healthyCount,omitempty"`
	// Models is a comma-separated list of the distinct GPU models, for
	// printer columns.
	// +optional
	Models string `json:"models,omitempty"`
	// Conditions are InventoryFresh and AllGPUsHealthy, for `kubectl wait`
	// and health checks. The device plugin sets both with every heartbeat;
	// tessera-scheduler sets InventoryFresh to False when the heartbeat
	// stops, since a dead plugin cannot.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types and reasons of a GPUNode.
const (
	// ConditionInventoryFresh is True while the device plugin's heartbeat
	// is current, and False once tessera-scheduler has seen none for its
	// staleness bound (it then places no GPU pods on the node).
	ConditionInventoryFresh = "InventoryFresh"
	// ConditionAllGPUsHealthy is True when the node has GPUs and every one
	// is healthy.
	ConditionAllGPUsHealthy = "AllGPUsHealthy"

	// ReasonHeartbeat: the device plugin has just confirmed the inventory.
	ReasonHeartbeat = "Heartbeat"
	// ReasonHeartbeatStale: no heartbeat for the scheduler's staleness
	// bound.
	ReasonHeartbeatStale = "HeartbeatStale"
	// ReasonAllHealthy: every GPU is healthy.
	ReasonAllHealthy = "AllHealthy"
	// ReasonGPUsUnhealthy: at least one GPU is not.
	ReasonGPUsUnhealthy = "GPUsUnhealthy"
	// ReasonNoGPUs: the device plugin found no GPUs.
	ReasonNoGPUs = "NoGPUs"
)

// GPU describes one physical GPU.
type GPU struct {
	// UUID is the NVML UUID, e.g. "GPU-8c0e6f3a-...". It is the device ID
	// advertised to the kubelet.
	UUID string `json:"uuid"`
	// Index is the NVML device index.
	Index int32 `json:"index"`
	// Model is the NVML product name, verbatim.
	Model string `json:"model"`
	// MemoryMiB is the total framebuffer memory.
	MemoryMiB int64 `json:"memoryMiB"`
	// ComputeCapability is "major.minor", e.g. "9.0".
	// +optional
	ComputeCapability string `json:"computeCapability,omitempty"`
	// NUMANode is the NUMA node the GPU is attached to; -1 when unknown.
	// +optional
	NUMANode int32 `json:"numaNode"`
	// PCIBusID is the PCI bus id, e.g. "00000000:18:00.0".
	// +optional
	PCIBusID string `json:"pciBusID,omitempty"`
	// NVLinkPeers lists the UUIDs of GPUs this one reaches over NVLink.
	// +optional
	// +listType=atomic
	NVLinkPeers []string `json:"nvlinkPeers,omitempty"`
	// Health is the device plugin's view of the GPU's health.
	Health GPUHealth `json:"health"`
	// Taints are device taints set by the device plugin, such as
	// tessera.io/xid=79:NoSchedule after a critical XID.
	// +optional
	// +listType=atomic
	Taints []DeviceTaint `json:"taints,omitempty"`
}

// GPUHealth is the health of one GPU.
type GPUHealth struct {
	// Healthy is false once the device plugin has seen a critical error.
	Healthy bool `json:"healthy"`
	// Reason says why the GPU is unhealthy, e.g. "XID 79".
	// +optional
	Reason string `json:"reason,omitempty"`
	// Since is when the GPU entered its current health state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// DeviceTaint is a taint on a single device. Pods tolerate it with their
// ordinary tolerations, with the same semantics as node taints.
type DeviceTaint struct {
	// Key is the taint key.
	Key string `json:"key"`
	// Value is the taint value.
	// +optional
	Value string `json:"value,omitempty"`
	// Effect is NoSchedule, PreferNoSchedule or NoExecute.
	Effect corev1.TaintEffect `json:"effect"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// GPUNodeList is a list of GPUNodes.
type GPUNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the GPUNodes.
	Items []GPUNode `json:"items"`
}
