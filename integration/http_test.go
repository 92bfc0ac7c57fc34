package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idempostgres"
)

// TestHTTP runs idemhttp's atomic-mode middleware against every backend,
// each with its own pool and transaction type (pgx.Tx on postgres-pgx,
// *sql.Tx elsewhere): the handler's business insert and the stored response
// commit together.
func TestHTTP(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			runHTTPCases(t, b, httpCases)
			t.Run("PanicStoresNothingAndLeaksNoConnection", func(t *testing.T) {
				testHTTPPanic(t, newHTTPEnv(t, b, 1))
			})
		})
	}
}

// httpCase is one test of a middleware, run on every backend.
type httpCase struct {
	name string
	run  func(t *testing.T, h *httpEnv)
}

// runHTTPCases runs each case on b, in an environment of its own with a
// pool of 8 connections, and checks afterwards that no request left a
// connection of the pool behind.
func runHTTPCases(t *testing.T, b backend, cases []httpCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHTTPEnv(t, b, 8)
			c.run(t, h)
			h.noConnectionInUse(t)
		})
	}
}

var httpCases = []httpCase{
	{"FirstRequestRunsRetryReplays", testHTTPFirstAndReplay},
	{"KeyReusedWithOtherBody422", testHTTPKeyReused},
	{"MissingOrBadKey400", testHTTPBadKey},
	{"BodyTooLarge413", testHTTPBodyTooLarge},
	{"GetPassesThrough", testHTTPGetPassesThrough},
	{"DuplicateInFlight", testHTTPInFlight},
	{"DuplicateInFlightWaitsUnderLockTimeout", testHTTPInFlightWaits},
	{"ConcurrentDuplicatesOneEffect", testHTTPConcurrentDuplicates},
	{"PrincipalsAreIndependent", testHTTPPrincipals},
	{"ServerErrorNotStoredRetryRunsAgain", testHTTPServerErrorNotStored},
	{"ClientErrorStoredAndReplayed", testHTTPClientErrorStored},
}

// httpEnv is one test's backend, seen through HTTP.
type httpEnv struct {
	*env
	// atomic and external make the middlewares on the backend's own pool.
	atomic, external func(cfg idemhttp.Config) (func(http.Handler) http.Handler, error)
	// exec runs a statement in the request's transaction, taken from its
	// context with idemhttp.MustTx and the backend's transaction type.
	exec func(ctx context.Context, query string, args ...any) error
	// inUse counts the pool's connections in use.
	inUse func() int
	// tx is the request's transaction as a testTx.
	tx func(ctx context.Context) testTx
}

// newHTTPEnv sets b up with a pool of at most conns connections for the
// middleware.
func newHTTPEnv(t *testing.T, b backend, conns int) *httpEnv {
	e := b.setup(t)
	h := &httpEnv{env: e}
	if b.name == "postgres-pgx" {
		cfg, err := pgxpool.ParseConfig(postgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = int32(conns)
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		db := storeOn(e, idempostgres.New(pool))
		h.atomic = func(cfg idemhttp.Config) (func(http.Handler) http.Handler, error) { return idemhttp.New(db, cfg) }
		h.external = func(cfg idemhttp.Config) (func(http.Handler) http.Handler, error) {
			return idemhttp.NewExternal(db, cfg)
		}
		h.exec = func(ctx context.Context, q string, args ...any) error {
			_, err := idemhttp.MustTx[pgx.Tx](ctx).Exec(ctx, e.q(q), args...)
			return err
		}
		h.inUse = func() int { return int(pool.Stat().AcquiredConns()) }
		h.tx = func(ctx context.Context) testTx {
			return pgxTestTx{tx: idemhttp.MustTx[pgx.Tx](ctx), store: db}
		}
		return h
	}
	e.db.SetMaxOpenConns(conns)
	db := e.store
	h.atomic = func(cfg idemhttp.Config) (func(http.Handler) http.Handler, error) { return idemhttp.New(db, cfg) }
	h.external = func(cfg idemhttp.Config) (func(http.Handler) http.Handler, error) {
		return idemhttp.NewExternal(db, cfg)
	}
	h.exec = func(ctx context.Context, q string, args ...any) error {
		_, err := idemhttp.MustTx[*sql.Tx](ctx).ExecContext(ctx, e.q(q), args...)
		return err
	}
	h.inUse = func() int { return settled(func() int { return e.db.Stats().InUse }) }
	h.tx = func(ctx context.Context) testTx { return sqlTestTx{tx: idemhttp.MustTx[*sql.Tx](ctx), store: e.store} }
	return h
}

// noConnectionInUse checks, once a case's requests have all been answered,
// that none left a connection of the pool behind: whatever the handler
// answered, stored or not, the transaction ended.
func (h *httpEnv) noConnectionInUse(t *testing.T) {
	t.Helper()
	if n := h.inUse(); n != 0 {
		t.Errorf("%d connections of the pool still in use after every request was answered", n)
	}
}

// principalHeader carries the principal in these tests, as an
// authenticating proxy in front of the application would.
const principalHeader = "X-User"

func testConfig() idemhttp.Config {
	return idemhttp.Config{Principal: func(r *http.Request) (string, error) { return r.Header.Get(principalHeader), nil }}
}

// order is the handlers' response body.
type order struct {
	Amount int64 `json:"amount"`
	Run    int64 `json:"run"`
}

// orderHandler inserts one business row under the request's stored key in
// the request's transaction, then calls hook, if any, which may answer
// instead (returning true); else it answers 201 with the order.
func (h *httpEnv) orderHandler(runs *atomic.Int64, hook func(w http.ResponseWriter, r *http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		run := runs.Add(1)
		var o order
		if err := json.NewDecoder(r.Body).Decode(&o); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		key, _ := idemhttp.Key(r.Context())
		if err := h.exec(r.Context(), "INSERT INTO "+h.biz+" (idem_key, amount) VALUES (?, ?)", key, o.Amount); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if hook != nil && hook(w, r) {
			return
		}
		o.Run = run
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", fmt.Sprintf("/orders/%d", run))
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(o)
	})
}

