// Package kustomize tests the kustomize overlays of manifests/ as `kubectl apply -k` builds them.
// It is a package of its own: krusty linked into a test binary together with
// go-nvml (package manifests' tests link it) makes the binary fail to load
// (undefined NVML symbols under BIND_NOW).
package kustomize

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestFakeGPUsOverlay builds manifests/fake-gpus as `kubectl apply -k`
// would: every object of manifests/install, with only the device plugin's
// TESSERA_FAKE_GPUS set.
func TestFakeGPUsOverlay(t *testing.T) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	fs := filesys.MakeFsOnDisk()
	base, err := k.Run(fs, "../../manifests/install")
	if err != nil {
		t.Fatalf("kustomize build manifests/install: %v", err)
	}
	overlay, err := k.Run(fs, "../../manifests/fake-gpus")
	if err != nil {
		t.Fatalf("kustomize build manifests/fake-gpus: %v", err)
	}
	if got, want := len(overlay.Resources()), len(base.Resources()); got != want {
		t.Errorf("the overlay has %d objects, manifests/install %d", got, want)
	}
	changed := 0
	for _, r := range overlay.Resources() {
		b, err := base.GetById(r.CurId())
		if err != nil {
			t.Errorf("%s is not in manifests/install", r.CurId())
			continue
		}
		got, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		want, err := b.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			changed++
			if r.GetKind() != "DaemonSet" {
				t.Errorf("the overlay changed %s", r.CurId())
			}
		}
		if r.GetKind() != "DaemonSet" {
			continue
		}
		var ds appsv1.DaemonSet
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &ds); err != nil {
			t.Fatal(err)
		}
		fake := ""
		for _, c := range ds.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if c.Name == "device-plugin" && e.Name == "TESSERA_FAKE_GPUS" {
					fake = e.Value
				}
			}
		}
		if fake != "dgxh100" {
			t.Errorf("TESSERA_FAKE_GPUS = %q in the overlay's DaemonSet, want dgxh100", fake)
		}
	}
	if changed != 1 {
		t.Errorf("the overlay changed %d objects, want only the DaemonSet", changed)
	}
}
