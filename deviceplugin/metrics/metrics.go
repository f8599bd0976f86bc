// Package metrics holds tessera-device-plugin's Prometheus metrics and the
// HTTP endpoint that serves them.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/klog/v2"
)

const subsystem = "tessera_device_plugin"

var (
	// HealthTransitions counts GPUs turning unhealthy or healthy again.
	HealthTransitions = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "gpu_health_transitions_total", StabilityLevel: metrics.ALPHA,
		Help: "GPU health changes, by GPU and the health entered (true or false).",
	}, []string{"gpu", "healthy"})
	// XIDs counts critical XID events, by GPU and XID.
	XIDs = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "xid_events_total", StabilityLevel: metrics.ALPHA,
		Help: "Critical XID events that made a GPU unhealthy, by GPU and XID.",
	}, []string{"gpu", "xid"})
	// AllocateDuration times the kubelet's Allocate calls.
	AllocateDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Subsystem: subsystem, Name: "allocate_duration_seconds", StabilityLevel: metrics.ALPHA,
		Help:    "Time to answer the kubelet's Allocate, by resource.",
		Buckets: metrics.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"resource"})
	// Corrections counts assignment annotations rewritten to the kubelet's
	// truth.
	Corrections = metrics.NewCounter(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "assignment_corrections_total", StabilityLevel: metrics.ALPHA,
		Help: "tessera.io/gpu-assignment annotations rewritten to what the kubelet allocated.",
	})

	// Unmatched counts GetPreferredAllocation requests answered without a
	// pod's assignment while pods waited: the container may get other GPUs
	// than its pod's annotation says.
	Unmatched = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "unmatched_preferences_total", StabilityLevel: metrics.ALPHA,
		Help: "Preferred allocations chosen without a waiting pod's assignment, which none fitted, by resource.",
	}, []string{"resource"})

	// Registry holds the metrics above.
	Registry = metrics.NewKubeRegistry()
)

func init() {
	Registry.MustRegister(HealthTransitions, XIDs, AllocateDuration, Corrections, Unmatched)
}

// Serve serves /metrics and /healthz, and the extra handlers by path, on
// addr until ctx ends. An empty addr or "0" disables it.
func Serve(ctx context.Context, addr string, extra map[string]http.Handler) error {
	if addr == "" || addr == "0" {
		return nil
	}
	mux := http.NewServeMux()
	for path, h := range extra {
		mux.Handle(path, h)
	}
	mux.Handle("/metrics", metrics.HandlerFor(Registry, metrics.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	klog.FromContext(ctx).Info("Serving metrics", "address", addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
