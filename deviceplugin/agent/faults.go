package agent

import (
	"fmt"
	"net/http"
	"strconv"

	"k8s.io/klog/v2"
)

// FaultPath is where, in fake mode only, the metrics endpoint accepts
// faults to inject into the fake machine:
//
//	POST /fake/faults?gpu=<uuid>&xid=79     a critical XID on that GPU
//	POST /fake/faults?gpu=<uuid>&ecc=double a double-bit ECC error
//
// so that health handling (the GPUNode, device taints, the kubelet's
// resource health, evictions) can be tried on a cluster without GPUs, and is
// tested that way end to end. It is never served with real GPUs.
const FaultPath = "/fake/faults"

// faultHandlers returns the fault injector's handler in fake mode, none
// otherwise.
func (a *Agent) faultHandlers() map[string]http.Handler {
	if a.machine == nil {
		return nil
	}
	return map[string]http.Handler{FaultPath: http.HandlerFunc(a.injectFault)}
}

func (a *Agent) injectFault(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "faults are injected with POST", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	uuid, xid, ecc := q.Get("gpu"), q.Get("xid"), q.Get("ecc")
	var err error
	switch {
	case uuid == "":
		err = fmt.Errorf("gpu=<uuid> is required")
	case (xid == "") == (ecc == ""):
		err = fmt.Errorf("give exactly one of xid=<number> and ecc=double")
	case xid != "":
		var n uint64
		if n, err = strconv.ParseUint(xid, 10, 64); err != nil {
			err = fmt.Errorf("xid=%q is not a number", xid)
			break
		}
		err = a.machine.InjectXID(uuid, n)
	case ecc != "double":
		err = fmt.Errorf("ecc=%q: only ecc=double (a double-bit error) is supported", ecc)
	default:
		err = a.machine.InjectDoubleBitECC(uuid)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	klog.FromContext(r.Context()).Info("Injected a fault into the fake machine", "gpu", uuid, "xid", xid, "ecc", ecc)
	w.WriteHeader(http.StatusNoContent)
}
