package idemhttp_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idemsql"
)

// A request the handler refuses before beginning anything (a body that
// fails validation) leaves the key free: the client corrects the request
// and sends it again under the same key, and it runs, as Stripe has it.
// Without NotBegun the 422 is stored, and the corrected request gets
// key-reused.
func TestNotBegunLeavesTheKeyFree(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		db, store := newDB(t)
		runs := 0
		h := mount(t, m, store, idemhttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if strings.Contains(string(body), "bad") {
				idemhttp.NotBegun(r.Context())
				http.Error(w, "amount must be positive", http.StatusUnprocessableEntity)
				return
			}
			runs++
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, "run %d", runs)
		})
		for i := 0; i < 2; i++ {
			if w := do(h, "POST", "k", `{"amount": "bad"}`); w.Code != http.StatusUnprocessableEntity || replayed(w) ||
				!strings.Contains(w.Body.String(), "amount must be positive") {
				t.Fatalf("refused request %d: %d %q", i+1, w.Code, w.Body)
			}
			if n := rows(t, db); n != 0 {
				t.Fatalf("refused request %d left %d rows", i+1, n)
			}
		}
		if w := do(h, "POST", "k", `{"amount": 5}`); w.Code != http.StatusCreated || w.Body.String() != "run 1" {
			t.Fatalf("the corrected request under the same key: %d %q", w.Code, w.Body)
		}
		if w := do(h, "POST", "k", `{"amount": 5}`); w.Code != http.StatusCreated || !replayed(w) || runs != 1 {
			t.Fatalf("its retry: %d %q replayed %v, runs %d", w.Code, w.Body, replayed(w), runs)
		}
	})
}

func rows(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM idempotency_keys`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// In lease mode a claim taken over from a holder that died may stand for
// an effect of that holder's: NotBegun only speaks for this run, so the
// claim is released, as for any status not stored, and keeps its
// downstream key.
func TestNotBegunAfterATakeoverReleases(t *testing.T) {
	db, store := newDB(t)
	fp := func(*http.Request, []byte) []byte { return []byte("the request") }
	var seen idemsql.Claim
	h := mount(t, modes[1], store, idemhttp.Config{Fingerprint: fp}, func(w http.ResponseWriter, r *http.Request) {
		seen, _ = idemhttp.Claim(r.Context())
		idemhttp.NotBegun(r.Context())
		w.WriteHeader(http.StatusUnprocessableEntity)
	})
	ctx := context.Background()
	key := idemhttp.StoredKey(idemhttp.DefaultNamespace, "u1", "k", false)
	dead, err := idemsql.ClaimLease(ctx, store, key, idemsql.Options{Fingerprint: []byte("the request"), Lease: 20 * time.Millisecond})
	if err != nil || !dead.Held {
		t.Fatalf("claim: %+v %v", dead, err)
	}
	for {
		r, _, err := idemsql.Lookup(ctx, store, key)
		if err != nil {
			t.Fatal(err)
		}
		if r.Lease == idemsql.LeaseStale {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if w := do(h, "POST", "k", ""); w.Code != http.StatusUnprocessableEntity || seen.Attempt != 2 {
		t.Fatalf("the request that took over: %d, attempt %d", w.Code, seen.Attempt)
	}
	r, found, err := idemsql.Lookup(ctx, store, key)
	if err != nil || !found || r.Lease != idemsql.LeaseReleased || r.Attempt != 2 || r.DownstreamKey != dead.DownstreamKey {
		t.Fatalf("after NotBegun on a claim taken over: %+v %v %v; want it released, with its downstream key", r, found, err)
	}
	if n := rows(t, db); n != 1 {
		t.Fatalf("%d rows", n)
	}
}

// NotBegun outside the middleware is a wiring mistake, as Abort's is.
func TestNotBegunOutsideTheMiddlewarePanics(t *testing.T) {
	defer func() {
		if s, ok := recover().(string); !ok || !strings.Contains(s, "NotBegun outside") {
			t.Fatalf("recovered %v, want NotBegun's panic", s)
		}
	}()
	idemhttp.NotBegun(context.Background())
}

// A handler's 429 (its own rate limit) is not stored by default: a client
// that waits as Retry-After says gets through with the same key.
func TestTooManyRequestsNotStored(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		_, store := newDB(t)
		runs := 0
		h := mount(t, m, store, idemhttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
			runs++
			if runs == 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			w.WriteHeader(http.StatusCreated)
		})
		if w := do(h, "POST", "k", "x"); w.Code != http.StatusTooManyRequests {
			t.Fatalf("first: %d", w.Code)
		}
		if w := do(h, "POST", "k", "x"); w.Code != http.StatusCreated || replayed(w) || runs != 2 {
			t.Fatalf("after Retry-After: %d replayed %v, runs %d; want the handler to run", w.Code, replayed(w), runs)
		}
	})
}
