package tesseragpu

import (
	"context"
	"maps"
	"slices"
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/tessera-gpu/tessera/pkg/device"
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
	rejections = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "rejections_total",
		Help:           "GPU rejections by reason: per pod for invalid requests, per node evaluated otherwise.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
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
		legacyregistry.MustRegister(placements, rejections, cacheSync, workloadClasses)
		legacyregistry.CustomMustRegister(inventory)
	})
}

// The GPU inventory is exported in aggregate, by model, from counts the
// cache keeps as it changes (gpuCache.summary). Series per node or per GPU
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
	caches []*gpuCache
}

// track reports c until ctx ends.
func (ic *inventoryCollector) track(ctx context.Context, c *gpuCache) {
	ic.mu.Lock()
	ic.caches = append(ic.caches, c)
	ic.mu.Unlock()
	context.AfterFunc(ctx, func() {
		ic.mu.Lock()
		ic.caches = slices.DeleteFunc(ic.caches, func(x *gpuCache) bool { return x == c })
		ic.mu.Unlock()
	})
}

func (ic *inventoryCollector) DescribeWithStability(ch chan<- *metrics.Desc) {
	ch <- gpusDesc
	ch <- allocatedDesc
	ch <- fragmentedDesc
	ch <- gpuNodesDesc
}

func (ic *inventoryCollector) CollectWithStability(ch chan<- metrics.Metric) {
	ic.mu.Lock()
	var c *gpuCache
	if len(ic.caches) > 0 {
		c = ic.caches[0]
	}
	ic.mu.Unlock()
	if c == nil {
		return
	}
	sum := c.summary()
	for _, m := range slices.Sorted(maps.Keys(sum.models)) {
		ms := sum.models[m]
		for i, state := range gpuStates {
			ch <- metrics.NewLazyConstMetric(gpusDesc, metrics.GaugeValue, float64(ms.gpus[i]), m, state)
		}
		ch <- metrics.NewLazyConstMetric(allocatedDesc, metrics.GaugeValue, float64(ms.units)/device.FullUnits, m)
		ch <- metrics.NewLazyConstMetric(fragmentedDesc, metrics.GaugeValue, float64(ms.gpus[gpuPartial]*device.FullUnits-ms.partialUnits)/device.FullUnits, m)
	}
	ch <- metrics.NewLazyConstMetric(gpuNodesDesc, metrics.GaugeValue, float64(sum.fresh), "fresh")
	ch <- metrics.NewLazyConstMetric(gpuNodesDesc, metrics.GaugeValue, float64(sum.stale), "stale")
	ch <- metrics.NewLazyConstMetric(gpuNodesDesc, metrics.GaugeValue, float64(sum.held), "held")
}

// The states of a GPU in tessera_scheduler_gpus, as indexes of
// modelSummary.gpus and gpuStates.
const (
	gpuFree = iota
	gpuPartial
	gpuFull
	gpuUnhealthy
)

var gpuStates = [...]string{gpuFree: "free", gpuPartial: "partial", gpuFull: "full", gpuUnhealthy: "unhealthy"}

type modelSummary struct {
	gpus  [len(gpuStates)]int
	units int
	// partialUnits are the units used on the GPUs counted partial.
	partialUnits int
}

// inventorySummary counts a cache's GPUs by model and state, and its GPU
// nodes by trust.
type inventorySummary struct {
	models             map[string]*modelSummary
	fresh, stale, held int
}

// count adds (sign 1) or takes away (sign -1) what one node's state
// contributes: its node under held, stale or fresh, and each device under
// its model and state. A node whose pods hold GPUs the cache cannot pin
// counts as all in use, as Filter treats it. A model left with no devices
// is dropped, so that it stops being reported.
func (sum *inventorySummary) count(st *nodeState, stale bool, sign int) {
	if st == nil || st.inv == nil {
		return
	}
	switch {
	case st.unknown > 0:
		sum.held += sign
	case stale:
		sum.stale += sign
	default:
		sum.fresh += sign
	}
	for i := range st.inv.Devices {
		d := &st.inv.Devices[i]
		ms := sum.models[d.Model]
		if ms == nil {
			ms = &modelSummary{}
			sum.models[d.Model] = ms
		}
		used := st.used[i]
		if st.unknown > 0 {
			used = device.FullUnits
		}
		used = min(used, device.FullUnits)
		ms.units += sign * used
		switch {
		case !d.Healthy:
			ms.gpus[gpuUnhealthy] += sign
		case used == 0:
			ms.gpus[gpuFree] += sign
		case used == device.FullUnits:
			ms.gpus[gpuFull] += sign
		default:
			ms.gpus[gpuPartial] += sign
			ms.partialUnits += sign * used
		}
		if ms.gpus == [len(gpuStates)]int{} {
			delete(sum.models, d.Model)
		}
	}
}

// clone returns a copy that shares nothing with sum.
func (sum *inventorySummary) clone() inventorySummary {
	out := *sum
	out.models = make(map[string]*modelSummary, len(sum.models))
	for m, ms := range sum.models {
		c := *ms
		out.models[m] = &c
	}
	return out
}

// summary returns the cache's GPUs by model and state. The cache keeps the
// counts up to date as it publishes node states (publishLocked,
// setStaleLocked), so a scrape costs a copy of a few models' counters
// rather than a walk over every node: on 5,000 nodes that walk took 1.7 %
// of the scheduler's CPU under scheduler_perf, which gathers every second.
func (c *gpuCache) summary() inventorySummary {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tally.clone()
}
