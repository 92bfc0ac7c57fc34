package integration

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idemsql"
)

// TestHTTPLease runs idemhttp's lease-mode middleware (NewExternal) against
// every backend: the handler calls a fake external provider with the
// lease's downstream key, and the response is recorded after it returns.
func TestHTTPLease(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			runHTTPCases(t, b, httpLeaseCases)
		})
	}
}

var httpLeaseCases = []httpCase{
	{"RunsOnceAndReplays", testHTTPLeaseReplays},
	{"DuplicateInFlight409", testHTTPLeaseInFlight},
	{"ServerErrorRetrySameDownstreamKey", testHTTPLeaseServerError},
	{"PanicRecordsNothingLeaseRunsOut", testHTTPLeasePanic},
}

// provider is an external system that deduplicates by the idempotency key
// it is given, as Stripe's API does.
type provider struct {
	mu      sync.Mutex
	calls   int
	effects map[string]int // downstream key → effects
	keys    []string       // downstream key of each call
}

func (p *provider) charge(downstreamKey string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.keys = append(p.keys, downstreamKey)
	if p.effects == nil {
		p.effects = map[string]int{}
	}
	if p.effects[downstreamKey] == 0 {
		p.effects[downstreamKey] = 1
	}
}

func (p *provider) totalEffects() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, e := range p.effects {
		n += e
	}
	return n
}