func (h *httpEnv) guard(cfg idemhttp.Config, next http.Handler) http.Handler {
	h.t.Helper()
	mw, err := h.atomic(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	return mw(next)
}

// request is one client's call: POST /orders with the key and body.
type request struct {
	user, key, body, method string
}

func serve(t *testing.T, srv http.Handler, q request) *httptest.ResponseRecorder {
	t.Helper()
	if q.method == "" {
		q.method = http.MethodPost
	}
	if q.user == "" {
		q.user = "alice"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := httptest.NewRequestWithContext(ctx, q.method, "/orders", strings.NewReader(q.body))
	r.Header.Set(principalHeader, q.user)
	if q.key != "" {
		r.Header.Set("Idempotency-Key", q.key)
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	return w
}

func storedKey(user, key string) string { return idemhttp.StoredKey("http", user, key, false) }

func replayed(w *httptest.ResponseRecorder) bool {
	return w.Header().Get("Idempotent-Replayed") == "true"
}

func wantStatus(t *testing.T, w *httptest.ResponseRecorder, status int, replay bool) {
	t.Helper()
	if w.Code != status || replayed(w) != replay {
		t.Fatalf("got %d (replayed %v) %s, want %d (replayed %v)", w.Code, replayed(w), strings.TrimSpace(w.Body.String()), status, replay)
	}
}

// wantProblem checks a problem+json answer of the middleware.
func wantProblem(t *testing.T, w *httptest.ResponseRecorder, status int, name string) {
	t.Helper()
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	}
	if w.Code != status || w.Header().Get("Content-Type") != idemhttp.ProblemContentType {
		t.Fatalf("got %d %q %s, want problem %d %s", w.Code, w.Header().Get("Content-Type"), w.Body, status, name)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || !strings.HasSuffix(p.Type, "#"+name) || p.Status != status {
		t.Fatalf("problem %s (%v), want %s", w.Body, err, name)
	}
}

func (h *httpEnv) rowCount() int64 {
	h.t.Helper()
	return h.queryInt("SELECT COUNT(*) FROM " + h.table)
}

func testHTTPFirstAndReplay(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, nil))
	q := request{key: `"8e03978e-40d5-43e8-bc93-6894a57f9324"`, body: `{"amount":4200}`}
	first := serve(t, srv, q)
	wantStatus(t, first, http.StatusCreated, false)
	retry := serve(t, srv, q)
	wantStatus(t, retry, http.StatusCreated, true)
	if retry.Body.String() != first.Body.String() || retry.Header().Get("Location") != "/orders/1" ||
		retry.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("replay %v %q, first %q", retry.Header(), retry.Body, first.Body)
	}
	key := storedKey("alice", "8e03978e-40d5-43e8-bc93-6894a57f9324")
	if runs.Load() != 1 || h.bizRows(key) != 1 {
		t.Fatalf("runs %d, business rows %d", runs.Load(), h.bizRows(key))
	}
	// The stored response is readable with the database's JSON functions.
	if got := h.resultField(key, "status"); got != "201" {
		t.Fatalf("stored status %q", got)
	}
}

