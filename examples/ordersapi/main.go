// Command ordersapi is a small HTTP API guarded by idemhttp's
// Idempotency-Key middleware, on an embedded SQLite database by default:
//
//	go run ./examples/ordersapi                      # SQLite in a temporary directory
//	go run ./examples/ordersapi -postgres "$DSN"     # PostgreSQL instead
//
// POST /orders creates an order in atomic mode: the order's INSERT and the
// stored response commit in one transaction. POST /orders/{id}/pay charges
// it through a slow fake payment provider in lease mode: the provider is
// called with the lease's downstream key, and deduplicates by it as
// Stripe's API does. GET /orders lists the caller's orders and is not
// guarded. Callers authenticate with "Authorization: Bearer <account>".
//
// docs/http.md walks through it with curl.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&cfg.postgres, "postgres", "", "PostgreSQL DSN (pgx URL); SQLite in a temporary directory if empty")
	flag.DurationVar(&cfg.providerDelay, "provider-delay", 2*time.Second, "how long the fake payment provider takes per charge")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := run(ctx, cfg, func(addr, where string) {
		log.Printf("ordersapi on http://%s, data in %s; Ctrl-C stops it", addr, where)
	})
	if err != nil {
		log.Fatal(err)
	}
}

type config struct {
	addr          string
	postgres      string
	providerDelay time.Duration
	// providerGate, if set, replaces the delay: a charge waits until it is
	// closed, after calling providerStarted. For the test.
	providerGate    <-chan struct{}
	providerStarted func()
}

// run serves the API until ctx ends. ready is called once it listens.
func run(ctx context.Context, cfg config, ready func(addr, where string)) error {
	a, where, cleanup, err := open(ctx, cfg)
	if err != nil {
		return err
	}
	defer cleanup()
	a.provider = &provider{delay: cfg.providerDelay, gate: cfg.providerGate, started: cfg.providerStarted, charges: map[string]string{}}

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	ready(ln.Addr().String(), where)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

type api struct {
	db       *sql.DB
	idem     *idemsql.Store[*sql.Tx]
	rebind   func(string) string // ? placeholders for the database
	provider *provider
}

// open opens SQLite in a temporary directory, or PostgreSQL, migrates the
// idempotency table and creates the example's own.
func open(ctx context.Context, cfg config) (a *api, where string, cleanup func(), err error) {
	var d idemdriver.Driver[*sql.Tx]
	var db *sql.DB
	var ddl string
	a = &api{rebind: func(q string) string { return q }}
	if cfg.postgres == "" {
		dir, err := os.MkdirTemp("", "idemsql-ordersapi-")
		if err != nil {
			return nil, "", nil, err
		}
		where = filepath.Join(dir, "orders.db")
		if db, err = sql.Open("sqlite", idemsqlite.DSN(where)); err != nil {
			os.RemoveAll(dir)
			return nil, "", nil, err
		}
		cleanup = func() { db.Close(); os.RemoveAll(dir) }
		d = idemsqlite.New(db)
		ddl = `CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, account TEXT NOT NULL, item TEXT NOT NULL,
			amount_cents INTEGER NOT NULL, charge_id TEXT)`
	} else {
		where = "PostgreSQL"
		if db, err = sql.Open("pgx", cfg.postgres); err != nil {
			return nil, "", nil, err
		}
		cleanup = func() { db.Close() }
		d = idempostgres.NewSQL(db)
		ddl = `CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, account text NOT NULL, item text NOT NULL,
			amount_cents bigint NOT NULL, charge_id text)`
		a.rebind = dollarPlaceholders
	}
	store, err := idemsql.New(d)
	if err != nil {
		cleanup()
		return nil, "", nil, err
	}
	if err := migrations.Up(ctx, db, store); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	if _, err := db.ExecContext(ctx, ddl); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	a.db, a.idem = db, store
	return a, where, cleanup, nil
}

func (a *api) routes() http.Handler {
	cfg := idemhttp.Config{
		Principal: func(r *http.Request) (string, error) { return account(r.Context()), nil },
	}
	atomic, err := idemhttp.New(a.idem, cfg)
	if err != nil {
		panic(err) // the configuration above is valid
	}
	cfg.Options = idemsql.Options{Lease: 10 * time.Second}
	external, err := idemhttp.NewExternal(a.idem, cfg)
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /orders", atomic(http.HandlerFunc(a.createOrder)))
	mux.Handle("POST /orders/{id}/pay", external(http.HandlerFunc(a.payOrder)))
	mux.HandleFunc("GET /orders", a.listOrders)
	return authenticate(mux)
}

type accountKey struct{}

func account(ctx context.Context) string { s, _ := ctx.Value(accountKey{}).(string); return s }

// authenticate stands for real authentication: "Bearer <account>".
func authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acct, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || acct == "" {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), accountKey{}, acct)))
	})
}

