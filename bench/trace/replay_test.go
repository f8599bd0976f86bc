package main

import (
	"context"
	"fmt"
	"slices"
	"testing"

	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"

	"github.com/tessera-gpu/tessera/pkg/localcluster"
)

// TestReplayIsReproducible replays a small trace through the real
// framework, against GPUNodes (or ResourceSlices) in a real apiserver, and
// checks that a seed
// gives the same placement for every pod each time it is replayed, that
// no node is given more GPU than it has, and that the figures add up.
func TestReplayIsReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	// The framework records into the scheduler's metrics, as in run.
	schedmetrics.Register()
	// Both ways a node serves GPUs: Tessera's device plugin, and its DRA
	// driver with TesseraDynamicResources allocating.
	for _, mode := range []string{modeDevicePlugin, modeDRA} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			lc, err := localcluster.Start(ctx, localcluster.Options{Dir: t.TempDir(), TB: t})
			if err != nil {
				t.Fatal(err)
			}
			defer lc.Stop()

			var nodes []traceNode
			gpusOf := map[string]int{}
			for i := range 16 {
				n := traceNode{name: fmt.Sprintf("node-%02d", i), cpuMilli: 64000, memMiB: 256 << 10, gpus: []int{1, 2, 4, 8}[i%4], model: []string{"V100M16", "T4"}[i%2]}
				nodes = append(nodes, n)
				gpusOf[n.name] = n.gpus
			}
			cl, err := publish(ctx, lc, nodes, mode)
			if err != nil {
				t.Fatal(err)
			}
			pods := []tracePod{
				{name: "whole", cpuMilli: 8000, memMiB: 1024, numGPU: 1, gpuMilli: 1000},
				{name: "pair", cpuMilli: 16000, memMiB: 1024, numGPU: 2, gpuMilli: 1000},
				{name: "half", cpuMilli: 4000, memMiB: 512, numGPU: 1, gpuMilli: 500},
				{name: "quarter", cpuMilli: 2000, memMiB: 512, numGPU: 1, gpuMilli: 250},
				{name: "t4-only", cpuMilli: 4000, memMiB: 512, numGPU: 1, gpuMilli: 1000, models: []string{"T4"}, spec: "T4"},
				{name: "cpu-only", cpuMilli: 6000, memMiB: 1024},
			}
			for _, name := range []string{"bestfit", "fragmentation"} {
				st, err := strategyByName(name)
				if err != nil {
					t.Fatal(err)
				}
				t.Run(name, func(t *testing.T) {
					order := arrivals(pods, cl.capacity, 1.3, 42)
					first, err := replay(ctx, cl, st, pods, order, 42, nil)
					if err != nil {
						t.Fatal(err)
					}
					again, err := replay(ctx, cl, st, pods, arrivals(pods, cl.capacity, 1.3, 42), 42, nil)
					if err != nil {
						t.Fatal(err)
					}
					if i := slices.IndexFunc(first.placed, func(n string) bool { return n != "" }); i < 0 {
						t.Fatal("no pod was placed")
					}
					for i := range first.placed {
						if first.placed[i] != again.placed[i] {
							t.Fatalf("seed 42 placed arrival %d (%s) on %q, then on %q", i, order[i].name, first.placed[i], again.placed[i])
						}
					}
					// Every placement respects the node's GPUs and the model
					// constraint; failures are counted.
					used := map[string]int64{}
					failed := 0
					for i, n := range first.placed {
						if n == "" {
							failed++
							continue
						}
						used[n] += order[i].demand()
						if order[i].spec == "T4" && nodes[slices.IndexFunc(nodes, func(x traceNode) bool { return x.name == n })].model != "T4" {
							t.Errorf("arrival %d asks for a T4 and went to %s", i, n)
						}
					}
					for n, u := range used {
						if u > int64(gpusOf[n])*1000 {
							t.Errorf("node %s was given %d milli-GPU of %d", n, u, gpusOf[n]*1000)
						}
					}
					// Every kind of pod is placed somewhere: in DRA mode whole
					// GPUs go through the class's mapping and shares through
					// claims, and neither may be refused wholesale.
					for _, p := range pods {
						if !slices.ContainsFunc(order, func(q tracePod) bool { return q.name == p.name }) {
							continue
						}
						placed := false
						for i, n := range first.placed {
							placed = placed || (n != "" && order[i].name == p.name)
						}
						if !placed {
							t.Errorf("no %s pod was placed", p.name)
						}
					}
					if failed != first.failed || failed == 0 {
						t.Errorf("%d arrivals failed, the result says %d; at 130%% of capacity some must fail", failed, first.failed)
					}
				})
			}
		})
	}
}
