package tesseragpu

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// Metrics are registered with the scheduler's registry, so they appear on
// tessera-scheduler's /metrics endpoint next to kube-scheduler's own.
const metricsSubsystem = "tessera_scheduler"

var (
	gpuAllocated = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Subsystem:      metricsSubsystem,
		Name:           "gpu_allocated_percent",
		Help:           "Percent of each GPU held by pods, as the scheduler accounts it (100 for a whole GPU).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"node", "gpu"})
	nodeGPUs = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Subsystem:      metricsSubsystem,
		Name:           "node_gpus",
		Help:           "GPUs per node by state: free (nothing held), partial (shares), full, unhealthy.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"node", "state"})
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
		Help:           "Pod shapes in the fragmentation strategy's current workload estimate.",
		StabilityLevel: metrics.ALPHA,
	})

	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(gpuAllocated, nodeGPUs, placements, rejections, cacheSync, workloadClasses)
	})
}

// recordNode publishes a node's GPU gauges from its state.
func recordNode(name string, st *nodeState) {
	if !nodeGPUs.IsCreated() {
		return // not registered: the plugin runs outside a scheduler (tests)
	}
	if st == nil || st.inv == nil {
		nodeGPUs.DeletePartialMatch(map[string]string{"node": name})
		gpuAllocated.DeletePartialMatch(map[string]string{"node": name})
		return
	}
	var free, partial, full, sick int
	for i := range st.inv.Devices {
		d := &st.inv.Devices[i]
		used := st.used[i]
		if st.unknown > 0 {
			used = 100
		}
		gpuAllocated.WithLabelValues(name, d.ID).Set(float64(used))
		switch {
		case !d.Healthy:
			sick++
		case used == 0:
			free++
		case used >= 100:
			full++
		default:
			partial++
		}
	}
	nodeGPUs.WithLabelValues(name, "free").Set(float64(free))
	nodeGPUs.WithLabelValues(name, "partial").Set(float64(partial))
	nodeGPUs.WithLabelValues(name, "full").Set(float64(full))
	nodeGPUs.WithLabelValues(name, "unhealthy").Set(float64(sick))
}