func testHTTPKeyReused(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, nil))
	wantStatus(t, serve(t, srv, request{key: "k", body: `{"amount":1}`}), http.StatusCreated, false)
	wantProblem(t, serve(t, srv, request{key: "k", body: `{"amount":2}`}), http.StatusUnprocessableEntity, "key-reused")
	wantProblem(t, serve(t, srv, request{key: "k", body: `{"amount":1}`, method: http.MethodPut}), http.StatusUnprocessableEntity, "key-reused")
	wantStatus(t, serve(t, srv, request{key: "k", body: `{"amount":1}`}), http.StatusCreated, true)
	if runs.Load() != 1 || h.bizRows(storedKey("alice", "k")) != 1 {
		t.Fatalf("runs %d", runs.Load())
	}
}

func testHTTPBadKey(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, nil))
	wantProblem(t, serve(t, srv, request{body: `{}`}), http.StatusBadRequest, "missing-key")
	for _, key := range []string{`"unterminated`, `""`, `"k";p=1`, "k y", strings.Repeat("k", 256), `"caf` + "\xc3\xa9" + `"`} {
		wantProblem(t, serve(t, srv, request{key: key, body: `{}`}), http.StatusBadRequest, "invalid-key")
	}
	if runs.Load() != 0 || h.rowCount() != 0 {
		t.Fatalf("runs %d, rows %d", runs.Load(), h.rowCount())
	}
	// The longest key accepted runs, and is stored hashed.
	long := strings.Repeat("k", 255)
	wantStatus(t, serve(t, srv, request{key: long, body: `{"amount":1}`}), http.StatusCreated, false)
	wantStatus(t, serve(t, srv, request{key: `"` + long + `"`, body: `{"amount":1}`}), http.StatusCreated, true)
	if k := storedKey("alice", long); !strings.Contains(k, ":h:") || h.idemRows(k) != 1 {
		t.Fatalf("hashed key %q", k)
	}
}

func testHTTPBodyTooLarge(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	cfg := testConfig()
	cfg.MaxBodyBytes = 64
	srv := h.guard(cfg, h.orderHandler(&runs, nil))
	body := `{"amount":1,"note":"` + strings.Repeat("x", 64) + `"}`
	wantProblem(t, serve(t, srv, request{key: "k", body: body}), http.StatusRequestEntityTooLarge, "body-too-large")
	if runs.Load() != 0 || h.rowCount() != 0 {
		t.Fatalf("runs %d, rows %d", runs.Load(), h.rowCount())
	}
	wantStatus(t, serve(t, srv, request{key: "k", body: `{"amount":1}`}), http.StatusCreated, false)
}

func testHTTPGetPassesThrough(t *testing.T, h *httpEnv) {
	srv := h.guard(testConfig(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := idemhttp.Key(r.Context()); ok {
			t.Error("a GET got a key")
		}
		w.WriteHeader(http.StatusOK)
	}))
	for range 2 {
		wantStatus(t, serve(t, srv, request{method: http.MethodGet, key: "k"}), http.StatusOK, false)
		wantStatus(t, serve(t, srv, request{method: http.MethodGet}), http.StatusOK, false)
	}
	if h.rowCount() != 0 {
		t.Fatalf("rows %d", h.rowCount())
	}
}

