package agent

import (
	"net/http"
)

// ReadyPath answers 200 once the node's GPUNode has been written and the
// kubelet watches both of the plugin's resources, 503 before and whenever
// the kubelet stops watching (it restarts). The chart's readiness probe
// uses it, so that a rollout (helm install or upgrade --wait, kubectl
// rollout status) ends only when every GPU node's inventory exists and its
// kubelet offers the GPUs again: a GPU pod created right after it is
// admitted, and `kubectl wait ... gpunode --all` finds every GPUNode.
const ReadyPath = "/readyz"

func (a *Agent) readyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-a.pub.Published():
		default:
			http.Error(w, "the GPUNode has not been written yet", http.StatusServiceUnavailable)
			return
		}
		if a.srv == nil || !a.srv.Serving() {
			http.Error(w, "the kubelet does not watch the GPUs yet (not registered, or the kubelet restarted)", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
}
