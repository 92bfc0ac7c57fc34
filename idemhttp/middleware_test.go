package idemhttp_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// The HTTP side of the middleware, on SQLite; integration/http_*_test.go
// runs the database side on every backend.

func newDB(t *testing.T) (*sql.DB, *idemsql.Store[*sql.Tx]) {
	t.Helper()
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(t.TempDir(), "t.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(context.Background(), db, store); err != nil {
		t.Fatal(err)
	}
	return db, store
}

func guarded(t *testing.T, cfg idemhttp.Config, h http.HandlerFunc) http.Handler {
	t.Helper()
	_, db := newDB(t)
	if cfg.Principal == nil && !cfg.Unscoped {
		cfg.Principal = func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil }
	}
	mw, err := idemhttp.New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return mw(h)
}

func do(h http.Handler, method, key, body string, edit ...func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/things", strings.NewReader(body))
	r.Header.Set("X-User", "u1")
	if key != "" {
		r.Header.Set("Idempotency-Key", key)
	}
	for _, e := range edit {
		e(r)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
}

func wantProblem(t *testing.T, w *httptest.ResponseRecorder, status int, name string) {
	t.Helper()
	if w.Code != status || w.Header().Get("Content-Type") != idemhttp.ProblemContentType {
		t.Fatalf("got %d %q %s, want %d problem %s", w.Code, w.Header().Get("Content-Type"), w.Body, status, name)
	}
	var p problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %s: %v", w.Body, err)
	}
	if p.Type != idemhttp.DefaultProblemBaseURL+"#"+name || p.Status != status || p.Title == "" {
		t.Fatalf("problem %+v, want %s", p, name)
	}
}

func TestPassThroughAndOptional(t *testing.T) {
	runs := 0
	h := guarded(t, idemhttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		runs++
		if _, ok := idemhttp.Tx[*sql.Tx](r.Context()); ok {
			t.Error("a request that passed through has a transaction")
		}
		w.WriteHeader(http.StatusTeapot)
	})
	for _, m := range []string{"GET", "HEAD", "OPTIONS"} {
		if w := do(h, m, "", ""); w.Code != http.StatusTeapot {
			t.Fatalf("%s: %d", m, w.Code)
		}
	}
	if runs != 3 {
		t.Fatalf("runs %d", runs)
	}
	wantProblem(t, do(h, "POST", "", ""), 400, "missing-key")

	opt := guarded(t, idemhttp.Config{Optional: true}, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	if w := do(opt, "POST", "", ""); w.Code != http.StatusAccepted {
		t.Fatalf("optional key: %d", w.Code)
	}
	wantProblem(t, do(opt, "POST", `"unterminated`, ""), 400, "invalid-key")

	getToo := guarded(t, idemhttp.Config{Methods: []string{"GET"}}, func(w http.ResponseWriter, r *http.Request) {})
	wantProblem(t, do(getToo, "GET", "", ""), 400, "missing-key")
}

func TestBadInput(t *testing.T) {
	ran := false
	h := guarded(t, idemhttp.Config{MaxBodyBytes: 10, MaxKeyLen: 8}, func(w http.ResponseWriter, r *http.Request) { ran = true })
	wantProblem(t, do(h, "POST", "123456789", ""), 400, "invalid-key")
	wantProblem(t, do(h, "POST", `""`, ""), 400, "invalid-key")
	wantProblem(t, do(h, "POST", "a b", ""), 400, "invalid-key")
	wantProblem(t, do(h, "POST", "k1", "", func(r *http.Request) { r.Header.Add("Idempotency-Key", "k2") }), 400, "invalid-key")
	wantProblem(t, do(h, "POST", "k1", "01234567890"), 413, "body-too-large")
	// Without a Content-Length, the limit is found while reading.
	wantProblem(t, do(h, "POST", "k1", "", func(r *http.Request) {
		r.Body, r.ContentLength = io.NopCloser(strings.NewReader("01234567890")), -1
	}), 413, "body-too-large")
	wantProblem(t, do(h, "POST", "k1", "", func(r *http.Request) { r.Header.Del("X-User") }), 403, "no-principal")
	if ran {
		t.Fatal("the handler ran for a bad request")
	}

	failing := guarded(t, idemhttp.Config{Principal: func(*http.Request) (string, error) { return "", errors.New("no session") }},
		func(w http.ResponseWriter, r *http.Request) {})
	wantProblem(t, do(failing, "POST", "k1", ""), 403, "no-principal")
}

