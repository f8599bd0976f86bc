package gpucache

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

// SetDRA sets the node's GPUs as a DRA driver publishes them in
// ResourceSlices (inv, nil when it publishes none) and what allocated
// ResourceClaims hold there (claimed: devices by inventory ID, and units).
//
// On such a node the claims are the whole truth about use: the DRA
// allocator picks the devices and writes them into the claims, and pods
// hold GPUs only through claims (a pod's nvidia.com/gpu, through the claim
// DynamicResources makes for it), so the node's pods are not counted. A
// node with a GPUNode keeps that inventory, which Tessera's device plugin
// serves; its DRA inventory is kept aside and takes over if the GPUNode
// goes.
func (c *Cache) SetDRA(node string, inv *device.Inventory, claimed []drainventory.Held) {
	c.mu.Lock()
	r := (*c.nodes.Load())[node]
	if r == nil {
		if inv == nil && len(claimed) == 0 {
			// Nothing known, nothing to keep.
			c.unlock(false)
			return
		}
		r = c.recordLocked(node)
	}
	if inv != nil && len(inv.Problems) > 0 && (r.draInv == nil || fmt.Sprint(r.draInv.Problems) != fmt.Sprint(inv.Problems)) {
		c.logger.Info("ResourceSlices list GPUs that cannot be used; they are skipped", "node", node, "problems", inv.Problems)
	}
	slices.SortFunc(claimed, func(a, b drainventory.Held) int {
		return cmp.Or(strings.Compare(a.ID, b.ID), cmp.Compare(a.Units, b.Units))
	})
	same := sameInventory(r.draInv, inv) && slices.Equal(r.claimed, claimed)
	r.draInv, r.claimed = inv, claimed
	if r.gn != nil || same {
		c.dropRecordLocked(r)
		c.unlock(false)
		return
	}
	c.inventoryLocked(r.Inv, inv)
	r.Inv, r.dra = inv, inv != nil
	c.publishLocked(r)
	c.dropRecordLocked(r)
	c.unlock(true)
}

// useDRALocked makes the node's DRA inventory its inventory again, once
// its GPUNode is gone.
func (c *Cache) useDRALocked(r *nodeRecord) {
	if r.draInv == nil {
		return
	}
	c.inventoryLocked(r.Inv, r.draInv)
	r.Inv, r.dra = r.draInv, true
}

// publishDRA fills a DRA node's state: each device is used by what the
// claims hold of it, never more than whole.
func (st *NodeState) publishDRA(claimed []drainventory.Held) {
	st.DRA = true
	for _, h := range claimed {
		if i, ok := st.Inv.IndexOf(h.ID); ok {
			st.Used[i] = min(st.Used[i]+h.Units, device.FullUnits)
		}
	}
}

// sameInventory reports whether two inventories list the same devices
// alike, for SetDRA to skip republishing an unchanged node.
func sameInventory(a, b *device.Inventory) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Len() != b.Len() || strings.Join(a.Problems, "\n") != strings.Join(b.Problems, "\n") {
		return false
	}
	for i := range a.Devices {
		x, y := a.Devices[i], b.Devices[i]
		if x.ID != y.ID || x.Model != y.Model || x.MemoryMiB != y.MemoryMiB || x.NUMANode != y.NUMANode ||
			x.Links != y.Links || x.Healthy != y.Healthy {
			return false
		}
	}
	return true
}
