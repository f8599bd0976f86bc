package tesseragpu

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/pkg/device"
)

// workloadEstimator keeps the fragmentation strategy's estimate of the
// workload: an exponentially decayed histogram of the pod shapes the
// scheduler has seen, started from the configured seed. Scoring reads an
// immutable snapshot, rebuilt every few pods, so the hot path never takes
// the lock.
type workloadEstimator struct {
	// window is the decay length in pods; 0 means the seed is fixed.
	window float64
	// coverage is the share of weight the kept shapes must cover.
	coverage float64
	// refreshEvery is how many new pods trigger a new snapshot.
	refreshEvery int
	// cpuStarvation is the weight of GPUs stranded for want of CPU.
	cpuStarvation float64

	mu     sync.Mutex
	shapes map[shapeKey]*shapeWeight
	// scale grows by e^(1/window) per pod; a pod adds the current scale,
	// which decays older pods relative to it without touching them.
	scale    float64
	growth   float64
	seen     map[types.UID]struct{}
	ring     []types.UID
	next     int
	observed int
	pending  int

	current atomic.Pointer[estimate]
	// classes is the number of shapes the current snapshot scores against
	// (those within coverage), for metrics.
	classes atomic.Int64
}

type shapeKey struct {
	cpu          int64
	count, units int
	models       string
}

type shapeWeight struct {
	class device.WorkloadClass
	w     float64
}

// maxSeenPods bounds the memory used to count each pod once, however often
// it is retried.
const maxSeenPods = 100000

func newWorkloadEstimator(args *config.FragmentationArgs) *workloadEstimator {
	e := &workloadEstimator{
		window:   float64(args.WindowPods),
		coverage: float64(args.Coverage) / 100,
		shapes:   map[shapeKey]*shapeWeight{},
		scale:    1,
		seen:     map[types.UID]struct{}{},

		cpuStarvation: float64(args.CPUStarvation) / 100,
	}
	if e.window > 0 {
		e.growth = math.Exp(1 / e.window)
		// A snapshot per 1% of the window follows drift closely while
		// keeping rebuilds rare next to scheduling cycles.
		e.refreshEvery = max(1, int(args.WindowPods)/100)
		e.ring = make([]types.UID, min(maxSeenPods, max(1024, 2*int(args.WindowPods))))
	}
	var seedTotal float64
	for _, c := range args.Seed {
		seedTotal += float64(c.Weight)
	}
	for _, c := range args.Seed {
		class := device.WorkloadClass{CPUMilli: c.CPUMilli, Count: int(c.GPUs), Units: int(c.GPUPercent), Models: c.Models}
		if c.GPUs == 0 {
			class.Units = 0
		}
		w := float64(c.Weight)
		if e.window > 0 {
			// The seed is worth SeedPods observed pods.
			w = w / seedTotal * float64(args.SeedPods)
		}
		e.addLocked(class, w)
	}
	e.rebuildLocked()
	return e
}

// estimate is one published snapshot of the workload estimate.
type estimate struct {
	// scored holds the most common shapes, covering the configured share
	// of the weight: the workload that Score rates fragmentation against.
	scored *device.Workload
	// all holds every shape still weighed, however rare, most common
	// first, for model pressure. Pods restricted to some models spread
	// over many rare shapes (one per CPU size and model list), so coverage
	// drops a large part of their demand, and by a different amount at
	// each rebuild; pressure worked out from the scored shapes alone would
	// be too low and flip on and off near its threshold.
	all []device.WorkloadClass
	// version counts the estimates published, so that a pod's signature
	// can say which one its scores were computed against.
	version uint64
}

// workload returns the current estimate's scored shapes; nil before any
// pod or seed.
func (e *workloadEstimator) workload() *device.Workload { return e.snapshot().scored }

// snapshot returns the current estimate. It is never nil: the estimator
// publishes one, perhaps empty, before newWorkloadEstimator returns.
func (e *workloadEstimator) snapshot() *estimate { return e.current.Load() }

// observe counts a pod's shape once per pod.
func (e *workloadEstimator) observe(uid types.UID, class device.WorkloadClass) {
	if e.window == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.seen[uid]; ok {
		return
	}
	if old := e.ring[e.next]; old != "" {
		delete(e.seen, old)
	}
	e.ring[e.next] = uid
	e.next = (e.next + 1) % len(e.ring)
	e.seen[uid] = struct{}{}

	e.scale *= e.growth
	if e.scale > 1e100 {
		for _, s := range e.shapes {
			s.w /= e.scale
		}
		e.scale = 1
	}
	e.addLocked(class, e.scale)
	e.observed++
	e.pending++
	// Early on every pod changes the picture a lot: rebuild at powers of
	// two until the regular cadence takes over.
	if e.pending >= e.refreshEvery || (e.observed&(e.observed-1) == 0 && e.observed < e.refreshEvery) {
		e.rebuildLocked()
	}
}

func (e *workloadEstimator) addLocked(c device.WorkloadClass, w float64) {
	k := shapeKey{cpu: c.CPUMilli, count: c.Count, units: c.Units, models: strings.Join(c.Models, ",")}
	if s := e.shapes[k]; s != nil {
		s.w += w
		return
	}
	c.Weight = 0
	e.shapes[k] = &shapeWeight{class: c, w: w}
}

// rebuildLocked publishes the most common shapes covering the configured
// share of the weight for Score, and every shape for model pressure; it
// forgets shapes whose weight has decayed to nothing.
func (e *workloadEstimator) rebuildLocked() {
	e.pending = 0
	all := make([]*shapeWeight, 0, len(e.shapes))
	var total float64
	for k, s := range e.shapes {
		if s.w < e.scale*1e-9 {
			delete(e.shapes, k)
			continue
		}
		all = append(all, s)
		total += s.w
	}
	// Most common first; ties broken by size so that snapshots do not
	// depend on map order.
	slices.SortFunc(all, func(a, b *shapeWeight) int {
		if c := cmp.Compare(b.w, a.w); c != 0 {
			return c
		}
		if c := cmp.Compare(b.class.CPUMilli, a.class.CPUMilli); c != 0 {
			return c
		}
		if c := cmp.Compare(b.class.Units, a.class.Units); c != 0 {
			return c
		}
		if c := cmp.Compare(b.class.Count, a.class.Count); c != 0 {
			return c
		}
		return strings.Compare(strings.Join(b.class.Models, ","), strings.Join(a.class.Models, ","))
	})
	classes := make([]device.WorkloadClass, len(all))
	kept := 0
	var covered float64
	for i, s := range all {
		classes[i] = s.class
		classes[i].Weight = s.w
		if covered < e.coverage*total {
			kept = i + 1
			covered += s.w
		}
	}
	var version uint64
	if prev := e.current.Load(); prev != nil {
		version = prev.version + 1
	}
	e.current.Store(&estimate{scored: device.NewWorkload(classes[:kept], e.cpuStarvation), all: classes, version: version})
	e.classes.Store(int64(kept))
	workloadClasses.Set(float64(kept))
}
