package device

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Fragmentation-aware placement (fragmentation gradient descent, Weng et
// al., USENIX ATC'23). A node's free device capacity is a fragment for a
// kind of pod when that pod cannot use it: the node lacks the CPU or enough
// devices with room for the pod, the devices are of a model the pod may not
// use, or a device's leftover is smaller than what the pod asks of one
// device. Weighting each kind by how common it is gives the capacity a
// node is expected to waste; a placement is good when it grows that
// expectation the least.

// WorkloadClass is one shape of pod in a workload mix.
type WorkloadClass struct {
	// CPUMilli is the pod's CPU request in millicores.
	CPUMilli int64
	// Count is the number of devices; 0 for a pod that needs none.
	Count int
	// Units is what the pod takes of each of its devices, 1..FullUnits.
	Units int
	// Models are the accepted device models; empty means any.
	Models []string
	// Weight is the class's relative frequency.
	Weight float64
}

// memoSlots is the size of a workload's fragmentation memo. A node's state
// changes only when a pod lands on it, so the live states of a cluster and
// of each pod's candidate placements on it are what the memo must hold: a
// few per device of the cluster.
const memoSlots = 1 << 15

// Workload is an immutable workload mix with a memo of node fragmentation
// under it. It is safe for concurrent use.
type Workload struct {
	classes []fragClass
	// cpuPerUnit is the CPU the workload's device pods ask per device unit
	// (millicores), and starvation the weight of the units a node's free
	// CPU cannot feed at that rate (see starved). Both are 0 when the term
	// is off.
	cpuPerUnit, starvation float64
	memo                   [memoSlots]atomic.Pointer[memoEntry]
}

type fragClass struct {
	p            float64
	cpu          int64
	count, units int
	anyModel     bool
	models       modelSet
}

// NewWorkload builds a workload from classes, normalising their weights.
// Classes with no weight, or that no device could serve, are dropped. It
// returns nil when nothing is left. cpuStarvation weighs, against the
// classes' fragments, the free device units that a node's free CPU could
// not feed with the workload's CPU per unit; 0 leaves them out, which is
// the published fragmentation measure.
func NewWorkload(classes []WorkloadClass, cpuStarvation float64) *Workload {
	var total float64
	for _, c := range classes {
		if validClass(c) {
			total += c.Weight
		}
	}
	if total == 0 {
		return nil
	}
	w := &Workload{}
	for _, c := range classes {
		if !validClass(c) {
			continue
		}
		fc := fragClass{p: c.Weight / total, cpu: c.CPUMilli, count: c.Count, units: c.Units, anyModel: len(c.Models) == 0}
		for _, m := range c.Models {
			if id := modelID(m); id != overflowModel {
				fc.models.add(id)
			}
		}
		w.classes = append(w.classes, fc)
	}
	// Pods without devices are left out of the rate: the CPU they take is
	// already counted as taken once they land, and a node that attracts
	// them is not one whose devices need more CPU each. A workload whose
	// device pods ask no CPU has no rate, and the term stays off rather
	// than divide by it.
	var cpu, units float64
	for _, c := range w.classes {
		if c.count > 0 {
			cpu += c.p * float64(c.cpu)
			units += c.p * float64(c.count*c.units)
		}
	}
	if units > 0 && cpu > 0 && cpuStarvation > 0 {
		w.cpuPerUnit, w.starvation = cpu/units, cpuStarvation
	}
	return w
}

// validClass reports whether a class takes part in a workload: it has
// weight, and its shape is one a node could hold.
func validClass(c WorkloadClass) bool {
	return c.Weight > 0 && c.CPUMilli >= 0 && c.Count >= 0 && c.Count <= MaxDevicesPerNode &&
		(c.Count == 0 || (c.Units >= 1 && c.Units <= FullUnits))
}

// Len is the number of classes.
func (w *Workload) Len() int {
	if w == nil {
		return 0
	}
	return len(w.classes)
}

// ClassOf is the workload class of a pod with request r and CPU request
// cpuMilli. A pod with several shares is counted by its largest one.
func ClassOf(r *Request, cpuMilli int64) WorkloadClass {
	c := WorkloadClass{CPUMilli: cpuMilli, Weight: 1}
	switch {
	case r.Empty():
	case r.Whole > 0:
		c.Count, c.Units = r.Whole, FullUnits
	default:
		c.Count, c.Units = 1, r.Shares[0]
	}
	if r != nil && c.Count > 0 {
		c.Models = r.Models
	}
	return c
}

// fragVec is a node's free capacity as fragmentation sees it: the CPU left
// and, per eligible device, its model and free units packed as
// model<<7|free, sorted so that equal states compare equal.
type fragVec struct {
	cpu int64
	n   int
	e   [MaxDevicesPerNode]uint16
}

const freeBits = 7 // FullUnits fits in 7 bits

func entry(model uint16, free int) uint16 { return model<<freeBits | uint16(free) }

func (v *fragVec) sort() {
	for i := 1; i < v.n; i++ {
		for j := i; j > 0 && v.e[j] < v.e[j-1]; j-- {
			v.e[j], v.e[j-1] = v.e[j-1], v.e[j]
		}
	}
}

func (v *fragVec) hash() uint64 {
	h := uint64(14695981039346656037)
	h = (h ^ uint64(v.cpu)) * 1099511628211
	for i := 0; i < v.n; i++ {
		h = (h ^ uint64(v.e[i])) * 1099511628211
	}
	return h
}

type memoEntry struct {
	v fragVec
	f float64
}

// frag is the node fragmentation of a sorted vector: the free units the
// workload is expected to be unable to use, with the units starved of CPU
// when starve is set.
func (w *Workload) frag(v *fragVec, starve bool) float64 {
	h := v.hash()
	slot := &w.memo[h&(memoSlots-1)]
	var f float64
	if e := slot.Load(); e != nil && e.v.cpu == v.cpu && e.v.n == v.n && e.v.e == v.e {
		f = e.f
	} else {
		f = w.compute(v)
		slot.Store(&memoEntry{v: *v, f: f})
	}
	if starve {
		f += w.starved(v)
	}
	return f
}

// starved is the weighted free units of a vector beyond what its free CPU
// can feed.
func (w *Workload) starved(v *fragVec) float64 {
	// The classes ask whether one pod of each shape fits, not whether the
	// CPU left can feed every idle device: a node whose CPU runs out first
	// strands devices that every class still fits on today. At the
	// workload's CPU per unit, the units beyond what the free CPU can feed
	// are stranded whatever mix arrives. On the openb traces, CPU is the
	// co-bottleneck (12 vCPU per GPU on the common 8-GPU nodes against
	// about 14 per GPU of demand, counting the pods without GPUs), and
	// this term is what moves the CPU-hungry pods and the pods without
	// GPUs to the nodes with CPU to spare (bench/results/trace/README.md).
	if w.starvation == 0 {
		return 0
	}
	var idle int
	for i := 0; i < v.n; i++ {
		idle += int(v.e[i] & (1<<freeBits - 1))
	}
	if s := float64(idle) - float64(v.cpu)/w.cpuPerUnit; s > 0 {
		return w.starvation * s
	}
	return 0
}

func (w *Workload) compute(v *fragVec) float64 {
	var idle int
	for i := 0; i < v.n; i++ {
		idle += int(v.e[i] & (1<<freeBits - 1))
	}
	var f float64
	for ci := range w.classes {
		c := &w.classes[ci]
		if c.count == 0 || v.cpu < c.cpu {
			f += c.p * float64(idle)
			continue
		}
		fit, wasted := 0, 0
		for i := 0; i < v.n; i++ {
			free := int(v.e[i] & (1<<freeBits - 1))
			switch {
			case !c.anyModel && !c.models.has(v.e[i]>>freeBits):
				wasted += free
			case free >= c.units:
				fit++
			default:
				wasted += free
			}
		}
		if fit < c.count {
			wasted = idle
		}
		f += c.p * float64(wasted)
	}
	return f
}

// Fragmentation is the node's expected wasted capacity in units, for a node
// with cpuFree millicores left and devices in use as used says.
func (w *Workload) Fragmentation(inv *Inventory, used []int, cpuFree int64) float64 {
	var v fragVec
	v.fill(inv, used, -1, 0, cpuFree)
	return w.frag(&v, true)
}

// fill builds the vector of a node state in which extra units are in use on
// device dev (when extra > 0).
func (v *fragVec) fill(inv *Inventory, used []int, dev, extra int, cpu int64) {
	v.cpu, v.n = cpu, 0
	for m := inv.healthy &^ inv.hardTainted; m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		free := FullUnits - used[i]
		if i == dev {
			free -= extra
		}
		v.e[v.n] = entry(inv.modelIDs[i], max(free, 0))
		v.n++
	}
	v.sort()
}

