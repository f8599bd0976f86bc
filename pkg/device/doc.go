// Package device is Tessera's vendor-neutral device model: a node's devices
// (identity, attributes, a shareable capacity, health, taints and topology
// links), what a pod asks of them, and the placement arithmetic that decides
// whether and where a request fits.
//
// Nothing here knows about NVIDIA, NVML or resource names; backends translate
// their inventory into an Inventory and their pod requests into a Request.
// The hot-path functions (Fits, Usable) do not allocate, because the scheduler
// calls them once per node per pod.
package device
