package tesseragpu

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// TestInformerTrimsManagedFields: the GPUNode informer's transform leaves
// the object whole except for its managedFields, of which it keeps only the
// time of the latest write, not counting the scheduler's own.
func TestInformerTrimsManagedFields(t *testing.T) {
	gn := gpuNode("a", 2, "A100")
	early, late, latest := metav1.NewTime(now.Add(-time.Hour)), metav1.NewTime(now), metav1.NewTime(now.Add(time.Hour))
	gn.ManagedFields = []metav1.ManagedFieldsEntry{
		{Manager: "tessera-device-plugin", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", Time: &late,
			FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:status":{}}`)}},
		{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, Time: &early},
		// The scheduler's own InventoryFresh=False is no sign of life.
		{Manager: gpucache.FieldManager, Operation: metav1.ManagedFieldsOperationApply, Subresource: "status", Time: &latest},
	}
	out, err := trimManagedFields(gn)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*v1alpha1.GPUNode)
	if diff := cmp.Diff([]metav1.ManagedFieldsEntry{{Time: &late}}, got.ManagedFields); diff != "" {
		t.Errorf("managedFields (-want +got):\n%s", diff)
	}
	if got.Name != "a" || len(got.Status.GPUs) != 2 {
		t.Errorf("the transform changed more than managedFields: %+v", got)
	}
	none := gpuNode("b", 1, "A100")
	none.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "x"}}
	if out, _ := trimManagedFields(none); out.(*v1alpha1.GPUNode).ManagedFields != nil {
		t.Errorf("entries without a time kept: %v", out.(*v1alpha1.GPUNode).ManagedFields)
	}
	// Objects that are not Kubernetes objects pass through.
	if out, err := trimManagedFields("x"); err != nil || out != "x" {
		t.Errorf("trimManagedFields(\"x\") = %v, %v", out, err)
	}
}