// Plan places r on a node the way that grows the node's fragmentation the
// least and returns that growth's opposite, delta (free units the workload
// can use that the placement does not cost; larger is better). p is a
// placement Plan found for r; its whole devices are kept, since which fully
// free devices a request takes matters to fragmentation only through their
// model, and Plan picks them for locality. Each share goes, largest first,
// on the device that leaves the least fragmentation; avoided devices lose
// ties, then higher indexes do. cpuFree is the node's CPU left and cpuReq
// the pod's.
//
// With CPU starvation weighed in (NewWorkload), a node whose CPU is
// plentiful next to its devices looks the best place for a pod that asks a
// lot of CPU per device, since there it strands nothing. claimed says that
// the node's devices are of a model that model-restricted pods need
// (ModelPressure): sending such pods there would hand those devices to
// pods that could run anywhere, so on such a node a device pod is charged
// the CPU it asks beyond the workload's rate instead, as if the node had
// none to spare, and the choice between it and other nodes is left to the
// fragmentation of the classes and the tie order. On the openb gpuspec
// traces, where the CPU-rich 2-GPU T4 nodes are the ones under pressure,
// this is the difference between gaining and losing from the starvation
// term (bench/results/trace/README.md). Plan does not allocate once the
// memo holds the states it visits.
func (w *Workload) Plan(inv *Inventory, used []int, r *Request, p Placement, usable, avoid uint64, cpuFree, cpuReq int64, claimed bool) (Placement, float64) {
	var v fragVec
	starve := w.starvation > 0
	// charge stands for the change in CPU starvation where the node's own
	// is not to count (see claimed). It measures the pod by all the units
	// it takes, where its workload class (ClassOf) keeps only its largest
	// share: the charge is for the CPU the pod asks beyond what its own
	// devices would be given at the workload's rate.
	var charge float64
	if starve && claimed && !r.Empty() {
		starve = false
		if e := float64(cpuReq)/w.cpuPerUnit - float64(r.Units()); e > 0 {
			charge = w.starvation * e
		}
	}
	v.fill(inv, used, -1, 0, cpuFree)
	before := w.frag(&v, starve)

	// after is the use of each device as the placement so far leaves it,
	// starting from the whole devices taken.
	var after [MaxDevicesPerNode]int
	withWhole := func() {
		copy(after[:], used)
		for m := p.Whole; m != 0; m &= m - 1 {
			after[bits.TrailingZeros64(m)] = FullUnits
		}
	}
	withWhole()
	cpu := cpuFree - cpuReq
	if !r.Empty() {
		out := p
		for s, units := range r.Shares {
			best, bestF, seen := -1, 0.0, uint64(0)
			for m := usable &^ p.Whole; m != 0; m &= m - 1 {
				i := bits.TrailingZeros64(m)
				if FullUnits-after[i] < units || seen&(1<<uint(i)) != 0 {
					continue
				}
				v.fill(inv, after[:inv.Len()], i, units, cpu)
				f := w.frag(&v, starve)
				// Devices alike in model, fill and avoidance give the same
				// result; skip them.
				for k := m &^ (1 << uint(i)); k != 0; k &= k - 1 {
					j := bits.TrailingZeros64(k)
					if after[j] == after[i] && inv.modelIDs[j] == inv.modelIDs[i] && (avoid>>uint(j))&1 == (avoid>>uint(i))&1 {
						seen |= 1 << uint(j)
					}
				}
				if best < 0 || lessFrag(f, bestF, avoid&(1<<uint(i)) != 0, avoid&(1<<uint(best)) != 0) {
					best, bestF = i, f
				}
			}
			if best < 0 {
				// An earlier share took the room Plan had found for this
				// one; Plan's own choice is valid.
				out = p
				withWhole()
				for s2, u := range r.Shares {
					after[p.Share[s2]] += u
				}
				break
			}
			out.Share[s] = int8(best)
			after[best] += units
		}
		p = out
	}
	v.fill(inv, after[:inv.Len()], -1, 0, cpu)
	return p, before - w.frag(&v, starve) - charge
}