func TestReplayHeadersAndBody(t *testing.T) {
	runs := 0
	h := guarded(t, idemhttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		runs++
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Location", "/things/1")
		w.Header().Set("Set-Cookie", "session=1")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte("<html>got " + string(body) + "</html>"))
	})
	first := do(h, "POST", `"k"`, "a&b")
	second := do(h, "POST", `k`, "a&b") // bare and quoted name the same key
	if runs != 1 {
		t.Fatalf("runs %d", runs)
	}
	if first.Code != 201 || first.Header().Get("Set-Cookie") == "" || first.Header().Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %v", first.Code, first.Header())
	}
	if second.Code != 201 || second.Header().Get("Set-Cookie") != "" || second.Header().Get("Idempotent-Replayed") != "true" ||
		second.Header().Get("Location") != "/things/1" || second.Body.String() != first.Body.String() ||
		second.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("replay: %d %v %q", second.Code, second.Header(), second.Body)
	}
	wantProblem(t, do(h, "POST", "k", "a&c"), 422, "key-reused")
	wantProblem(t, do(h, "PUT", "k", "a&b"), 422, "key-reused")
	// Another principal's key of the same value is another key.
	if w := do(h, "POST", "k", "a&c", func(r *http.Request) { r.Header.Set("X-User", "u2") }); w.Code != 201 || runs != 2 {
		t.Fatalf("u2: %d, runs %d", w.Code, runs)
	}
}

func TestBinaryAndEmptyBodies(t *testing.T) {
	bin := []byte{0, 1, 2, 0xff, 0xfe}
	h := guarded(t, idemhttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("empty") != "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(bin)
	})
	for range 2 {
		if w := do(h, "POST", "bin", ""); w.Code != 200 || !bytes.Equal(w.Body.Bytes(), bin) {
			t.Fatalf("binary: %d %x", w.Code, w.Body.Bytes())
		}
		w := do(h, "POST", "empty", "", func(r *http.Request) { r.URL.RawQuery = "empty=1" })
		if w.Code != 204 || w.Body.Len() != 0 {
			t.Fatalf("204: %d %q", w.Code, w.Body)
		}
	}
}

func TestNotStoredAndTooLarge(t *testing.T) {
	db, bound := newDB(t)
	var onError []error
	mw, err := idemhttp.New(bound, idemhttp.Config{Unscoped: true, MaxResponseBytes: 16,
		OnError: func(_ *http.Request, err error) { onError = append(onError, err) }})
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		switch r.URL.Query().Get("do") {
		case "fail":
			http.Error(w, "down", http.StatusBadGateway)
		case "big":
			if _, err := w.Write(bytes.Repeat([]byte("x"), 17)); !errors.Is(err, idemhttp.ErrResponseTooLarge) {
				t.Errorf("Write past the limit: %v", err)
			}
		}
	}))
	q := func(v string) func(*http.Request) { return func(r *http.Request) { r.URL.RawQuery = "do=" + v } }
	for i := 1; i <= 2; i++ {
		if w := do(h, "POST", "f", "", q("fail")); w.Code != 502 || w.Body.String() != "down\n" || runs != i {
			t.Fatalf("not stored %d: %d %q runs %d", i, w.Code, w.Body, runs)
		}
	}
	wantProblem(t, do(h, "POST", "b", "", q("big")), 500, "response-too-large")
	if len(onError) != 1 || !errors.Is(onError[0], idemhttp.ErrResponseTooLarge) {
		t.Fatalf("OnError: %v", onError)
	}
	var rows int
	if err := db.QueryRow(`SELECT COUNT(*) FROM idempotency_keys`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("rows %d, %v", rows, err)
	}
}

func TestAccessors(t *testing.T) {
	ctx := context.Background()
	if _, ok := idemhttp.Tx[*sql.Tx](ctx); ok {
		t.Fatal("Tx outside the middleware")
	}
	if _, ok := idemhttp.Claim(ctx); ok {
		t.Fatal("Lease outside the middleware")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("MustTx outside the middleware did not panic")
		}
	}()
	idemhttp.MustTx[*sql.Tx](ctx)
}

func TestHandlerSeesTxAndKey(t *testing.T) {
	h := guarded(t, idemhttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := idemhttp.Tx[*sql.DB](r.Context()); ok {
			t.Error("Tx of the wrong type")
		}
		tx := idemhttp.MustTx[*sql.Tx](r.Context())
		var one int
		if err := tx.QueryRowContext(r.Context(), "SELECT 1").Scan(&one); err != nil {
			t.Error(err)
		}
		key, _ := idemhttp.Key(r.Context())
		io.WriteString(w, key)
	})
	w := do(h, "POST", "abc", "")
	if want := idemhttp.StoredKey("http", "u1", "abc", false); w.Body.String() != want {
		t.Fatalf("key %q, want %q", w.Body, want)
	}
}
