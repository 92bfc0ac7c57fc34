package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// The example is part of the test suite: it runs the server briefly and
// plays docs/http.md's walkthrough against it, on SQLite and, when
// IDEMSQL_POSTGRES_DSN names one, on PostgreSQL.
func TestWalkthroughSQLite(t *testing.T) { walkthrough(t, "") }

// The PostgreSQL run gets a schema of its own, dropped at the end, so that
// the shared test database keeps no tables of the example's.
func TestWalkthroughPostgres(t *testing.T) {
	dsn := os.Getenv("IDEMSQL_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("IDEMSQL_POSTGRES_DSN is not set")
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	var b [4]byte
	_, _ = rand.Read(b[:])
	schema := "ordersapi_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	walkthrough(t, dsn+sep+"search_path="+schema)
}

type answer struct {
	status   int
	replayed bool
	body     string
}

func walkthrough(t *testing.T, pg string) {
	gate, started := make(chan struct{}), make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, config{addr: "127.0.0.1:0", postgres: pg, providerGate: gate,
			providerStarted: func() { started <- struct{}{} }}, func(addr, _ string) { addrc <- addr })
	}()
	var base string
	select {
	case addr := <-addrc:
		base = "http://" + addr
	case err := <-errc:
		t.Fatalf("the server did not start: %v", err)
	}
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("server: %v", err)
		}
	}()

	// Keys of their own per run: a PostgreSQL database outlives the test.
	var b [6]byte
	_, _ = rand.Read(b[:])
	run := hex.EncodeToString(b[:])
	post := func(path, key, body string) answer {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer alice-"+run)
		if key != "" {
			req.Header.Set("Idempotency-Key", `"`+key+"-"+run+`"`)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		out, _ := io.ReadAll(res.Body)
		return answer{res.StatusCode, res.Header.Get("Idempotent-Replayed") == "true", string(out)}
	}
	want := func(step string, a answer, status int, replayed bool) {
		t.Helper()
		if a.status != status || a.replayed != replayed {
			t.Fatalf("%s: %d (replayed %v) %s; want %d (replayed %v)", step, a.status, a.replayed, a.body, status, replayed)
		}
	}

	// A request refused before anything began is not stored: corrected,
	// it runs under the same key.
	want("a bad body", post("/orders", "order-1", `{"item":"book","amount_cents":-1}`), http.StatusBadRequest, false)
	first := post("/orders", "order-1", `{"item":"book","amount_cents":1200}`)
	want("first request", first, http.StatusCreated, false)
	retry := post("/orders", "order-1", `{"item":"book","amount_cents":1200}`)
	want("retry", retry, http.StatusCreated, true)
	if retry.body != first.body {
		t.Fatalf("replayed %q, first %q", retry.body, first.body)
	}
	want("another body", post("/orders", "order-1", `{"item":"book","amount_cents":9900}`), http.StatusUnprocessableEntity, false)
	want("no key", post("/orders", "", `{"item":"book","amount_cents":1200}`), http.StatusBadRequest, false)

	var o order
	if err := json.Unmarshal([]byte(first.body), &o); err != nil {
		t.Fatal(err)
	}
	pay := "/orders/" + itoa(o.ID) + "/pay"
	paid := make(chan answer, 1)
	go func() { paid <- post(pay, "pay-1", "") }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the payment never reached the provider")
	}
	want("concurrent duplicate", post(pay, "pay-1", ""), http.StatusConflict, false)
	close(gate)
	p := <-paid
	want("payment", p, http.StatusOK, false)
	again := post(pay, "pay-1", "")
	want("payment retry", again, http.StatusOK, true)
	if again.body != p.body || !strings.Contains(p.body, `"charge_id":"ch_`) {
		t.Fatalf("payment %q, retry %q", p.body, again.body)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }
