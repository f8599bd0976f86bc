package report

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/pkg/drainventory"
)

// SourceDRA is NodeRow.Source for a node whose GPUs a DRA driver publishes.
const SourceDRA = "DRA"

// addDRARows adds a row for each node that want accepts, has no GPUNode row
// and has GPUs of a DRA driver that Tessera reads (pkg/drainventory), with
// the pods of the allocated ResourceClaims as holders. A user who may not
// list ResourceSlices or ResourceClaims, or a cluster without the DRA API,
// gets no such rows (or no holders) rather than an error.
func addDRARows(ctx context.Context, kube kubernetes.Interface, rows map[string]*NodeRow, want func(string) bool) error {
	var all []*resourceapi.ResourceSlice
	err := eachPage(ctx, metav1.ListOptions{}, kube.ResourceV1().ResourceSlices().List,
		func(l *resourceapi.ResourceSliceList) error {
			for i := range l.Items {
				all = append(all, &l.Items[i])
			}
			return nil
		},
		func(l *resourceapi.ResourceSliceList) string { return l.Continue })
	if ignorable(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing ResourceSlices: %w", err)
	}
	byID := map[string]*GPURow{}
	nodes := map[string]bool{}
	for _, s := range all {
		if s.Spec.NodeName != nil && drainventory.IsGPUDriver(s.Spec.Driver) {
			nodes[*s.Spec.NodeName] = true
		}
	}
	for node := range nodes {
		if rows[node] != nil && rows[node].Source != SourceDRA || !want(node) {
			continue
		}
		gpus, _ := drainventory.GPUs(node, all)
		if len(gpus) == 0 {
			continue
		}
		r := &NodeRow{Name: node, HasInventory: true, Source: SourceDRA}
		for i, g := range gpus {
			index := g.Index
			if index < 0 {
				index = i
			}
			row := GPURow{GPU: v1alpha1.GPU{UUID: g.UUID, Index: int32(index), Model: g.Model, MemoryMiB: g.MemoryMiB,
				NUMANode: int32(g.NUMANode), Health: v1alpha1.GPUHealth{Healthy: g.Healthy}}, Holders: []Holder{}}
			if row.UUID == "" {
				row.UUID = g.ID
			}
			for _, t := range g.Taints {
				row.Taints = append(row.Taints, v1alpha1.DeviceTaint{Key: t.Key, Value: t.Value, Effect: v1.TaintEffect(t.Effect)})
			}
			r.GPUs = append(r.GPUs, row)
		}
		rows[node] = r
		for i := range r.GPUs {
			byID[gpus[i].ID] = &r.GPUs[i]
		}
	}
	if len(byID) == 0 {
		return nil
	}
	err = eachPage(ctx, metav1.ListOptions{}, kube.ResourceV1().ResourceClaims("").List,
		func(l *resourceapi.ResourceClaimList) error {
			for i := range l.Items {
				fileClaim(byID, &l.Items[i])
			}
			return nil
		},
		func(l *resourceapi.ResourceClaimList) string { return l.Continue })
	if err != nil && !ignorable(err) {
		return fmt.Errorf("listing ResourceClaims: %w", err)
	}
	return nil
}

// fileClaim adds an allocated claim's pods as holders of its GPUs, with
// what the claim holds of each; a claim reserved for no pod yet is shown by
// its name.
func fileClaim(byID map[string]*GPURow, c *resourceapi.ResourceClaim) {
	for _, h := range drainventory.Allocated(c) {
		g := byID[h.ID]
		if g == nil {
			continue
		}
		g.Used = min(g.Used+h.Units, device.FullUnits)
		holders := 0
		for _, ref := range c.Status.ReservedFor {
			if ref.Resource == "pods" && ref.APIGroup == "" {
				g.Holders = append(g.Holders, Holder{Namespace: c.Namespace, Pod: ref.Name, Container: "claim " + c.Name, Percent: h.Units})
				holders++
			}
		}
		if holders == 0 {
			g.Holders = append(g.Holders, Holder{Namespace: c.Namespace, Pod: "-", Container: "claim " + c.Name, Percent: h.Units})
		}
	}
}

// ignorable reports whether a list error means the user or the cluster
// simply has no DRA to show.
func ignorable(err error) bool {
	return err != nil && (apierrors.IsForbidden(err) || apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err))
}
