package main

import (
	"os"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/manifests"
)

// TestDaemonSetArgsParse runs the flag parsing of this binary on the
// arguments of the shipped DaemonSet (manifests/install, rendered from the
// Helm chart), plus the flags the chart adds for taintNode and cdi, so a
// renamed or removed flag fails here rather than in a crash-looping pod.
func TestDaemonSetArgsParse(t *testing.T) {
	var ds appsv1.DaemonSet
	if err := yaml.Unmarshal(manifests.DevicePluginDaemonSet, &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(ds.Spec.Template.Spec.Containers))
	}
	args := ds.Spec.Template.Spec.Containers[0].Args
	if len(args) == 0 {
		t.Fatal("the DaemonSet passes no arguments")
	}
	saved := os.Args
	defer func() { os.Args = saved }()
	// --version returns once the flags are parsed.
	os.Args = append(append([]string{"tessera-device-plugin"}, args...), "--taint-node", "--cdi", "--version")
	if err := run(); err != nil {
		t.Errorf("flags %v: %v", os.Args[1:], err)
	}
}
