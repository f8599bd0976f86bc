package tesseragpu

import (
	v1 "k8s.io/api/core/v1"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/config"
	"github.com/tessera-gpu/tessera/pkg/device"
	"github.com/tessera-gpu/tessera/plugins/tesseragpu/gpucache"
)

// scorer is a scoring strategy: how Score rates the nodes Filter admitted
// and which devices Reserve takes there. New chooses one from the args, so
// that the extension points never ask which strategy is in force.
type scorer interface {
	// name labels the placement metric.
	name() string
	// planStrategy is the device choice Filter checks feasibility with.
	planStrategy() device.Strategy
	// signPod returns the signature fragments the scores depend on beyond
	// what every strategy reads (the request, tolerations, priority).
	signPod(pod *v1.Pod) []fwk.SignFragment
	// preFilter sees each pod once per cycle, req being empty for a pod
	// without GPUs. It returns the pod's CPU request for scoring (0 when
	// the scorer does not use it), and whether a pod without GPUs is to be
	// scored at all.
	preFilter(pod *v1.Pod, req *device.Request) (cpu int64, scoreWithoutGPUs bool)
	// filterScore rates placement p, avoiding avoid, on a node of state st
	// while Filter has the node (fit), for Score to return; scorers that
	// rate in Score return 0.
	filterScore(s *cycleState, st *gpucache.NodeState, p device.Placement, avoid uint64) int64
	// preScore runs once per cycle, before the cycle's first score.
	preScore()
	// score rates the node: f is what Filter found there in this cycle,
	// or, for a pod without GPUs, only the node's state (nil without one).
	score(s *cycleState, f gpucache.Fit, ni fwk.NodeInfo) int64
	// normalize maps a cycle's scores, at least one, onto
	// MinNodeScore..MaxNodeScore.
	normalize(scores fwk.NodeScoreList)
	// placement is the devices Reserve takes on node, given what Filter
	// found there.
	placement(s *cycleState, f gpucache.Fit, node string) device.Placement
}

// newScorer returns the scorer of the args' strategy. handle returns the
// framework's handle once New has it.
func newScorer(args *config.TesseraGPUArgs, c gpucache.Interface, handle func() fwk.Handle) scorer {
	w := device.Weights{
		Node: int64(args.Weights.Node), Device: int64(args.Weights.GPU),
		Topology: int64(args.Weights.Topology), Taint: int64(args.Weights.DeviceTaint),
	}
	switch args.ScoringStrategy.Type {
	case config.ScoringStrategySpread:
		return &deviceScorer{strategy: device.Spread, weights: w}
	case config.ScoringStrategyFragmentation:
		return &fragmentationScorer{weights: w, cache: c, handle: handle,
			workload: newWorkloadEstimator(args.ScoringStrategy.Fragmentation)}
	default:
		return &deviceScorer{strategy: device.Binpack, weights: w}
	}
}

// deviceScorer is the binpack and spread strategies: a node's score is
// that of the devices the strategy picks there (device.Placement.Score),
// worked out in Filter.
type deviceScorer struct {
	strategy device.Strategy
	weights  device.Weights
}

var _ scorer = &deviceScorer{}
var _ scorer = &fragmentationScorer{}

func (ds *deviceScorer) name() string {
	if ds.strategy == device.Spread {
		return string(config.ScoringStrategySpread)
	}
	return string(config.ScoringStrategyBinpack)
}

func (ds *deviceScorer) planStrategy() device.Strategy { return ds.strategy }

// signPod adds nothing: the scores depend on the request and the node.
func (ds *deviceScorer) signPod(*v1.Pod) []fwk.SignFragment { return nil }

// preFilter leaves pods without GPUs unscored.
func (ds *deviceScorer) preFilter(*v1.Pod, *device.Request) (int64, bool) { return 0, false }

func (ds *deviceScorer) filterScore(s *cycleState, st *gpucache.NodeState, p device.Placement, avoid uint64) int64 {
	return p.Score(st.Inv, st.Used, s.req, avoid, ds.strategy, ds.weights)
}

func (ds *deviceScorer) preScore() {}

func (ds *deviceScorer) score(_ *cycleState, f gpucache.Fit, _ fwk.NodeInfo) int64 { return f.Score }

// normalize stretches the scores linearly over 0..MaxNodeScore.
func (ds *deviceScorer) normalize(scores fwk.NodeScoreList) {
	lo, hi := scores[0].Score, scores[0].Score
	for _, s := range scores {
		lo, hi = min(lo, s.Score), max(hi, s.Score)
	}
	for i := range scores {
		if hi == lo {
			scores[i].Score = fwk.MaxNodeScore
			continue
		}
		scores[i].Score = (scores[i].Score - lo) * fwk.MaxNodeScore / (hi - lo)
	}
}

func (ds *deviceScorer) placement(_ *cycleState, f gpucache.Fit, _ string) device.Placement {
	return f.Placement
}
