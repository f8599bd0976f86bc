package tesseragpu

import (
	"context"
	"fmt"
	"testing"

	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/pkg/assignment"
)

// BenchmarkFilterScore measures the per-node cost of Filter and Score on an
// 8-GPU node that is half used by shares, for a whole-GPU and a share pod.
func BenchmarkFilterScore(b *testing.B) {
	for _, strategy := range []config.ScoringStrategyType{config.ScoringStrategyBinpack, config.ScoringStrategySpread} {
		pl := testPlugin(b, strategy, gpuNode("n", 8, "H100"))
		for i := 0; i < 4; i++ {
			pl.cache.upsertPod(makePod(fmt.Sprintf("h%d", i), onNode("n"), percent("50"),
				annotate(assignment.Annotation, fmt.Sprintf(`{"main":[{"uuid":%q,"percent":50}]}`, uuid("n", i)))))
		}
		ni := nodeInfo("n")
		for _, pod := range []struct {
			name string
			opt  podOpt
		}{{"whole2", whole("2")}, {"share30", percent("30")}} {
			p := makePod("p", pod.opt)
			cs, _ := preFilter(b, pl, p)
			b.Run(fmt.Sprintf("%s/%s/Filter", strategy, pod.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					pl.Filter(context.Background(), cs, p, ni)
				}
			})
			b.Run(fmt.Sprintf("%s/%s/Score", strategy, pod.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					pl.Score(context.Background(), cs, p, ni)
				}
			})
		}
	}
}
