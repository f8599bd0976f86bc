package device

import (
	"math/bits"
)

// Strategy is how a node's devices are packed.
type Strategy int

const (
	// Binpack fills partly used devices and nodes first, keeping whole
	// devices and whole nodes free for large requests.
	Binpack Strategy = iota
	// Spread places work on the emptiest devices and nodes, trading packing
	// for less interference between co-located pods.
	Spread
)

// Weights weigh the parts of a node's score. Each part is 0..100.
type Weights struct {
	// Node rates node-level packing (binpack) or headroom (spread).
	Node int64
	// Device rates how full the chosen shared devices end up (binpack) or
	// how empty they stay (spread).
	Device int64
	// Topology rates how well the chosen whole devices are linked.
	Topology int64
	// Taint rates how few chosen devices carry PreferNoSchedule taints
	// that the pod does not tolerate.
	Taint int64
}

// Reason says why a node cannot host a request.
type Reason int

const (
	// Fits means the request fits.
	Fits Reason = iota
	// NoDevices means the node reports no devices.
	NoDevices
	// NoAllowedModel means no device has a model the pod accepts.
	NoAllowedModel
	// NoneHealthy means every device of an accepted model is unhealthy.
	NoneHealthy
	// Untolerated means every healthy device of an accepted model carries a
	// device taint the pod does not tolerate.
	Untolerated
	// Insufficient means the usable devices lack the free capacity.
	Insufficient
)

// Usable returns the devices a request may use on a node (healthy, of an
// accepted model, hard taints tolerated) and, among them, those carrying
// PreferNoSchedule taints the pod does not tolerate. When no device is usable
// it says why, naming the last hurdle that some device got past.
func Usable(inv *Inventory, r *Request) (usable, avoid uint64, why Reason) {
	usable, avoid, _, why = usable4(inv, r)
	return usable, avoid, why
}

// Blocked explains a failed Plan: it returns the reason the devices of an
// accepted model that Usable left out were left out (NoneHealthy or
// Untolerated) when the request would fit with them, and Insufficient when
// capacity is short either way.
func Blocked(inv *Inventory, used []int, r *Request) Reason {
	usable, _, blocked, _ := usable4(inv, r)
	if blocked == 0 {
		return Insufficient
	}
	if _, ok := Plan(inv, used, r, usable|blocked, 0, Binpack); !ok {
		return Insufficient
	}
	// Taints come first when both apply: the pod's author can act on them.
	for m := blocked; m != 0; m &= m - 1 {
		if inv.Devices[bits.TrailingZeros64(m)].Healthy {
			return Untolerated
		}
	}
	return NoneHealthy
}

func usable4(inv *Inventory, r *Request) (usable, avoid, blocked uint64, why Reason) {
	if inv.Len() == 0 {
		return 0, 0, 0, NoDevices
	}
	// Without device taints among the devices of accepted models, the
	// verdict follows from the inventory's masks alone. This is Filter's
	// common path; it leaves the device list (a dozen cache lines on an
	// 8-GPU node) untouched.
	allowed := inv.all
	if len(r.Models) > 0 {
		allowed = 0
		for i, m := range inv.models {
			if r.allowsModel(m) {
				allowed |= inv.modelMasks[i]
			}
		}
	}
	if inv.tainted&allowed == 0 {
		switch usable, blocked = allowed&inv.healthy, allowed&^inv.healthy; {
		case usable != 0:
			return usable, 0, blocked, Fits
		case blocked != 0:
			return 0, 0, blocked, NoneHealthy
		default:
			return 0, 0, 0, NoAllowedModel
		}
	}
	return usableEach(inv, r)
}

// usableEach is usable4 device by device, for nodes with device taints.
func usableEach(inv *Inventory, r *Request) (usable, avoid, blocked uint64, why Reason) {
	why = NoAllowedModel
	for i := range inv.Devices {
		d := &inv.Devices[i]
		if !r.allowsModel(d.Model) {
			continue
		}
		bit := uint64(1) << uint(i)
		if !d.Healthy {
			why = max(why, NoneHealthy)
			blocked |= bit
			continue
		}
		if inv.tainted&bit != 0 {
			if !r.tolerates(d, isHardEffect) {
				why = max(why, Untolerated)
				blocked |= bit
				continue
			}
			if !r.tolerates(d, isPreferEffect) {
				avoid |= bit
			}
		}
		usable |= bit
	}
	if usable != 0 {
		why = Fits
	}
	return usable, avoid, blocked, why
}

