package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
)

func TestInjectFault(t *testing.T) {
	m, err := fakegpu.New("dgxh100", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	gpu := m.UUIDs()[3]
	a := &Agent{machine: m}
	h := a.faultHandlers()[FaultPath]
	for _, tc := range []struct {
		name, method, query string
		code                int
		body                string
	}{
		{"xid", http.MethodPost, "gpu=" + gpu + "&xid=79", http.StatusNoContent, ""},
		{"double-bit ECC", http.MethodPost, "gpu=" + gpu + "&ecc=double", http.StatusNoContent, ""},
		{"GET", http.MethodGet, "gpu=" + gpu + "&xid=79", http.StatusMethodNotAllowed, "faults are injected with POST"},
		{"no GPU", http.MethodPost, "xid=79", http.StatusBadRequest, "gpu=<uuid> is required"},
		{"unknown GPU", http.MethodPost, "gpu=GPU-nope&xid=79", http.StatusBadRequest, `no GPU with UUID "GPU-nope"`},
		{"no fault", http.MethodPost, "gpu=" + gpu, http.StatusBadRequest, "exactly one of xid=<number> and ecc=double"},
		{"two faults", http.MethodPost, "gpu=" + gpu + "&xid=79&ecc=double", http.StatusBadRequest, "exactly one of"},
		{"bad xid", http.MethodPost, "gpu=" + gpu + "&xid=seventy", http.StatusBadRequest, `xid="seventy" is not a number`},
		{"single-bit ECC", http.MethodPost, "gpu=" + gpu + "&ecc=single", http.StatusBadRequest, "only ecc=double"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, FaultPath+"?"+tc.query, nil))
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
				t.Errorf("%s %s: %d %q, want %d containing %q", tc.method, tc.query, rec.Code, rec.Body.String(), tc.code, tc.body)
			}
		})
	}
	if hs := (&Agent{}).faultHandlers(); hs != nil {
		t.Errorf("fault handlers with real GPUs: %v, want none", hs)
	}
}
