package main

import (
	"context"

	v1 "k8s.io/api/core/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	fwk "k8s.io/kube-scheduler/framework"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// The published comparison's node-level baselines, as score plugins. They
// see each node as two numbers, CPU and GPU (in percent of a GPU), scaled
// by the largest node of the trace (128 vCPU, 8 GPUs); the GPUs inside the
// chosen node are picked by TesseraGPU's Reserve (tightest fit).
const (
	bestFitName = "BestFit"
	dotProdName = "DotProd"

	maxSpecMilliCPU = 128000
	maxSpecGPUUnits = 8 * 100
)

type nodeFitScorer struct {
	name  string
	score func(cpuFree, gpuFree, cpuReq, gpuReq float64) float64
}

var _ fwk.ScorePlugin = &nodeFitScorer{}

func (s *nodeFitScorer) Name() string { return s.name }

// Score rates the node 0..100, truncated as the published scorers do.
func (s *nodeFitScorer) Score(_ context.Context, _ fwk.CycleState, pod *v1.Pod, ni fwk.NodeInfo) (int64, *fwk.Status) {
	cpuFree := float64(ni.GetAllocatable().GetMilliCPU()-ni.GetRequested().GetMilliCPU()) / maxSpecMilliCPU
	gpuFree := float64(ni.GetAllocatable().GetScalarResources()[gpu.ResourceGPU]*100-gpuUnits(ni.GetRequested().GetScalarResources())) / maxSpecGPUUnits
	var cpuReq, gpuReq float64
	for _, c := range pod.Spec.Containers {
		cpuReq += float64(c.Resources.Requests.Cpu().MilliValue()) / maxSpecMilliCPU
		gpuReq += float64(c.Resources.Limits.Name(gpu.ResourceGPU, "").Value()*100+c.Resources.Limits.Name(gpu.ResourcePercent, "").Value()) / maxSpecGPUUnits
	}
	v := s.score(cpuFree, gpuFree, cpuReq, gpuReq)
	return int64(min(max(v, 0), 100)), nil
}

// gpuUnits is the GPU requested on a node in percent of a GPU: whole GPUs
// count 100 each. (Allocatable lists both resources for the same GPUs, so
// free capacity is computed from the whole-GPU count alone.)
func gpuUnits(r map[v1.ResourceName]int64) int64 {
	return r[gpu.ResourceGPU]*100 + r[gpu.ResourcePercent]
}

func (s *nodeFitScorer) ScoreExtensions() fwk.ScoreExtensions { return nil }

func baselineRegistry() frameworkruntime.Registry {
	plugin := func(p *nodeFitScorer) frameworkruntime.PluginFactory {
		return func(context.Context, kruntime.Object, fwk.Handle) (fwk.Plugin, error) { return p, nil }
	}
	return frameworkruntime.Registry{
		// Least capacity left once the pod is placed.
		bestFitName: plugin(&nodeFitScorer{name: bestFitName, score: func(cf, gf, cr, gr float64) float64 {
			return 100 * (1 - 0.5*((cf-cr)+(gf-gr)))
		}}),
		// Free capacity least aligned with the request.
		dotProdName: plugin(&nodeFitScorer{name: dotProdName, score: func(cf, gf, cr, gr float64) float64 {
			return 100 * (1 - 0.5*(cf*cr+gf*gr))
		}}),
	}
}
