package integration

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/idemsql/idemsql/idemhttp"
)

// TestHTTPNotBegun: on every backend, in both modes, a request the handler
// refuses before beginning anything (idemhttp.NotBegun) stores nothing and
// leaves the key free for the corrected request, and a handler's own 429
// is not stored, so the retry after Retry-After runs.
func TestHTTPNotBegun(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			runHTTPCases(t, b, []httpCase{
				{"Atomic", func(t *testing.T, h *httpEnv) { testHTTPNotBegun(t, h, h.atomic) }},
				{"Lease", func(t *testing.T, h *httpEnv) { testHTTPNotBegun(t, h, h.external) }},
			})
		})
	}
}

func testHTTPNotBegun(t *testing.T, h *httpEnv, mw func(idemhttp.Config) (func(http.Handler) http.Handler, error)) {
	var runs, limited atomic.Int64
	guard, err := mw(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var o order
		if err := json.NewDecoder(r.Body).Decode(&o); err != nil || o.Amount <= 0 {
			idemhttp.NotBegun(r.Context())
			http.Error(w, "amount must be positive", http.StatusUnprocessableEntity)
			return
		}
		if o.Amount == 429 && limited.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		run := runs.Add(1)
		if _, isLease := idemhttp.Claim(r.Context()); !isLease {
			key, _ := idemhttp.Key(r.Context())
			if err := h.exec(r.Context(), "INSERT INTO "+h.biz+" (idem_key, amount) VALUES (?, ?)", key, o.Amount); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		o.Run = run
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(o)
	}))

	bad := request{key: `"order-1"`, body: `{"amount":-5}`}
	wantStatus(t, serve(t, srv, bad), http.StatusUnprocessableEntity, false)
	wantStatus(t, serve(t, srv, bad), http.StatusUnprocessableEntity, false) // validated again, not replayed
	if n := h.rowCount(); n != 0 {
		t.Fatalf("the refused requests left %d rows", n)
	}
	good := request{key: `"order-1"`, body: `{"amount":5}`}
	wantStatus(t, serve(t, srv, good), http.StatusCreated, false)
	wantStatus(t, serve(t, srv, good), http.StatusCreated, true)
	if runs.Load() != 1 {
		t.Fatalf("the handler ran %d times past validation", runs.Load())
	}

	limit := request{key: `"order-2"`, body: `{"amount":429}`}
	wantStatus(t, serve(t, srv, limit), http.StatusTooManyRequests, false)
	wantStatus(t, serve(t, srv, limit), http.StatusCreated, false)
	wantStatus(t, serve(t, srv, limit), http.StatusCreated, true)
}
