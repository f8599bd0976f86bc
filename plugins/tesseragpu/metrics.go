package tesseragpu

import (
	"context"
	"maps"
	"slices"
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// Metrics are registered with the scheduler's registry, so they appear on
// tessera-scheduler's /metrics endpoint next to kube-scheduler's own.
const metricsSubsystem = "tessera_scheduler"

var (
	placements = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "placements_total",
		Help:           "Pods whose GPUs were reserved, by scoring strategy and request kind (whole, share, mixed).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"strategy", "kind"})
	draPlacements = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "dra_placements_total",
		Help:           "GPU pods placed on nodes that serve their GPUs through DRA (a DeviceClass maps the resource; the DRA allocator picks the devices), by request kind.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"kind"})
	rejections = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "rejections_total",
		Help:           "GPU rejections by reason: per pod for invalid requests, per node evaluated otherwise.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	pruned = metrics.NewCounter(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "prefilter_pruned_nodes_total",
		Help:           "Nodes PreFilter left out of scheduling cycles because their free GPUs cannot hold the pod; Filter and Score never visit them.",
		StabilityLevel: metrics.ALPHA,
	})
	cacheSync = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem:      metricsSubsystem,
		Name:           "cache_rebuild_seconds",
		Help:           "Seconds from plugin start until the GPU cache had rebuilt itself from GPUNodes and pod assignments.",
		StabilityLevel: metrics.ALPHA,
	})

	workloadClasses = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem:      metricsSubsystem,
		Name:           "workload_classes",
		Help:           "Pod shapes the fragmentation strategy scores against: the most common ones in its workload estimate, within coverage.",
		StabilityLevel: metrics.ALPHA,
	})

	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(placements, draPlacements, rejections, pruned, cacheSync, workloadClasses)
		legacyregistry.CustomMustRegister(inventory)
	})
}

// The GPU inventory is exported in aggregate, by model, from counts the
// cache keeps as it changes (gpucache.Cache.Summary). Series per node or per GPU
// would be 60,000 at 5,000 nodes of 8 GPUs: each scrape would sort them all
// (scheduler_perf, which gathers every second, lost a fifth of its CPU to
// that), and every cache change would pay label lookups. Per-GPU detail is
// one command away: kubectl tessera nodes.
var (
	gpusDesc = metrics.NewDesc(metricsSubsystem+"_gpus",
		"GPUs by model and state: free (nothing held), partial (shares held), full, unhealthy.",
		[]string{"model", "state"}, nil, metrics.ALPHA, "")
	allocatedDesc = metrics.NewDesc(metricsSubsystem+"_gpus_allocated",
		"GPUs' worth of capacity held by pods, by model, as the scheduler accounts it (a 40% share counts 0.4).",
		[]string{"model"}, nil, metrics.ALPHA, "")
	fragmentedDesc = metrics.NewDesc(metricsSubsystem+"_gpus_fragmented",
		"GPUs' worth of free capacity on healthy, partly used GPUs, by model: capacity that shares can use but whole-GPU requests cannot.",
		[]string{"model"}, nil, metrics.ALPHA, "")
	gpuNodesDesc = metrics.NewDesc(metricsSubsystem+"_gpu_nodes",
		"Nodes with a GPU inventory, by whether it is trusted: fresh, stale (heartbeat older than inventoryStaleness), or held (pods hold GPUs the cache cannot pin, so none is offered).",
		[]string{"inventory"}, nil, metrics.ALPHA, "")

	inventory = &inventoryCollector{}
)

// inventoryCollector reports the GPU inventory of the scheduler's cache.
// Every TesseraGPU instance (one per profile) keeps a cache of the same
// cluster; the collector reports the oldest live one.
type inventoryCollector struct {
	metrics.BaseStableCollector

	mu     sync.Mutex
	caches []*gpucache.Cache
}

// track reports c until ctx ends.
func (ic *inventoryCollector) track(ctx context.Context, c *gpucache.Cache) {
	ic.mu.Lock()
	ic.caches = append(ic.caches, c)
	ic.mu.Unlock()
	context.AfterFunc(ctx, func() {
		ic.mu.Lock()
		ic.caches = slices.DeleteFunc(ic.caches, func(x *gpucache.Cache) bool { return x == c })
		ic.mu.Unlock()
	})
}

// DescribeWithStability lists the inventory metrics.
func (ic *inventoryCollector) DescribeWithStability(ch chan<- *metrics.Desc) {
	ch <- gpusDesc
	ch <- allocatedDesc
	ch <- fragmentedDesc
	ch <- gpuNodesDesc
}

// CollectWithStability reports the oldest live cache's summary.
func (ic *inventoryCollector) CollectWithStability(ch chan<- metrics.Metric) {
	ic.mu.Lock()
	var c *gpucache.Cache
	if len(ic.caches) > 0 {
		c = ic.caches[0]
	}
	ic.mu.Unlock()
	if c == nil {
		return
	}
	sum := c.Summary()
	for _, m := range slices.Sorted(maps.Keys(sum.Models)) {
		ms := sum.Models[m]
		for i, state := range gpucache.GPUStates {
			ch <- metrics.NewLazyConstMetric(gpusDesc, metrics.GaugeValue, float64(ms.GPUs[i]), m, state)
		}
		ch <- metrics.NewLazyConstMetric(allocatedDesc, metrics.GaugeValue, float64(ms.Units)/device.FullUnits, m)
		ch <- metrics.NewLazyConstMetric(fragmentedDesc, metrics.GaugeValue, float64(ms.GPUs[gpucache.GPUPartial]*device.FullUnits-ms.PartialUnits)/device.FullUnits, m)
	}
	ch <- metrics.NewLazyConstMetric(gpuNodesDesc, metrics.GaugeValue, float64(sum.Fresh), "fresh")
	ch <- metrics.NewLazyConstMetric(gpuNodesDesc, metrics.GaugeValue, float64(sum.Stale), "stale")
	ch <- metrics.NewLazyConstMetric(gpuNodesDesc, metrics.GaugeValue, float64(sum.Held), "held")
}
