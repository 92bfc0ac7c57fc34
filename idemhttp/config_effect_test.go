package idemhttp_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idemsql"
)

// Each test here sends requests through the real middleware on SQLite and
// asserts what a Config setting changes, so that a middleware that ignored
// the setting (used the default instead) fails it. Unit tests of settings()
// alone (config_test.go) pass even when nothing reads the value they check.

// mode is one of the two constructors. Both share the code that honours
// these settings today; running each test in both keeps a later divergence
// from going unnoticed.
type mode struct {
	name string
	new  func(*idemsql.Store[*sql.Tx], idemhttp.Config) (func(http.Handler) http.Handler, error)
}

var modes = []mode{
	{"atomic", idemhttp.New[*sql.Tx]},
	{"lease", idemhttp.NewExternal[*sql.Tx]},
}

func eachMode(t *testing.T, f func(t *testing.T, m mode)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { f(t, m) })
	}
}

// mount is guarded (middleware_test.go) in a given mode and on a given
// database, so that two middlewares can share one table.
func mount(t *testing.T, m mode, db *idemsql.Store[*sql.Tx], cfg idemhttp.Config, h http.HandlerFunc) http.Handler {
	t.Helper()
	if cfg.Principal == nil && !cfg.Unscoped {
		cfg.Principal = func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil }
	}
	mw, err := m.new(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return mw(h)
}

// created counts its runs and answers 201 with a body, so that a replay is
// told apart from a second run by the count.
func created(runs *int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		*runs++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "run %d", *runs)
	}
}

// wantProblemAt is wantProblem for a configured ProblemBaseURL; it returns
// the detail, which names the configured header.
func wantProblemAt(t *testing.T, w *httptest.ResponseRecorder, base string, status int, name string) string {
	t.Helper()
	if w.Code != status || w.Header().Get("Content-Type") != idemhttp.ProblemContentType {
		t.Fatalf("got %d %q %s, want %d problem %s", w.Code, w.Header().Get("Content-Type"), w.Body, status, name)
	}
	var p struct {
		problem
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %s: %v", w.Body, err)
	}
	if p.Type != base+"#"+name || p.Status != status {
		t.Fatalf("problem %+v, want type %s#%s", p, base, name)
	}
	return p.Detail
}

func replayed(w *httptest.ResponseRecorder) bool {
	return w.Header().Get(idemhttp.DefaultReplayedHeader) == "true"
}

func TestConfigHeaderIsTheKeyHeader(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		_, db := newDB(t)
		runs := 0
		// Lower case: the configured name must be canonicalized to match
		// the request's (canonical) header map.
		h := mount(t, m, db, idemhttp.Config{Header: "x-request-key"}, created(&runs))
		custom := func(r *http.Request) { r.Header.Set("X-Request-Key", "k1") }

		first, second := do(h, "POST", "", "", custom), do(h, "POST", "", "", custom)
		if first.Code != 201 || replayed(first) || second.Code != 201 || !replayed(second) || runs != 1 {
			t.Fatalf("key in X-Request-Key: %d %d replayed %v, runs %d", first.Code, second.Code, replayed(second), runs)
		}
		// The default header no longer carries a key, and the answer names
		// the header the client should send.
		detail := wantProblemAt(t, do(h, "POST", "k1", ""), idemhttp.DefaultProblemBaseURL, 400, "missing-key")
		if !strings.Contains(detail, "X-Request-Key") {
			t.Errorf("missing-key detail %q does not name X-Request-Key", detail)
		}
		wantProblemAt(t, do(h, "POST", "", "", func(r *http.Request) { r.Header.Set("X-Request-Key", `"open`) }),
			idemhttp.DefaultProblemBaseURL, 400, "invalid-key")
		if runs != 1 {
			t.Fatalf("runs %d", runs)
		}
	})
}

func TestConfigStoreDecidesWhatIsStored(t *testing.T) {
	// The default stores 400 and not 503; this Store flips both, so a
	// middleware that ignored it fails either row.
	store := func(status int) bool { return status == http.StatusCreated || status == http.StatusServiceUnavailable }
	eachMode(t, func(t *testing.T, m mode) {
		_, db := newDB(t)
		runs := map[int]int{}
		h := mount(t, m, db, idemhttp.Config{Store: store}, func(w http.ResponseWriter, r *http.Request) {
			status, _ := strconv.Atoi(r.URL.Query().Get("status"))
			runs[status]++
			w.WriteHeader(status)
			fmt.Fprintf(w, "run %d", runs[status])
		})
		for _, tc := range []struct {
			status int
			stored bool
		}{
			{http.StatusCreated, true},
			{http.StatusBadRequest, false},
			{http.StatusServiceUnavailable, true},
		} {
			q := func(r *http.Request) { r.URL.RawQuery = "status=" + strconv.Itoa(tc.status) }
			key := "k" + strconv.Itoa(tc.status)
			first, second := do(h, "POST", key, "", q), do(h, "POST", key, "", q)
			wantRuns := 1
			if !tc.stored {
				wantRuns = 2 // not stored: the key stays free and the retry runs the handler
			}
			if first.Code != tc.status || second.Code != tc.status || runs[tc.status] != wantRuns ||
				replayed(second) != tc.stored || (second.Body.String() == first.Body.String()) != tc.stored {
				t.Errorf("status %d: got %d then %d %q (replayed %v), runs %d; want stored %v",
					tc.status, first.Code, second.Code, second.Body, replayed(second), runs[tc.status], tc.stored)
			}
		}
	})
}