// FragmentationScore rates a placement found by Workload.Plan. The
// fragmentation delta (in units) is squashed over whole devices by a
// logistic curve into an integer 0..100, as fragmentation gradient descent
// was published; the node and device weights together weigh it, and the
// topology and taint weights weigh the same terms as in Score. Equal
// scores are common by design: deltas within a few hundredths of a device
// are a tie, and tie is what breaks them (larger wins). A stable tie-break,
// the same for a node from pod to pod, makes successive pods fill the same
// nodes first, which leaves more nodes whole than spreading ties at random
// or by fullness does (bench/trace measures this).
func (p *Placement) FragmentationScore(inv *Inventory, r *Request, avoid uint64, delta float64, w Weights, tie uint32) int64 {
	frag := int64(100 / (1 + math.Exp(-delta/FullUnits)))
	topology, taint := int64(100), int64(100)
	if !r.Empty() {
		topology, taint = p.localityTerms(inv, r, avoid)
	}
	primary := (w.Node+w.Device)*frag + w.Topology*topology + w.Taint*taint
	return primary<<32 | int64(tie)
}

// lessFrag orders candidate devices: less fragmentation first; between
// results equal to rounding, a device not to avoid.
func lessFrag(fa, fb float64, avoidA, avoidB bool) bool {
	if math.Abs(fa-fb) > 1e-9 {
		return fa < fb
	}
	return !avoidA && avoidB
}

// modelSet is a set of model IDs.
type modelSet [maxModels / 64]uint64

func (s *modelSet) add(id uint16)      { s[id/64] |= 1 << (id % 64) }
func (s *modelSet) has(id uint16) bool { return s[id/64]&(1<<(id%64)) != 0 }

// maxModels bounds the distinct model names given IDs; a memo entry packs a
// model ID in 9 bits. Models beyond it share the last ID, which no class
// lists, so a constrained class treats them as inaccessible.
const maxModels = 512

const overflowModel = maxModels - 1

var models = struct {
	sync.Mutex
	ids map[string]uint16
}{ids: map[string]uint16{}}

// modelID interns a model name. IDs are process-wide so that nodes of the
// same model share memo entries.
func modelID(name string) uint16 {
	models.Lock()
	defer models.Unlock()
	if id, ok := models.ids[name]; ok {
		return id
	}
	if len(models.ids) >= overflowModel {
		return overflowModel
	}
	id := uint16(len(models.ids))
	models.ids[name] = id
	return id
}
