package tesseradra

import (
	"context"
	"strings"
	"testing"

	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	st "k8s.io/kubernetes/pkg/scheduler/testing"
)

type inTreeState struct{}

func (inTreeState) Clone() fwk.StateData { return inTreeState{} }

// TestRefusesToRunBesideDynamicResources: a profile that runs the in-tree
// plugin too fails each pod with a reason that says what to change, rather
// than allocating its claims twice.
func TestRefusesToRunBesideDynamicResources(t *testing.T) {
	pl := &TesseraDynamicResources{manager: newManager(nil)}
	cs := framework.NewCycleState()
	cs.Write(inTreeStateKey, inTreeState{})
	_, status := pl.PreFilter(context.Background(), cs, st.MakePod().Name("p").Obj(), nil)
	if status.Code() != fwk.Error || !strings.Contains(status.Message(), "disable DynamicResources") {
		t.Errorf("status %v, want an error that says to disable DynamicResources", status)
	}
}
