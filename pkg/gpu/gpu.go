// Package gpu is the NVIDIA GPU backend of Tessera's device model: the
// resource names and annotations a pod uses to ask for GPUs, and the
// translation of a GPUNode inventory into the vendor-neutral device model.
package gpu

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	corev1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/api/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/device"
)

const (
	// ResourceGPU asks for whole GPUs, e.g. nvidia.com/gpu: 2.
	ResourceGPU corev1.ResourceName = "nvidia.com/gpu"
	// ResourcePercent asks for a share of one GPU, 1-99.
	ResourcePercent corev1.ResourceName = "tessera.io/gpu-percent"
	// ModelsAnnotation restricts the GPU models a pod accepts: a
	// comma-separated list of exact inventory model names.
	ModelsAnnotation = "tessera.io/gpu-models"
	// NodeTaintKey is the conventional taint key of GPU nodes.
	NodeTaintKey = "nvidia.com/gpu"

	maxModelName = 256
)

// ParsePod reads a pod's GPU demand: whole GPUs and GPU shares per
// container, the accepted models and the tolerations. It returns a nil
// request for a pod that asks for no GPU, and an error naming the container
// and the cause for a request that cannot be served.
func ParsePod(pod *corev1.Pod) (*device.Request, error) {
	var demands []device.ContainerDemand
	add := func(c *corev1.Container, init bool) error {
		d, err := containerDemand(c)
		if err != nil {
			return err
		}
		if d.Count > 0 || d.Units > 0 {
			d.Init = init
			demands = append(demands, d)
		}
		return nil
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		// Sidecars (restartable init containers) run beside the app
		// containers, so they hold their devices for the pod's life.
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		if err := add(c, !sidecar); err != nil {
			return nil, err
		}
	}
	for i := range pod.Spec.Containers {
		if err := add(&pod.Spec.Containers[i], false); err != nil {
			return nil, err
		}
	}
	models, err := ParseModels(pod.Annotations)
	if err != nil {
		return nil, err
	}
	if len(demands) == 0 {
		if models != nil {
			return nil, fmt.Errorf("annotation %s is set but no container asks for %s or %s", ModelsAnnotation, ResourceGPU, ResourcePercent)
		}
		return nil, nil
	}
	return device.NewRequest(demands, models, pod.Spec.Tolerations)
}

// containerDemand reads one container's GPU resources. Limits are what the
// kubelet hands to device plugins; requests count where limits are absent.
func containerDemand(c *corev1.Container) (device.ContainerDemand, error) {
	d := device.ContainerDemand{Name: c.Name}
	if n, ok, err := quantity(c, ResourceGPU); err != nil {
		return d, err
	} else if ok {
		if n < 0 || n > device.MaxDevicesPerNode {
			return d, fmt.Errorf("container %q asks for %s: %d; it must be 0-%d", c.Name, ResourceGPU, n, device.MaxDevicesPerNode)
		}
		d.Count = int(n)
	}
	if n, ok, err := quantity(c, ResourcePercent); err != nil {
		return d, err
	} else if ok {
		if n < 1 || n >= device.FullUnits {
			return d, fmt.Errorf("container %q asks for %s: %d; it must be 1-%d (ask for %s for whole GPUs)", c.Name, ResourcePercent, n, device.FullUnits-1, ResourceGPU)
		}
		d.Units = int(n)
	}
	if d.Count > 0 && d.Units > 0 {
		return d, fmt.Errorf("container %q asks for both %s and %s; a container gets whole GPUs or a share of one, not both", c.Name, ResourceGPU, ResourcePercent)
	}
	return d, nil
}

func quantity(c *corev1.Container, name corev1.ResourceName) (int64, bool, error) {
	q, ok := c.Resources.Limits[name]
	if !ok {
		q, ok = c.Resources.Requests[name]
	}
	if !ok {
		return 0, false, nil
	}
	n, exact := q.AsInt64()
	if !exact {
		return 0, false, fmt.Errorf("container %q asks for %s: %s; it must be a whole number", c.Name, name, q.String())
	}
	return n, true, nil
}

// ParseModels reads the model selector annotation. It returns nil when the
// annotation is absent, and an error for an empty list, an empty entry, a
// name with control characters or one longer than 256 bytes.
func ParseModels(annotations map[string]string) ([]string, error) {
	raw, ok := annotations[ModelsAnnotation]
	if !ok {
		return nil, nil
	}
	if strings.TrimSpace(raw) == "" {
		return nil, fmt.Errorf("annotation %s is empty; remove it to accept any model", ModelsAnnotation)
	}
	var models []string
	for i, m := range strings.Split(raw, ",") {
		m = strings.TrimSpace(m)
		switch {
		case m == "":
			return nil, fmt.Errorf("annotation %s: entry %d is empty in %q", ModelsAnnotation, i+1, raw)
		case len(m) > maxModelName:
			return nil, fmt.Errorf("annotation %s: entry %d is longer than %d bytes", ModelsAnnotation, i+1, maxModelName)
		case strings.IndexFunc(m, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }) >= 0:
			return nil, fmt.Errorf("annotation %s: entry %d %q has control or invalid characters", ModelsAnnotation, i+1, m)
		}
		models = append(models, m)
	}
	return models, nil
}

// Inventory translates a GPUNode into the device model. Entries that cannot
// be used safely are skipped and named in the inventory's Problems.
func Inventory(gn *v1alpha1.GPUNode) *device.Inventory {
	st := &gn.Status
	specs := make([]device.DeviceSpec, 0, len(st.GPUs))
	adminTaints := map[string][]device.Taint{}
	for _, t := range gn.Spec.DeviceTaints {
		adminTaints[t.UUID] = append(adminTaints[t.UUID], toTaint(t.DeviceTaint))
	}
	known := map[string]bool{}
	for _, g := range st.GPUs {
		known[g.UUID] = true
		s := device.DeviceSpec{
			ID: g.UUID, Model: g.Model, MemoryMiB: g.MemoryMiB, NUMANode: int(g.NUMANode),
			LinkIDs: g.NVLinkPeers, Healthy: g.Health.Healthy,
		}
		for _, t := range g.Taints {
			s.Taints = append(s.Taints, toTaint(t))
		}
		s.Taints = append(s.Taints, adminTaints[g.UUID]...)
		specs = append(specs, s)
	}
	var heartbeat time.Time
	if st.HeartbeatTime != nil {
		heartbeat = st.HeartbeatTime.Time
	}
	inv := device.NewInventory(gn.Name, heartbeat, specs)
	for _, t := range gn.Spec.DeviceTaints {
		if !known[t.UUID] {
			inv.Problems = append(inv.Problems, fmt.Sprintf("spec.deviceTaints names unknown GPU %s", t.UUID))
		}
	}
	return inv
}

func toTaint(t v1alpha1.DeviceTaint) device.Taint {
	return device.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect}
}