func TestConfigFingerprintReplacesTheDefault(t *testing.T) {
	// This fingerprint ignores the URI and the body's surrounding space but
	// covers an X-Op header: each row is a pair of requests the default
	// fingerprint judges the other way.
	fp := func(r *http.Request, body []byte) []byte {
		return append([]byte(r.Header.Get("X-Op")+"\x00"), bytes.TrimSpace(body)...)
	}
	op := func(v string) func(*http.Request) { return func(r *http.Request) { r.Header.Set("X-Op", v) } }
	eachMode(t, func(t *testing.T, m mode) {
		_, db := newDB(t)
		runs := 0
		h := mount(t, m, db, idemhttp.Config{Fingerprint: fp}, created(&runs))
		for i, tc := range []struct {
			name   string
			body   string
			edit   []func(*http.Request)
			replay bool
		}{
			{"same fingerprint, other body bytes", " a\n", []func(*http.Request){op("create")}, true},
			{"same fingerprint, other path", "a", []func(*http.Request){op("create"), func(r *http.Request) { r.URL.Path = "/elsewhere" }}, true},
			{"other fingerprint, same method, URI and body", "a", []func(*http.Request){op("delete")}, false},
		} {
			key := "k" + strconv.Itoa(i)
			if w := do(h, "POST", key, "a", op("create")); w.Code != 201 {
				t.Fatalf("%s: first %d", tc.name, w.Code)
			}
			w := do(h, "POST", key, tc.body, tc.edit...)
			if tc.replay {
				if w.Code != 201 || !replayed(w) {
					t.Errorf("%s: got %d %s, want a replay", tc.name, w.Code, w.Body)
				}
			} else {
				wantProblemAt(t, w, idemhttp.DefaultProblemBaseURL, 422, "key-reused")
			}
		}
		if runs != 3 {
			t.Fatalf("runs %d, want one per key", runs)
		}
	})
}

func TestDefaultFingerprintCoversTheRequestURI(t *testing.T) {
	// Same key, method and body: only the path or the query differs, and
	// the key must not replay one resource's response for another.
	eachMode(t, func(t *testing.T, m mode) {
		_, db := newDB(t)
		runs := 0
		h := mount(t, m, db, idemhttp.Config{}, created(&runs))
		at := func(path, query string) func(*http.Request) {
			return func(r *http.Request) { r.URL.Path, r.URL.RawQuery = path, query }
		}
		for i, tc := range []struct {
			name          string
			first, second func(*http.Request)
			reused        bool
		}{
			{"same URI", at("/things", "a=1"), at("/things", "a=1"), false},
			{"other path", at("/things", ""), at("/other", ""), true},
			{"other query value", at("/things", "a=1"), at("/things", "a=2"), true},
			{"query added", at("/things", ""), at("/things", "a=1"), true},
		} {
			key := "k" + strconv.Itoa(i)
			if w := do(h, "POST", key, "same body", tc.first); w.Code != 201 {
				t.Fatalf("%s: first %d", tc.name, w.Code)
			}
			w := do(h, "POST", key, "same body", tc.second)
			if tc.reused {
				wantProblemAt(t, w, idemhttp.DefaultProblemBaseURL, 422, "key-reused")
			} else if w.Code != 201 || !replayed(w) {
				t.Errorf("%s: got %d %s, want a replay", tc.name, w.Code, w.Body)
			}
		}
	})
}

func TestConfigReplayHeadersAreWhatIsReplayed(t *testing.T) {
	// Location is replayed by default and X-Trace-Id is not; the
	// configured list swaps them.
	for _, tc := range []struct {
		name                  string
		replay                []string
		wantLocation, wantTID bool
	}{
		{"default", nil, true, false},
		{"configured", []string{"x-trace-id"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachMode(t, func(t *testing.T, m mode) {
				_, db := newDB(t)
				h := mount(t, m, db, idemhttp.Config{ReplayHeaders: tc.replay}, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Location", "/things/1")
					w.Header().Set("X-Trace-Id", "t-1")
					w.WriteHeader(http.StatusCreated)
				})
				// The first response carries every header, whatever is stored.
				if w := do(h, "POST", "k", ""); w.Header().Get("Location") == "" || w.Header().Get("X-Trace-Id") == "" {
					t.Fatalf("first response headers %v", w.Header())
				}
				w := do(h, "POST", "k", "")
				if !replayed(w) || (w.Header().Get("Location") != "") != tc.wantLocation || (w.Header().Get("X-Trace-Id") != "") != tc.wantTID {
					t.Fatalf("replay headers %v: want Location %v, X-Trace-Id %v", w.Header(), tc.wantLocation, tc.wantTID)
				}
			})
		})
	}
}