// testHTTPInFlight sends a duplicate while the first request's handler
// holds its transaction open. PostgreSQL and MySQL/MariaDB answer 409 at
// once (fail-fast); on SQLite the duplicate's transaction waits for the
// single writer as it begins, then replays.
func testHTTPInFlight(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	entered, release := make(chan struct{}), make(chan struct{})
	srv := h.guard(testConfig(), h.orderHandler(&runs, func(w http.ResponseWriter, r *http.Request) bool {
		if runs.Load() == 1 {
			close(entered)
			<-release
		}
		return false
	}))
	q := request{key: "k", body: `{"amount":7}`}
	firstDone := make(chan *httptest.ResponseRecorder)
	go func() { firstDone <- serve(t, srv, q) }()
	<-entered
	if h.dialect == "sqlite" {
		dupDone := make(chan *httptest.ResponseRecorder)
		go func() { dupDone <- serve(t, srv, q) }()
		close(release)
		wantStatus(t, <-firstDone, http.StatusCreated, false)
		wantStatus(t, <-dupDone, http.StatusCreated, true)
	} else {
		dup := serve(t, srv, q)
		wantProblem(t, dup, http.StatusConflict, "in-flight")
		if dup.Header().Get("Retry-After") == "" {
			t.Fatal("409 without Retry-After")
		}
		close(release)
		wantStatus(t, <-firstDone, http.StatusCreated, false)
		wantStatus(t, serve(t, srv, q), http.StatusCreated, true)
	}
	if runs.Load() != 1 || h.bizRows(storedKey("alice", "k")) != 1 {
		t.Fatalf("runs %d, business rows %d", runs.Load(), h.bizRows(storedKey("alice", "k")))
	}
}

// testHTTPInFlightWaits: with a LockTimeout among Config.Options, a
// duplicate of a request still running waits for it instead of answering
// 409, and replays its response.
func testHTTPInFlightWaits(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	entered, release := make(chan struct{}), make(chan struct{})
	cfg := testConfig()
	cfg.Options.LockTimeout = time.Minute
	srv := h.guard(cfg, h.orderHandler(&runs, func(w http.ResponseWriter, r *http.Request) bool {
		if runs.Load() == 1 {
			close(entered)
			<-release
		}
		return false
	}))
	q := request{key: "k", body: `{"amount":7}`}
	firstDone, dupDone := make(chan *httptest.ResponseRecorder), make(chan *httptest.ResponseRecorder)
	go func() { firstDone <- serve(t, srv, q) }()
	<-entered
	go func() { dupDone <- serve(t, srv, q) }()
	if h.dialect != "sqlite" { // SQLite's duplicate waits for the writer lock as it begins
		h.waitUntilTableBlocked(context.Background())
	}
	close(release)
	wantStatus(t, <-firstDone, http.StatusCreated, false)
	wantStatus(t, <-dupDone, http.StatusCreated, true)
	if runs.Load() != 1 || h.bizRows(storedKey("alice", "k")) != 1 {
		t.Fatalf("runs %d, business rows %d", runs.Load(), h.bizRows(storedKey("alice", "k")))
	}
}

func testHTTPConcurrentDuplicates(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, nil))
	const n = 16
	q := request{key: "dup", body: `{"amount":3}`}
	answers := make([]*httptest.ResponseRecorder, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			answers[i] = serve(t, srv, q)
		}()
	}
	start.Done()
	wg.Wait()
	var created, replays, conflicts int
	var body string
	for _, w := range answers {
		switch {
		case w.Code == http.StatusCreated && !replayed(w):
			created++
			body = w.Body.String()
		case w.Code == http.StatusCreated:
			replays++
		case w.Code == http.StatusConflict:
			conflicts++
		default:
			t.Fatalf("unexpected answer %d %s", w.Code, w.Body)
		}
	}
	if created != 1 || runs.Load() != 1 || h.bizRows(storedKey("alice", "dup")) != 1 {
		t.Fatalf("created %d, runs %d, business rows %d", created, runs.Load(), h.bizRows(storedKey("alice", "dup")))
	}
	if h.dialect == "sqlite" && conflicts != 0 {
		t.Fatalf("SQLite answered %d duplicates 409; they should wait and replay", conflicts)
	}
	for _, w := range answers {
		if w.Code == http.StatusCreated && w.Body.String() != body {
			t.Fatalf("a replay differs: %q vs %q", w.Body, body)
		}
	}
	after := serve(t, srv, q)
	wantStatus(t, after, http.StatusCreated, true)
	t.Logf("%d requests: 1 created, %d replayed, %d answered 409", n, replays, conflicts)
}

