package tesseragpu

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// TestEvictorJudges states when a pod on a GPU with a NoExecute device
// taint goes: at once without a toleration, after the shortest
// tolerationSeconds of those that match, never with one without a limit.
func TestEvictorJudges(t *testing.T) {
	secs := func(n int64) *int64 { return &n }
	exists := func(key string, s *int64) v1.Toleration {
		return v1.Toleration{Key: key, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute, TolerationSeconds: s}
	}
	drain := v1.Taint{Key: "maint", Value: "drain", Effect: v1.TaintEffectNoExecute}
	xid := v1.Taint{Key: "tessera.io/xid", Value: "79", Effect: v1.TaintEffectNoExecute}
	tests := []struct {
		name        string
		taints      []v1.Taint
		tolerations []v1.Toleration
		want        verdict
	}{
		{name: "not tolerated", taints: []v1.Taint{drain}, want: verdict{why: "GPU G0 has device taint maint=drain:NoExecute on node n, which the pod does not tolerate"}},
		{name: "another key tolerated", taints: []v1.Taint{drain}, tolerations: []v1.Toleration{exists("other", nil)},
			want: verdict{why: "GPU G0 has device taint maint=drain:NoExecute on node n, which the pod does not tolerate"}},
		{name: "tolerated for ever", taints: []v1.Taint{drain}, tolerations: []v1.Toleration{exists("maint", nil)}, want: verdict{never: true}},
		{name: "tolerated for a while", taints: []v1.Taint{drain}, tolerations: []v1.Toleration{exists("maint", secs(30))},
			want: verdict{at: now.Add(30 * time.Second), why: "GPU G0 has device taint maint=drain:NoExecute on node n, which the pod tolerates for 30s"}},
		{name: "the shortest limit wins", taints: []v1.Taint{drain, xid},
			tolerations: []v1.Toleration{exists("maint", secs(300)), exists("tessera.io/xid", secs(10))},
			want:        verdict{at: now.Add(10 * time.Second), why: "GPU G0 has device taint maint=drain:NoExecute; GPU G0 has device taint tessera.io/xid=79:NoExecute on node n, which the pod tolerates for 10s"}},
		{name: "one of two untolerated", taints: []v1.Taint{drain, xid}, tolerations: []v1.Toleration{exists("maint", nil)},
			want: verdict{why: "GPU G0 has device taint maint=drain:NoExecute; GPU G0 has device taint tessera.io/xid=79:NoExecute on node n, which the pod does not tolerate"}},
		{name: "negative seconds mean at once", taints: []v1.Taint{drain}, tolerations: []v1.Toleration{exists("maint", secs(-5))},
			want: verdict{at: now, why: "GPU G0 has device taint maint=drain:NoExecute on node n, which the pod tolerates for 0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := newEvictor(gpucache.New(klog.Background(), time.Minute), nil, func(runtime.Object, string, string) {}, func() time.Time { return now })
			u := gpucache.TaintedUse{UID: "u", Namespace: "default", Name: "p", Node: "n", Tolerations: tt.tolerations, Taints: map[string][]v1.Taint{"G0": tt.taints}}
			got := ev.judge(klog.Background(), u, now, map[string]bool{})
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(verdict{})); diff != "" {
				t.Errorf("judge (-want +got):\n%s", diff)
			}
			// A later pass counts from when the taint was first seen.
			if again := ev.judge(klog.Background(), u, now.Add(time.Hour), map[string]bool{}); !again.at.Equal(got.at) {
				t.Errorf("second pass: at %v, want %v", again.at, got.at)
			}
		})
	}
}

// TestNoExecuteUses checks which pods the cache hands the evictor: those
// holding a GPU with a NoExecute taint, recorded or counted as asked, and
// not those on other GPUs or already being deleted.
func TestNoExecuteUses(t *testing.T) {
	gn := gpuNode("a", 4, "H100")
	gn.Spec.DeviceTaints = []v1alpha1.GPUDeviceTaint{
		{UUID: uuid("a", 0), DeviceTaint: v1alpha1.DeviceTaint{Key: "maint", Effect: v1.TaintEffectNoExecute}},
		{UUID: uuid("a", 1), DeviceTaint: v1alpha1.DeviceTaint{Key: "soft", Effect: v1.TaintEffectNoSchedule}},
	}
	pl := testPlugin(t, config.ScoringStrategyBinpack, gn)
	kicks := 0
	pl.store.EvictKick = func() { kicks++ }
	pl.store.UpsertPod(holds("on-0", "a", 100, 0))
	pl.store.UpsertPod(holds("on-1", "a", 100, 1))
	going := holds("going", "a", 50, 0)
	deleted := metav1.NewTime(now)
	going.DeletionTimestamp = &deleted
	pl.store.UpsertPod(going)
	if kicks == 0 {
		t.Error("pod updates on a node with NoExecute taints never asked for a pass")
	}
	var got []string
	for _, u := range pl.store.NoExecuteUses() {
		for g, ts := range u.Taints {
			for _, taint := range ts {
				got = append(got, u.Name+" "+g+" "+taint.ToString())
			}
		}
	}
	if diff := cmp.Diff([]string{"on-0 " + uuid("a", 0) + " maint:NoExecute"}, got); diff != "" {
		t.Errorf("NoExecuteUses (-want +got):\n%s", diff)
	}
	// Lifting the taint leaves nothing to look at.
	gn = gn.DeepCopy()
	gn.ResourceVersion = "2"
	gn.Spec.DeviceTaints = nil
	pl.store.SetGPUNode(gn)
	if u := pl.store.NoExecuteUses(); len(u) != 0 {
		t.Errorf("after the taint went: %v", u)
	}
}
