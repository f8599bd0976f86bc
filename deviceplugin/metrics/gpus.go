package metrics

import (
	"strconv"
	"sync"

	"k8s.io/component-base/metrics"
)

// GPU is one GPU as the per-GPU gauges report it.
type GPU struct {
	UUID     string
	Index    int
	Model    string
	PCIBusID string
	NUMANode int
	Healthy  bool
	// AllocatedPercent is how much of the GPU the kubelet has given out:
	// 100 when held whole.
	AllocatedPercent int
}

// Per-GPU series are few on one node (eight or so GPUs), so unlike the
// scheduler's cluster-wide inventory they are exported one per GPU, with
// the node's name, so that dashboards need no relabelling.
var (
	gpuInfoDesc = metrics.NewDesc(subsystem+"_gpu_info",
		"One series per GPU of the node, with its model, index, PCI bus id and NUMA node (-1 when unknown); the value is 1.",
		[]string{"node", "gpu", "index", "model", "pci_bus_id", "numa_node"}, nil, metrics.ALPHA, "")
	gpuHealthyDesc = metrics.NewDesc(subsystem+"_gpu_healthy",
		"1 while the GPU is healthy, 0 once the device plugin has seen a critical XID, a double-bit ECC error or lost it.",
		[]string{"node", "gpu"}, nil, metrics.ALPHA, "")
	gpuAllocatedDesc = metrics.NewDesc(subsystem+"_gpu_allocated_percent",
		"How much of the GPU the kubelet has given out to containers, in percent (100 when held whole).",
		[]string{"node", "gpu"}, nil, metrics.ALPHA, "")

	gpus = &gpuCollector{}
)

func init() {
	Registry.CustomMustRegister(gpus)
}

// SetGPUSource makes the per-GPU gauges report node's GPUs as source
// returns them at each scrape, until the returned function is called.
func SetGPUSource(node string, source func() []GPU) (unset func()) {
	gpus.mu.Lock()
	defer gpus.mu.Unlock()
	token := new(int)
	gpus.node, gpus.source, gpus.token = node, source, token
	return func() {
		gpus.mu.Lock()
		defer gpus.mu.Unlock()
		if gpus.token == token {
			gpus.node, gpus.source, gpus.token = "", nil, nil
		}
	}
}

type gpuCollector struct {
	metrics.BaseStableCollector

	mu     sync.Mutex
	node   string
	source func() []GPU
	token  *int
}

func (c *gpuCollector) DescribeWithStability(ch chan<- *metrics.Desc) {
	ch <- gpuInfoDesc
	ch <- gpuHealthyDesc
	ch <- gpuAllocatedDesc
}

func (c *gpuCollector) CollectWithStability(ch chan<- metrics.Metric) {
	c.mu.Lock()
	node, source := c.node, c.source
	c.mu.Unlock()
	if source == nil {
		return
	}
	for _, g := range source() {
		ch <- metrics.NewLazyConstMetric(gpuInfoDesc, metrics.GaugeValue, 1,
			node, g.UUID, strconv.Itoa(g.Index), g.Model, g.PCIBusID, strconv.Itoa(g.NUMANode))
		healthy := 0.0
		if g.Healthy {
			healthy = 1
		}
		ch <- metrics.NewLazyConstMetric(gpuHealthyDesc, metrics.GaugeValue, healthy, node, g.UUID)
		ch <- metrics.NewLazyConstMetric(gpuAllocatedDesc, metrics.GaugeValue, float64(g.AllocatedPercent), node, g.UUID)
	}
}
