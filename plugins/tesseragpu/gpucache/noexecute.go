package gpucache

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/pkg/device"
)

// hasNoExecute reports whether a device of the inventory has a NoExecute
// taint.
func hasNoExecute(inv *device.Inventory) bool {
	for i := range inv.Devices {
		for _, t := range inv.Devices[i].Taints {
			if t.Effect == v1.TaintEffectNoExecute {
				return true
			}
		}
	}
	return false
}

// TaintedUse is a pod that holds GPUs with NoExecute device taints.
type TaintedUse struct {
	UID             types.UID
	Namespace, Name string
	Node            string
	Tolerations     []v1.Toleration
	// Taints are the NoExecute taints of the GPUs it holds, by GPU UUID.
	Taints map[string][]v1.Taint
}

// NoExecuteUses lists the pods, not yet being deleted, that hold GPUs with
// NoExecute device taints: by their recorded assignment, or, for pods not
// yet recorded, by the GPUs the cache counts them on.
func (c *Cache) NoExecuteUses() []TaintedUse {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []TaintedUse
	for node := range c.noExecute {
		r := (*c.nodes.Load())[node]
		if r == nil || r.Inv == nil {
			continue
		}
		for _, p := range r.pods {
			if p.deleting || p.assumed {
				continue
			}
			use := p.Use
			if p.guess != nil {
				use = p.guessUse
			}
			var u TaintedUse
			for uuid := range use {
				i, ok := r.Inv.IndexOf(uuid)
				if !ok {
					continue
				}
				for _, t := range r.Inv.Devices[i].Taints {
					if t.Effect != v1.TaintEffectNoExecute {
						continue
					}
					if u.Taints == nil {
						u = TaintedUse{UID: p.uid, Namespace: p.namespace, Name: p.name, Node: node,
							Tolerations: p.tolerations, Taints: map[string][]v1.Taint{}}
					}
					u.Taints[uuid] = append(u.Taints[uuid], t)
				}
			}
			if u.Taints != nil {
				out = append(out, u)
			}
		}
	}
	return out
}
