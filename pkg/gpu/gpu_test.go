package gpu

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
)

func container(name string, limits map[corev1.ResourceName]string) corev1.Container {
	c := corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{}}}
	for k, v := range limits {
		c.Resources.Limits[k] = resource.MustParse(v)
	}
	return c
}

func TestParsePod(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	sidecar := container("side", map[corev1.ResourceName]string{ResourcePercent: "20"})
	sidecar.RestartPolicy = &always
	tests := []struct {
		name       string
		pod        corev1.PodSpec
		ann        map[string]string
		wantNil    bool
		wantWhole  int
		wantShares string
		wantErr    string
	}{
		{name: "no gpu", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", nil)}}, wantNil: true},
		{name: "whole", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourceGPU: "2"})}}, wantWhole: 2, wantShares: "[]"},
		{name: "zero gpus", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourceGPU: "0"})}}, wantNil: true},
		{name: "share", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourcePercent: "25"})}}, wantShares: "[25]"},
		{name: "sidecar share counts with app", pod: corev1.PodSpec{InitContainers: []corev1.Container{sidecar},
			Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourcePercent: "30"})}}, wantShares: "[30 20]"},
		{name: "init reuses", pod: corev1.PodSpec{InitContainers: []corev1.Container{container("i", map[corev1.ResourceName]string{ResourceGPU: "1"})},
			Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourceGPU: "2"})}}, wantWhole: 2, wantShares: "[]"},
		{name: "percent zero", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourcePercent: "0"})}}, wantErr: "must be 1-99"},
		{name: "percent 100", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourcePercent: "100"})}}, wantErr: "must be 1-99"},
		{name: "percent fraction", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourcePercent: "1.5"})}}, wantErr: "whole number"},
		{name: "both", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourcePercent: "10", ResourceGPU: "1"})}}, wantErr: "both"},
		{name: "gpus too many", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourceGPU: "100"})}}, wantErr: "must be 0-64"},
		{name: "models", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourceGPU: "1"})}},
			ann: map[string]string{ModelsAnnotation: " A100 , H100"}, wantWhole: 1, wantShares: "[]"},
		{name: "models empty", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourceGPU: "1"})}},
			ann: map[string]string{ModelsAnnotation: ""}, wantErr: "is empty"},
		{name: "models trailing comma", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourceGPU: "1"})}},
			ann: map[string]string{ModelsAnnotation: "A100,"}, wantErr: "entry 2 is empty"},
		{name: "models control char", pod: corev1.PodSpec{Containers: []corev1.Container{container("a", map[corev1.ResourceName]string{ResourceGPU: "1"})}},
			ann: map[string]string{ModelsAnnotation: "A1\x0000"}, wantErr: "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: tt.ann}, Spec: tt.pod}
			r, err := ParsePod(pod)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantNil {
				if r != nil {
					t.Fatalf("got %+v, want nil", r)
				}
				return
			}
			if r.Whole != tt.wantWhole || fmt.Sprint(r.Shares) != tt.wantShares {
				t.Errorf("whole %d shares %v, want %d %s", r.Whole, r.Shares, tt.wantWhole, tt.wantShares)
			}
		})
	}
}

func TestInventory(t *testing.T) {
	hb := metav1.NewTime(time.Now())
	gn := &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
	gn.Status.HeartbeatTime = &hb
	gn.Status.GPUs = []v1alpha1.GPU{
		{UUID: "GPU-a", Model: "H100", NUMANode: 0, NVLinkPeers: []string{"GPU-b"}, Health: v1alpha1.GPUHealth{Healthy: true},
			Taints: []v1alpha1.DeviceTaint{{Key: "tessera.io/xid", Value: "79", Effect: corev1.TaintEffectNoSchedule}}},
		{UUID: "GPU-b", Model: "H100", NUMANode: 1, Health: v1alpha1.GPUHealth{Healthy: false, Reason: "XID 79"}},
		{UUID: "GPU-a", Model: "H100"},
	}
	gn.Spec.DeviceTaints = []v1alpha1.GPUDeviceTaint{
		{UUID: "GPU-b", DeviceTaint: v1alpha1.DeviceTaint{Key: "maint", Effect: corev1.TaintEffectNoSchedule}},
		{UUID: "GPU-zz", DeviceTaint: v1alpha1.DeviceTaint{Key: "maint", Effect: corev1.TaintEffectNoSchedule}},
	}
	inv := Inventory(gn)
	if inv.Len() != 1 || inv.Devices[0].ID != "GPU-b" {
		t.Fatalf("devices %+v; the duplicated GPU-a must be skipped", inv.Devices)
	}
	if len(inv.Devices[0].Taints) != 1 || inv.Devices[0].Taints[0].Key != "maint" {
		t.Errorf("admin taint not merged: %+v", inv.Devices[0].Taints)
	}
	if !strings.Contains(strings.Join(inv.Problems, ";"), "unknown GPU GPU-zz") {
		t.Errorf("problems %q", inv.Problems)
	}
	if !inv.Heartbeat.Equal(hb.Time) {
		t.Error("heartbeat lost")
	}
}

// FuzzParsePod feeds arbitrary model annotations and quantities to the
// request parser: it must never panic, and what it accepts must be sane.
func FuzzParsePod(f *testing.F) {
	f.Add("A100,H100", "1", "")
	f.Add("", "0", "50")
	f.Add(",,", "9999999999999", "-3")
	f.Add("H100 80GB HBM3", "2", "99")
	f.Add("x\x00y", "1e3", "0.5")
	f.Fuzz(func(t *testing.T, models, gpus, pct string) {
		c := corev1.Container{Name: "c", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{}}}
		for name, v := range map[corev1.ResourceName]string{ResourceGPU: gpus, ResourcePercent: pct} {
			if q, err := resource.ParseQuantity(v); err == nil {
				c.Resources.Limits[name] = q
			}
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{ModelsAnnotation: models}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
		r, err := ParsePod(pod)
		if err != nil || r == nil {
			return
		}
		if r.Whole < 0 || r.Whole > 64 || (r.Whole > 0 && len(r.Shares) > 0) {
			t.Fatalf("accepted odd request %+v", r)
		}
		for _, s := range r.Shares {
			if s < 1 || s > 99 {
				t.Fatalf("accepted share %d", s)
			}
		}
		for _, m := range r.Models {
			if m == "" || strings.TrimSpace(m) != m {
				t.Fatalf("accepted model %q", m)
			}
		}
	})
}