// Placement is where a request's demands go on one node.
type Placement struct {
	// Whole is the set of devices taken whole.
	Whole uint64
	// Share gives the device of each of the request's share slots.
	Share [MaxSharesPerPod]int8
}

// Plan places a request on a node whose devices have used units already in
// use, restricted to the usable devices and steering away from avoid. It
// reports false when the request does not fit. Plan does not allocate.
func Plan(inv *Inventory, used []int, r *Request, usable, avoid uint64, st Strategy) (Placement, bool) {
	var p Placement
	var free [MaxDevicesPerNode]int
	var full uint64
	for i := range inv.Devices {
		bit := uint64(1) << uint(i)
		if usable&bit == 0 {
			free[i] = -1
			continue
		}
		free[i] = FullUnits - used[i]
		if free[i] == FullUnits {
			full |= bit
		}
	}
	if r.Whole > 0 {
		if bits.OnesCount64(full) < r.Whole {
			return p, false
		}
		// Whole devices come first, from the fully free ones; shares then
		// fill partly used devices before touching free ones.
		p.Whole = pickWhole(inv, full, avoid, r.Whole, st)
		for m := p.Whole; m != 0; m &= m - 1 {
			free[bits.TrailingZeros64(m)] = -1
		}
	}
	if len(r.Shares) > 0 {
		saved := free
		if !placeShares(&p, &free, inv.Len(), r.Shares, avoid, st) {
			// Worst-fit can strand a share that best-fit would place.
			if st == Binpack || !placeShares(&p, &saved, inv.Len(), r.Shares, avoid, Binpack) {
				return p, false
			}
		}
	}
	return p, true
}

// placeShares puts each share (largest first) on a device with room: the
// tightest fit for binpack, the roomiest for spread; devices to avoid lose
// ties only.
func placeShares(p *Placement, free *[MaxDevicesPerNode]int, n int, shares []int, avoid uint64, st Strategy) bool {
	for s, units := range shares {
		best := -1
		for i := 0; i < n; i++ {
			if free[i] < units {
				continue
			}
			if best < 0 || better(free[i], free[best], avoid&(1<<uint(i)) != 0, avoid&(1<<uint(best)) != 0, st) {
				best = i
			}
		}
		if best < 0 {
			return false
		}
		free[best] -= units
		p.Share[s] = int8(best)
	}
	return true
}

func better(freeA, freeB int, avoidA, avoidB bool, st Strategy) bool {
	if avoidA != avoidB {
		return !avoidA
	}
	if st == Spread {
		return freeA > freeB
	}
	return freeA < freeB
}

// pickWhole chooses n devices from the fully free set. Several devices are
// grown greedily from every possible seed towards the best-linked set (most
// linked pairs, then most devices on the seed's NUMA node, then fewest to
// avoid). A single device is taken, under binpack, where it breaks up the
// fewest linked free devices, keeping large islands whole for large jobs.
func pickWhole(inv *Inventory, full, avoid uint64, n int, st Strategy) uint64 {
	if bits.OnesCount64(full) == n {
		return full
	}
	if n == 1 {
		best, bestKey := -1, 0
		for m := full; m != 0; m &= m - 1 {
			i := bits.TrailingZeros64(m)
			key := 0
			if avoid&(1<<uint(i)) != 0 {
				key += 1 << 10
			}
			if st == Binpack {
				key += bits.OnesCount64(inv.links[i] & full)
			}
			if best < 0 || key < bestKey {
				best, bestKey = i, key
			}
		}
		return 1 << uint(best)
	}
	var bestSet uint64
	bestKey := -1
	for seeds := full; seeds != 0; seeds &= seeds - 1 {
		seed := bits.TrailingZeros64(seeds)
		set := uint64(1) << uint(seed)
		numa := inv.Devices[seed].NUMANode
		for k := 1; k < n; k++ {
			pick, pickKey := -1, -1
			for m := full &^ set; m != 0; m &= m - 1 {
				c := bits.TrailingZeros64(m)
				key := bits.OnesCount64(inv.links[c]&set) << 8
				if inv.Devices[c].NUMANode == numa {
					key += 2
				}
				if avoid&(1<<uint(c)) == 0 {
					key++
				}
				if key > pickKey {
					pick, pickKey = c, key
				}
			}
			set |= 1 << uint(pick)
		}
		key := setQuality(inv, set, avoid)
		if key > bestKey {
			bestSet, bestKey = set, key
		}
	}
	return bestSet
}