type order struct {
	ID       int64  `json:"id"`
	Item     string `json:"item"`
	Amount   int64  `json:"amount_cents"`
	ChargeID string `json:"charge_id,omitempty"`
}

// createOrder runs in the middleware's transaction: the order and the
// stored response commit together.
func (a *api) createOrder(w http.ResponseWriter, r *http.Request) {
	var o order
	if err := json.NewDecoder(r.Body).Decode(&o); err != nil || o.Item == "" || o.Amount <= 0 {
		idemhttp.NotBegun(r.Context()) // not stored: the corrected request may use the same key
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want {\"item\": ..., \"amount_cents\": > 0}"})
		return
	}
	tx := idemhttp.MustTx[*sql.Tx](r.Context())
	err := tx.QueryRowContext(r.Context(), a.rebind(`INSERT INTO orders (account, item, amount_cents) VALUES (?, ?, ?) RETURNING id`),
		account(r.Context()), o.Item, o.Amount).Scan(&o.ID)
	if err != nil {
		idemhttp.Abort(r.Context(), err) // rolled back, not stored; run again if the database asks
		http.Error(w, "could not create the order", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Location", "/orders/"+strconv.FormatInt(o.ID, 10))
	writeJSON(w, http.StatusCreated, o)
}

// payOrder runs in lease mode: the claim is committed before the slow
// provider is called, so a duplicate meanwhile gets 409 on any database.
func (a *api) payOrder(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var o order
	err := a.db.QueryRowContext(ctx, a.rebind(`SELECT id, item, amount_cents FROM orders WHERE id = ? AND account = ?`),
		r.PathValue("id"), account(ctx)).Scan(&o.ID, &o.Item, &o.Amount)
	if errors.Is(err, sql.ErrNoRows) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order"})
		return
	}
	if err != nil {
		http.Error(w, "could not read the order", http.StatusInternalServerError)
		return
	}
	claim, _ := idemhttp.Claim(ctx)
	charge, err := a.provider.charge(ctx, claim.DownstreamKey, o.Amount)
	if err != nil {
		http.Error(w, "payment provider unavailable", http.StatusBadGateway) // not stored: a retry calls again, same key
		return
	}
	if _, err := a.db.ExecContext(ctx, a.rebind(`UPDATE orders SET charge_id = ? WHERE id = ?`), charge, o.ID); err != nil {
		http.Error(w, "could not record the charge", http.StatusInternalServerError)
		return
	}
	o.ChargeID = charge
	writeJSON(w, http.StatusOK, o)
}

func (a *api) listOrders(w http.ResponseWriter, r *http.Request) {
	rows, err := a.db.QueryContext(r.Context(), a.rebind(`SELECT id, item, amount_cents, COALESCE(charge_id, '') FROM orders WHERE account = ? ORDER BY id`),
		account(r.Context()))
	if err != nil {
		http.Error(w, "could not list orders", http.StatusInternalServerError)
		return
	}
	defer rows.Close()
	orders := []order{}
	for rows.Next() {
		var o order
		if err := rows.Scan(&o.ID, &o.Item, &o.Amount, &o.ChargeID); err != nil {
			http.Error(w, "could not list orders", http.StatusInternalServerError)
			return
		}
		orders = append(orders, o)
	}
	writeJSON(w, http.StatusOK, orders)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// provider is a fake payment API: slow, and deduplicating by the
// idempotency key it is given, as Stripe's is.
type provider struct {
	delay   time.Duration
	gate    <-chan struct{}
	started func()
	mu      sync.Mutex
	charges map[string]string // idempotency key → charge ID
}

func (p *provider) charge(ctx context.Context, key string, amount int64) (string, error) {
	var wait <-chan time.Time
	if p.gate == nil {
		wait = time.After(p.delay)
	} else if p.started != nil {
		p.started()
	}
	select {
	case <-wait:
	case <-p.gate:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	id, ok := p.charges[key]
	if !ok {
		id = fmt.Sprintf("ch_%d", len(p.charges)+1)
		p.charges[key] = id
	}
	return id, nil
}

// dollarPlaceholders rewrites ? to $1, $2, ... for PostgreSQL.
func dollarPlaceholders(q string) string {
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
