package tesseradra

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	kubeschedulerscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"
)

// TestDecodeArgs: no args are DynamicResources' defaults; args written
// without a kind are read strictly as DynamicResourcesArgs.
func TestDecodeArgs(t *testing.T) {
	defaults, err := decodeArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	if defaults.FilterTimeout == nil || defaults.FilterTimeout.Duration != 10*time.Second {
		t.Errorf("default filterTimeout %v, want 10s", defaults.FilterTimeout)
	}
	given, err := decodeArgs(&runtime.Unknown{Raw: []byte(`{"filterTimeout":"3s"}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := *defaults
	want.FilterTimeout = &metav1.Duration{Duration: 3 * time.Second}
	if diff := cmp.Diff(&want, given); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	typed := &schedconfig.DynamicResourcesArgs{}
	if got, err := decodeArgs(typed); err != nil || got != typed {
		t.Errorf("typed args: %v, %v", got, err)
	}
	for _, bad := range []runtime.Object{
		&runtime.Unknown{Raw: []byte(`{"filterTimeot":"3s"}`)},
		&schedconfig.NodeResourcesFitArgs{},
	} {
		if _, err := decodeArgs(bad); err == nil || !strings.Contains(err.Error(), "DynamicResourcesArgs") {
			t.Errorf("args %T: error %v, want one naming DynamicResourcesArgs", bad, err)
		}
	}
}

// TestArgsFromConfigFile: args written under the plugin's name in a
// KubeSchedulerConfiguration, without kind, reach the plugin as the
// scheduler's loader leaves them and are read.
func TestArgsFromConfigFile(t *testing.T) {
	file := []byte(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: tessera-scheduler
  pluginConfig:
  - name: TesseraDynamicResources
    args:
      filterTimeout: 3s
`)
	obj, _, err := kubeschedulerscheme.Codecs.UniversalDecoder().Decode(file, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, ok := obj.(*schedconfig.KubeSchedulerConfiguration)
	if !ok {
		t.Fatalf("decoded a %T", obj)
	}
	var args runtime.Object
	for _, pc := range cfg.Profiles[0].PluginConfig {
		if pc.Name == Name {
			args = pc.Args
		}
	}
	got, err := decodeArgs(args)
	if err != nil {
		t.Fatal(err)
	}
	if got.FilterTimeout == nil || got.FilterTimeout.Duration != 3*time.Second {
		t.Errorf("filterTimeout %v, want 3s", got.FilterTimeout)
	}
}
