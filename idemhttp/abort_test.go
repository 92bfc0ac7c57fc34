package idemhttp_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idemsql"
)

// Abort outside New's middleware is a wiring mistake: silently doing
// nothing would let the handler's failed writes commit.
func TestAbortOutsideTheMiddlewarePanics(t *testing.T) {
	defer func() {
		r := recover()
		if s, ok := r.(string); !ok || !strings.Contains(s, "outside idemhttp.New") {
			t.Fatalf("recovered %v, want Abort's panic", r)
		}
	}()
	idemhttp.Abort(context.Background(), nil)
}

// Abort with an idemsql.Permanent error stores nothing, even with recorded
// failures on: the handler's answer goes to the client, and the next
// request runs the handler again.
func TestAbortWithPermanentStoresNothing(t *testing.T) {
	db, bound := newDB(t)
	mw, err := idemhttp.New(bound, idemhttp.Config{Unscoped: true, Options: idemsql.Options{RecordFailures: true}})
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		idemhttp.Abort(r.Context(), idemsql.Permanent("out_of_stock", errors.New("no stock")))
		http.Error(w, "out of stock", http.StatusConflict)
	}))
	for i := 1; i <= 2; i++ {
		if w := do(h, "POST", "k", ""); w.Code != http.StatusConflict || runs != i {
			t.Fatalf("request %d: %d %q, runs %d", i, w.Code, w.Body, runs)
		}
	}
	var rows int
	if err := db.QueryRow(`SELECT COUNT(*) FROM idempotency_keys`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("rows %d, %v", rows, err)
	}
}

// Abort after writing more than MaxResponseBytes: the client gets the
// middleware's 500, not the handler's truncated body.
func TestAbortWithResponseTooLarge(t *testing.T) {
	_, bound := newDB(t)
	mw, err := idemhttp.New(bound, idemhttp.Config{Unscoped: true, MaxResponseBytes: 10})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idemhttp.Abort(r.Context(), errors.New("failed"))
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("0123456789abcdefghij"))
	}))
	wantProblem(t, do(h, "POST", "k", ""), http.StatusInternalServerError, "response-too-large")
}

// A handler that runs its statements in goroutines may call Abort from any
// of them, at once: the request is aborted (the handler's answer is sent,
// nothing is stored, the next request runs the handler again), and the
// race detector finds nothing.
func TestAbortFromConcurrentGoroutines(t *testing.T) {
	db, bound := newDB(t)
	mw, err := idemhttp.New(bound, idemhttp.Config{Unscoped: true})
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() { idemhttp.Abort(r.Context(), fmt.Errorf("worker %d failed", i)) })
		}
		wg.Wait()
		http.Error(w, "a worker failed", http.StatusConflict)
	}))
	for i := 1; i <= 2; i++ {
		if w := do(h, "POST", "k", ""); w.Code != http.StatusConflict || runs != i {
			t.Fatalf("request %d: %d %q, runs %d", i, w.Code, w.Body, runs)
		}
	}
	var rows int
	if err := db.QueryRow(`SELECT COUNT(*) FROM idempotency_keys`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("rows %d, %v", rows, err)
	}
}
