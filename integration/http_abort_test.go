package integration

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	httpCases = append(httpCases,
		httpCase{"AbortOnTxDeathRunsTheRequestAgain", testHTTPAbortRetries},
		httpCase{"AbortRollsBackAndSendsTheHandlersAnswer", testHTTPAbortRollsBack},
		httpCase{"AbortRetryableOnEveryAttempt503", testHTTPAbortRetryableExhausted})
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

// The handler's statement makes the database end or abort the transaction
// on every attempt, and the handler passes the error to Abort and answers
// 409. When Run's attempts run out, the client must get the documented 503
// #retry with Retry-After (docs/http.md), not the handler's answer to one
// attempt's failure: the request may well succeed if sent again. Over real
// HTTP, as a client sees it.
func testHTTPAbortRetryableExhausted(t *testing.T, h *httpEnv) {
	const attempts = 3
	var d *deadlock
	if h.dialect != "sqlite" {
		d = h.newDeadlock()
	}
	var runs atomic.Int64
	cfg := testConfig()
	cfg.Options = idemsql.Options{MaxAttempts: attempts, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}
	srv := httptest.NewServer(h.guard(cfg, h.orderHandler(&runs, func(w http.ResponseWriter, r *http.Request) bool {
		if d != nil && runs.Load() > 1 {
			// The last attempt's opponent: it commits once that attempt's
			// transaction is rolled back.
			if err := <-d.opponent; err != nil {
				t.Errorf("opponent: %v", err)
			}
		}
		// The opponent outlives the request: the last one commits as the
		// answer goes out.
		err := killTx(context.WithoutCancel(r.Context()), h.env, d, h.tx(r.Context()))
		if err == nil {
			t.Error("the transaction did not die")
			err = errors.New("no deadlock")
		}
		idemhttp.Abort(r.Context(), err)
		http.Error(w, "conflict, try again", http.StatusConflict)
		return true
	})))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{"amount":5}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(principalHeader, "alice")
	req.Header.Set("Idempotency-Key", "k")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if d != nil {
		d.wait(t)
	}
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
		resp.Header.Get("Content-Type") != idemhttp.ProblemContentType {
		t.Fatalf("got %d, Retry-After %q, %q: %s; want 503 #retry with Retry-After: 1",
			resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"), strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &p); err != nil || !strings.HasSuffix(p.Type, "#retry") || p.Status != http.StatusServiceUnavailable {
		t.Fatalf("problem %s (%v), want #retry", body, err)
	}
	key := storedKey("alice", "k")
	if runs.Load() != attempts || h.bizRows(key) != 0 || h.rowCount() != 0 {
		t.Fatalf("runs %d, business rows %d, idempotency rows %d; want %d, 0, 0", runs.Load(), h.bizRows(key), h.rowCount(), attempts)
	}
}