func TestConfigReplayedHeaderMarksTheReplay(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		_, db := newDB(t)
		runs := 0
		h := mount(t, m, db, idemhttp.Config{ReplayedHeader: "x-from-cache"}, created(&runs))
		first, second := do(h, "POST", "k", ""), do(h, "POST", "k", "")
		if runs != 1 || first.Header().Get("X-From-Cache") != "" || second.Header().Get("X-From-Cache") != "true" {
			t.Fatalf("runs %d, first %v, replay %v", runs, first.Header(), second.Header())
		}
		// The configured header replaces the default one rather than adding to it.
		if replayed(first) || replayed(second) {
			t.Fatalf("Idempotent-Replayed sent too: first %v, replay %v", first.Header(), second.Header())
		}
	})
}

func TestConfigStrictKeySyntaxEndToEnd(t *testing.T) {
	// A bare key is what a lax middleware accepts and a strict one must
	// not; the quoted key shows strict mode still admits the draft's form.
	for _, tc := range []struct {
		strict     bool
		bareAccept bool
	}{{false, true}, {true, false}} {
		t.Run(fmt.Sprintf("strict=%v", tc.strict), func(t *testing.T) {
			eachMode(t, func(t *testing.T, m mode) {
				_, db := newDB(t)
				runs := 0
				h := mount(t, m, db, idemhttp.Config{StrictKeySyntax: tc.strict}, created(&runs))
				if w := do(h, "POST", `"quoted-1"`, ""); w.Code != 201 || runs != 1 {
					t.Fatalf("quoted key: %d %s, runs %d", w.Code, w.Body, runs)
				}
				w := do(h, "POST", "bare-1", "")
				if tc.bareAccept {
					if w.Code != 201 || runs != 2 {
						t.Fatalf("bare key: %d %s, runs %d", w.Code, w.Body, runs)
					}
					return
				}
				wantProblemAt(t, w, idemhttp.DefaultProblemBaseURL, 400, "invalid-key")
				if runs != 1 {
					t.Fatalf("the handler ran for a rejected key")
				}
			})
		})
	}
}

func TestConfigProblemBaseURL(t *testing.T) {
	const base = "https://api.example.com/docs/errors"
	eachMode(t, func(t *testing.T, m mode) {
		_, db := newDB(t)
		runs := 0
		h := mount(t, m, db, idemhttp.Config{ProblemBaseURL: base}, created(&runs))
		// One problem answered before the handler runs, one after idemsql
		// answers: the base must reach both.
		wantProblemAt(t, do(h, "POST", "", ""), base, 400, "missing-key")
		do(h, "POST", "k", "a")
		wantProblemAt(t, do(h, "POST", "k", "b"), base, 422, "key-reused")
	})
}

func TestConfigNamespaceSeparatesKeys(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		sqlDB, db := newDB(t)
		runs := 0
		var keys []string
		handler := func(w http.ResponseWriter, r *http.Request) {
			k, _ := idemhttp.Key(r.Context())
			keys = append(keys, k)
			created(&runs)(w, r)
		}
		// Three middlewares on one table: two share a namespace, one does not.
		orders := mount(t, m, db, idemhttp.Config{Namespace: "orders"}, handler)
		ordersToo := mount(t, m, db, idemhttp.Config{Namespace: "orders"}, handler)
		refunds := mount(t, m, db, idemhttp.Config{Namespace: "refunds"}, handler)

		if w := do(orders, "POST", "k", ""); w.Code != 201 || replayed(w) {
			t.Fatalf("orders: %d %v", w.Code, w.Header())
		}
		if w := do(ordersToo, "POST", "k", ""); !replayed(w) {
			t.Fatalf("same namespace did not replay: %d %v", w.Code, w.Header())
		}
		if w := do(refunds, "POST", "k", ""); w.Code != 201 || replayed(w) {
			t.Fatalf("another namespace replayed orders' response: %d %v", w.Code, w.Header())
		}
		want := []string{idemhttp.StoredKey("orders", "u1", "k", false), idemhttp.StoredKey("refunds", "u1", "k", false)}
		if runs != 2 || len(keys) != 2 || keys[0] != want[0] || keys[1] != want[1] {
			t.Fatalf("runs %d, keys %q, want %q", runs, keys, want)
		}
		for _, k := range want {
			var n int
			if err := sqlDB.QueryRow(`SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = ?`, k).Scan(&n); err != nil || n != 1 {
				t.Fatalf("row for %q: %d, %v", k, n, err)
			}
		}
	})
}