func testHTTPPrincipals(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, nil))
	a := serve(t, srv, request{user: "alice", key: "same", body: `{"amount":1}`})
	b := serve(t, srv, request{user: "bob", key: "same", body: `{"amount":2}`})
	wantStatus(t, a, http.StatusCreated, false)
	wantStatus(t, b, http.StatusCreated, false)
	ra := serve(t, srv, request{user: "alice", key: "same", body: `{"amount":1}`})
	rb := serve(t, srv, request{user: "bob", key: "same", body: `{"amount":2}`})
	wantStatus(t, ra, http.StatusCreated, true)
	wantStatus(t, rb, http.StatusCreated, true)
	if ra.Body.String() != a.Body.String() || rb.Body.String() != b.Body.String() || a.Body.String() == b.Body.String() {
		t.Fatalf("alice %q/%q, bob %q/%q", a.Body, ra.Body, b.Body, rb.Body)
	}
	if runs.Load() != 2 || h.bizRows(storedKey("alice", "same")) != 1 || h.bizRows(storedKey("bob", "same")) != 1 {
		t.Fatalf("runs %d", runs.Load())
	}
}

func testHTTPServerErrorNotStored(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, func(w http.ResponseWriter, r *http.Request) bool {
		if runs.Load() == 1 {
			http.Error(w, "payment backend down", http.StatusServiceUnavailable)
			return true
		}
		return false
	}))
	q := request{key: "k", body: `{"amount":5}`}
	first := serve(t, srv, q)
	wantStatus(t, first, http.StatusServiceUnavailable, false)
	if strings.TrimSpace(first.Body.String()) != "payment backend down" {
		t.Fatalf("the handler's own 503 was not sent: %q", first.Body)
	}
	key := storedKey("alice", "k")
	if h.bizRows(key) != 0 || h.rowCount() != 0 {
		t.Fatalf("a 5xx left business rows %d, idempotency rows %d", h.bizRows(key), h.rowCount())
	}
	wantStatus(t, serve(t, srv, q), http.StatusCreated, false)
	wantStatus(t, serve(t, srv, q), http.StatusCreated, true)
	if runs.Load() != 2 || h.bizRows(key) != 1 {
		t.Fatalf("runs %d, business rows %d", runs.Load(), h.bizRows(key))
	}
}

func testHTTPClientErrorStored(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "card declined", http.StatusPaymentRequired)
		return true
	}))
	q := request{key: "k", body: `{"amount":5}`}
	wantStatus(t, serve(t, srv, q), http.StatusPaymentRequired, false)
	again := serve(t, srv, q)
	wantStatus(t, again, http.StatusPaymentRequired, true)
	if strings.TrimSpace(again.Body.String()) != "card declined" || runs.Load() != 1 {
		t.Fatalf("replay %q, runs %d", again.Body, runs.Load())
	}
	// A stored status commits the handler's writes with it.
	if h.bizRows(storedKey("alice", "k")) != 1 {
		t.Fatalf("business rows %d", h.bizRows(storedKey("alice", "k")))
	}
}

// testHTTPPanic runs on a pool of one connection: if the panicking request
// kept its connection, the next one could not begin.
func testHTTPPanic(t *testing.T, h *httpEnv) {
	var runs atomic.Int64
	srv := h.guard(testConfig(), h.orderHandler(&runs, func(w http.ResponseWriter, r *http.Request) bool {
		if runs.Load() == 1 {
			w.WriteHeader(http.StatusCreated)
			panic("handler bug")
		}
		return false
	}))
	q := request{key: "k", body: `{"amount":9}`}
	var w *httptest.ResponseRecorder
	func() {
		defer func() {
			if r := recover(); r != "handler bug" {
				t.Fatalf("recovered %v, want the handler's panic", r)
			}
		}()
		w = httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(q.body))
		r.Header.Set(principalHeader, "alice")
		r.Header.Set("Idempotency-Key", q.key)
		srv.ServeHTTP(w, r)
	}()
	if w.Body.Len() != 0 || len(w.Header()) != 0 {
		t.Fatalf("a panicking request wrote %v %q", w.Header(), w.Body)
	}
	if n := h.inUse(); n != 0 {
		t.Fatalf("%d connections still in use", n)
	}
	key := storedKey("alice", "k")
	if h.bizRows(key) != 0 || h.rowCount() != 0 {
		t.Fatalf("a panic left business rows %d, idempotency rows %d", h.bizRows(key), h.rowCount())
	}
	wantStatus(t, serve(t, srv, q), http.StatusCreated, false)
	wantStatus(t, serve(t, srv, q), http.StatusCreated, true)
	if runs.Load() != 2 || h.bizRows(key) != 1 {
		t.Fatalf("runs %d, business rows %d", runs.Load(), h.bizRows(key))
	}
}
