package integration

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/idemsql/idemsql/idemhttp"
)

func init() {
	httpCases = append(httpCases,
		httpCase{"AbortOnTxDeathRunsTheRequestAgain", testHTTPAbortRetries},
		httpCase{"AbortRollsBackAndSendsTheHandlersAnswer", testHTTPAbortRollsBack})
}

// The handler's statement makes the database end or abort the transaction
// (a deadlock; an interrupted write on SQLite) and the handler passes the
// error to Abort. Run must see it and run the request again in a new
// transaction: one business row, the second run's 201 sent and stored.
func testHTTPAbortRetries(t *testing.T, h *httpEnv) {
	var d *deadlock
	if h.dialect != "sqlite" {
		d = h.newDeadlock()
	}
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, func(w http.ResponseWriter, r *http.Request) bool {
		if runs.Load() > 1 {
			return false
		}
		err := killTx(r.Context(), h.env, d, h.tx(r.Context()))
		if err == nil {
			t.Error("the transaction did not die")
			err = errors.New("no deadlock")
		}
		idemhttp.Abort(r.Context(), err)
		http.Error(w, "try again", http.StatusInternalServerError)
		return true
	}))
	q := request{key: "k", body: `{"amount":5}`}
	wantStatus(t, serve(t, srv, q), http.StatusCreated, false)
	if d != nil {
		d.wait(t)
	}
	key := storedKey("alice", "k")
	if runs.Load() != 2 || h.bizRows(key) != 1 {
		t.Fatalf("runs %d, business rows %d; want 2 runs, 1 row", runs.Load(), h.bizRows(key))
	}
	wantStatus(t, serve(t, srv, q), http.StatusCreated, true)
}

// Abort with an error no retry would cure: the handler's writes are rolled
// back although its answer (409) is a status that is stored by default;
// the client gets that answer, and a retry runs the handler again.
func testHTTPAbortRollsBack(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, func(w http.ResponseWriter, r *http.Request) bool {
		idemhttp.Abort(r.Context(), errors.New("out of stock"))
		http.Error(w, "out of stock", http.StatusConflict)
		return true
	}))
	q := request{key: "k", body: `{"amount":5}`}
	for i := 1; i <= 2; i++ {
		w := serve(t, srv, q)
		wantStatus(t, w, http.StatusConflict, false)
		if strings.TrimSpace(w.Body.String()) != "out of stock" {
			t.Fatalf("the handler's answer was not sent: %q", w.Body)
		}
	}
	key := storedKey("alice", "k")
	if runs.Load() != 2 || h.bizRows(key) != 0 || h.rowCount() != 0 {
		t.Fatalf("runs %d, business rows %d, idempotency rows %d; want 2, 0, 0", runs.Load(), h.bizRows(key), h.rowCount())
	}
	if n := h.inUse(); n != 0 {
		t.Fatalf("%d connections still in use", n)
	}
}