// setQuality orders device sets: linked pairs first, then devices sharing
// the most common NUMA node, then devices not to avoid.
func setQuality(inv *Inventory, set, avoid uint64) int {
	pairs, numa := linkedPairs(inv, set), sameNUMA(inv, set)
	return pairs<<16 | numa<<8 | bits.OnesCount64(set&^avoid)
}

func linkedPairs(inv *Inventory, set uint64) int {
	n := 0
	for m := set; m != 0; m &= m - 1 {
		n += bits.OnesCount64(inv.links[bits.TrailingZeros64(m)] & set)
	}
	return n / 2
}

// sameNUMA is the size of the largest group of devices in set that share a
// known NUMA node.
func sameNUMA(inv *Inventory, set uint64) int {
	best := 0
	for m := set; m != 0; m &= m - 1 {
		a := inv.Devices[bits.TrailingZeros64(m)].NUMANode
		if a < 0 {
			continue
		}
		c := 0
		for k := set; k != 0; k &= k - 1 {
			if inv.Devices[bits.TrailingZeros64(k)].NUMANode == a {
				c++
			}
		}
		best = max(best, c)
	}
	return best
}

// Score rates a placement from 0 to 100 under a strategy and weights.
func (p *Placement) Score(inv *Inventory, used []int, r *Request, avoid uint64, st Strategy, w Weights) int64 {
	total := int64(inv.Len()) * FullUnits
	var inUse int64
	for i := range inv.Devices {
		inUse += int64(used[i])
	}
	nodeFill := (inUse + int64(r.Units())) * 100 / max(total, 1)

	// Fill of the shared devices after the pod lands on them.
	deviceFill := int64(100)
	if len(r.Shares) > 0 {
		var after [MaxDevicesPerNode]int
		var touched uint64
		for s, units := range r.Shares {
			d := p.Share[s]
			if touched&(1<<uint(d)) == 0 {
				after[d] = used[d]
				touched |= 1 << uint(d)
			}
			after[d] += units
		}
		var sum int64
		for m := touched; m != 0; m &= m - 1 {
			sum += int64(after[bits.TrailingZeros64(m)])
		}
		deviceFill = sum / int64(bits.OnesCount64(touched))
	}
	if st == Spread {
		nodeFill, deviceFill = 100-nodeFill, 100-deviceFill
	}

	topology, taint := p.localityTerms(inv, r, avoid)
	sum := w.Node + w.Device + w.Topology + w.Taint
	if sum == 0 {
		return 0
	}
	return (w.Node*nodeFill + w.Device*deviceFill + w.Topology*topology + w.Taint*taint) / sum
}

// localityTerms rate, 0..100, how well the whole devices are linked and how
// few chosen devices carry PreferNoSchedule taints the pod does not
// tolerate.
func (p *Placement) localityTerms(inv *Inventory, r *Request, avoid uint64) (topology, taint int64) {
	topology = 100
	if n := bits.OnesCount64(p.Whole); n >= 2 {
		maxPairs := int64(n * (n - 1) / 2)
		topology = (70*int64(linkedPairs(inv, p.Whole)))/maxPairs + (30*int64(sameNUMA(inv, p.Whole)))/int64(n)
	}
	chosen := p.Whole
	for s := range r.Shares {
		chosen |= 1 << uint(p.Share[s])
	}
	taint = 100
	if c := bits.OnesCount64(chosen); c > 0 {
		taint = 100 - int64(bits.OnesCount64(chosen&avoid))*100/int64(c)
	}
	return topology, taint
}

// Grant is a container's use of one device.
type Grant struct {
	// Device is the device's index in the inventory.
	Device int
	// Units is the capacity used; FullUnits for a whole device.
	Units int
}

// Grants turns a placement into per-container grants, in the order of the
// request's containers. Init containers reuse the devices of the pod.
func (p *Placement) Grants(r *Request) [][]Grant {
	var whole []int
	for m := p.Whole; m != 0; m &= m - 1 {
		whole = append(whole, bits.TrailingZeros64(m))
	}
	out := make([][]Grant, len(r.Containers))
	for i, c := range r.Containers {
		switch {
		case c.Count > 0:
			for _, slot := range r.wholeSlots[i] {
				out[i] = append(out[i], Grant{Device: whole[slot], Units: FullUnits})
			}
		case c.Units > 0:
			out[i] = []Grant{{Device: int(p.Share[r.shareOf[i]]), Units: c.Units}}
		}
	}
	return out
}
