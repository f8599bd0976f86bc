package tesseragpu

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tessera-gpu/tessera/config"
)

// TestFilterSaysStaleBeforeTheEvent checks that the events change nothing
// in Filter: a stale inventory is refused whether or not it was announced.
func TestFilterSaysStaleBeforeTheEvent(t *testing.T) {
	gn := gpuNode("a", 1, "H100")
	hb := metav1.NewTime(now.Add(-time.Hour))
	gn.Status.HeartbeatTime = &hb
	pl := testPlugin(t, config.ScoringStrategyBinpack, gn)
	var events []string
	record := func(_ runtime.Object, reason, _ string) { events = append(events, reason) }
	pl.store.Warn, pl.store.Normal = record, record
	cs, _ := preFilter(t, pl, makePod("p", whole("1")))
	for i := 0; i < 3; i++ {
		if st := pl.Filter(t.Context(), cs, makePod("p", whole("1")), nodeInfo("a")); st.Message() != reasonStale {
			t.Fatalf("Filter = %v", st)
		}
	}
	if len(events) != 0 {
		t.Errorf("Filter recorded events %q", events)
	}
}
