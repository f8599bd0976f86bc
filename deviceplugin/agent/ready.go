package agent

import (
	"net/http"
)

// ReadyPath answers 200 once the node's GPUNode has been written, 503
// before. The chart's readiness probe uses it, so that a rollout (helm
// install --wait, kubectl rollout status) ends only when every GPU node's
// inventory exists, and `kubectl wait ... gpunode --all` right after it
// finds them all.
const ReadyPath = "/readyz"

func (a *Agent) readyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-a.pub.Published():
			_, _ = w.Write([]byte("ok"))
		default:
			http.Error(w, "the GPUNode has not been written yet", http.StatusServiceUnavailable)
		}
	})
}