// chargeHandler calls the provider with the lease's downstream key, then
// calls hook, which may answer instead (returning true); else it answers
// 201.
func chargeHandler(t *testing.T, p *provider, runs *atomic.Int64, hook func(w http.ResponseWriter, r *http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		if _, ok := idemhttp.Tx[any](r.Context()); ok {
			t.Error("a lease-mode handler got a transaction")
		}
		l, ok := idemhttp.Claim(r.Context())
		if !ok || l.DownstreamKey == "" {
			t.Error("no lease in the request's context")
		}
		p.charge(l.DownstreamKey)
		if hook != nil && hook(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"charged":true}`))
	})
}

func (h *httpEnv) leaseGuard(next http.Handler, opts ...idemsql.Options) http.Handler {
	h.t.Helper()
	cfg := testConfig()
	cfg.Options = withOptions(idemsql.Options{}, opts...)
	mw, err := h.external(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	return mw(next)
}

func testHTTPLeaseReplays(t *testing.T, h *httpEnv) {
	var p provider
	var runs atomic.Int64
	srv := h.leaseGuard(chargeHandler(t, &p, &runs, nil))
	q := request{key: "k", body: `{"amount":1}`}
	wantStatus(t, serve(t, srv, q), http.StatusCreated, false)
	again := serve(t, srv, q)
	wantStatus(t, again, http.StatusCreated, true)
	if again.Body.String() != `{"charged":true}` {
		t.Fatalf("replay %q", again.Body)
	}
	wantProblem(t, serve(t, srv, request{key: "k", body: `{"amount":2}`}), http.StatusUnprocessableEntity, "key-reused")
	key := storedKey("alice", "k")
	if runs.Load() != 1 || p.totalEffects() != 1 || !strings.HasPrefix(p.keys[0], key+":") {
		t.Fatalf("runs %d, effects %d, downstream keys %v", runs.Load(), p.totalEffects(), p.keys)
	}
	if s := h.queryString("SELECT status FROM "+h.table+" WHERE idem_key = ?", key); s != idemsql.StatusCompleted {
		t.Fatalf("status %q", s)
	}
}

// testHTTPLeaseInFlight: the claim is committed before the handler runs,
// so a duplicate is answered 409 on every database, SQLite included.
func testHTTPLeaseInFlight(t *testing.T, h *httpEnv) {
	var p provider
	var runs atomic.Int64
	entered, release := make(chan struct{}), make(chan struct{})
	srv := h.leaseGuard(chargeHandler(t, &p, &runs, func(w http.ResponseWriter, r *http.Request) bool {
		if runs.Load() == 1 {
			close(entered)
			<-release
		}
		return false
	}))
	q := request{key: "k", body: `{"amount":1}`}
	firstDone := make(chan *httptest.ResponseRecorder)
	go func() { firstDone <- serve(t, srv, q) }()
	<-entered
	dup := serve(t, srv, q)
	wantProblem(t, dup, http.StatusConflict, "in-flight")
	if dup.Header().Get("Retry-After") == "" {
		t.Fatal("409 without Retry-After")
	}
	close(release)
	wantStatus(t, <-firstDone, http.StatusCreated, false)
	wantStatus(t, serve(t, srv, q), http.StatusCreated, true)
	if runs.Load() != 1 || p.totalEffects() != 1 {
		t.Fatalf("runs %d, effects %d", runs.Load(), p.totalEffects())
	}
}

// testHTTPLeaseServerError: a 5xx is not stored; the lease ends without an
// outcome and the retry runs the handler again at once, with the same
// downstream key, which the provider deduplicates.
func testHTTPLeaseServerError(t *testing.T, h *httpEnv) {
	var p provider
	var runs atomic.Int64
	srv := h.leaseGuard(chargeHandler(t, &p, &runs, func(w http.ResponseWriter, r *http.Request) bool {
		if runs.Load() == 1 {
			http.Error(w, "provider timed out", http.StatusGatewayTimeout)
			return true
		}
		return false
	}))
	q := request{key: "k", body: `{"amount":1}`}
	first := serve(t, srv, q)
	wantStatus(t, first, http.StatusGatewayTimeout, false)
	if strings.TrimSpace(first.Body.String()) != "provider timed out" {
		t.Fatalf("the handler's own 504 was not sent: %q", first.Body)
	}
	wantStatus(t, serve(t, srv, q), http.StatusCreated, false)
	wantStatus(t, serve(t, srv, q), http.StatusCreated, true)
	if runs.Load() != 2 || p.calls != 2 || p.keys[0] != p.keys[1] || p.totalEffects() != 1 {
		t.Fatalf("runs %d, calls %d, downstream keys %v, effects %d", runs.Load(), p.calls, p.keys, p.totalEffects())
	}
}

// testHTTPLeasePanic: a panicking handler records nothing; duplicates get
// 409 while its lease is live, and once it has run out the next request
// takes the key over and runs again with the same downstream key.
func testHTTPLeasePanic(t *testing.T, h *httpEnv) {
	var p provider
	var runs atomic.Int64
	srv := h.leaseGuard(chargeHandler(t, &p, &runs, func(w http.ResponseWriter, r *http.Request) bool {
		if runs.Load() == 1 {
			panic("handler bug")
		}
		return false
	}), idemsql.Options{Lease: time.Second})
	q := request{key: "k", body: `{"amount":1}`}
	func() {
		defer func() {
			if r := recover(); r != "handler bug" {
				t.Fatalf("recovered %v, want the handler's panic", r)
			}
		}()
		serve(t, srv, q)
	}()
	key := storedKey("alice", "k")
	if s := h.queryString("SELECT status FROM "+h.table+" WHERE idem_key = ?", key); s != idemsql.StatusInProgress {
		t.Fatalf("status %q after a panic", s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		w := serve(t, srv, q)
		if w.Code == http.StatusConflict {
			wantProblem(t, w, http.StatusConflict, "in-flight")
			if time.Now().After(deadline) {
				t.Fatal("the key was never taken over")
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		wantStatus(t, w, http.StatusCreated, false)
		break
	}
	wantStatus(t, serve(t, srv, q), http.StatusCreated, true)
	if runs.Load() != 2 || p.keys[0] != p.keys[1] || p.totalEffects() != 1 {
		t.Fatalf("runs %d, downstream keys %v, effects %d", runs.Load(), p.keys, p.totalEffects())
	}
}
