package main

import (
	"errors"
	"fmt"
	"net"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"

	"github.com/tessera-gpu/tessera/pkg/report"
)

// describeAPIError turns an API error into what the user can do about it.
func describeAPIError(err error, cfg *rest.Config) string {
	var status apierrors.APIStatus
	switch {
	case errors.Is(err, report.ErrNoGPUNodeAPI):
		return "Tessera is not installed in this cluster: it does not serve the GPUNode API (gpunodes.tessera.io/v1alpha1).\n" +
			"Install it with\n" +
			"  helm install tessera manifests/charts/tessera -n tessera-system --create-namespace\n" +
			"or\n" +
			"  kubectl apply -k manifests/install"
	case apierrors.IsForbidden(err):
		msg := err.Error()
		if errors.As(err, &status) {
			msg = status.Status().Message
		}
		return "permission denied: " + msg + "\n" +
			"kubectl tessera needs get and list on nodes, pods, events and gpunodes.tessera.io; ask a cluster administrator for read access."
	case apierrors.IsUnauthorized(err):
		return fmt.Sprintf("the API server at %s did not accept your credentials; check the user in your kubeconfig or log in again (%v)", cfg.Host, err)
	case utilnet.IsConnectionRefused(err) || isUnreachable(err):
		return fmt.Sprintf("cannot reach the API server at %s; check the cluster in your kubeconfig and --context (%v)", cfg.Host, err)
	}
	return err.Error()
}

// isUnreachable reports network failures other than a refused connection:
// unknown hosts, timeouts and resets.
func isUnreachable(err error) bool {
	var dns *net.DNSError
	return utilnet.IsConnectionReset(err) || utilnet.IsTimeout(err) || errors.As(err, &dns)
}
