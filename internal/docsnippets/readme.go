package docsnippets

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemslog"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/migrations"
)

// The types and helpers the snippets lean on.

type Charge struct {
	ID     int64 `json:"id"`
	Amount int64 `json:"amount"`
}

func insertCharge(ctx context.Context, tx *sql.Tx, orderID, amount int64) (Charge, error) {
	r, err := tx.ExecContext(ctx, `INSERT INTO charges (order_id, amount) VALUES (?, ?)`, orderID, amount)
	if err != nil {
		return Charge{}, err
	}
	id, err := r.LastInsertId()
	return Charge{ID: id, Amount: amount}, err
}

type Service struct {
	pool  *pgxpool.Pool
	store *idemsql.Store[pgx.Tx]
}

type SQLService struct {
	db    *sql.DB
	store *idemsql.Store[*sql.Tx]
}

func accountID(r *http.Request) string { return r.Header.Get("X-Account") }

// paymentProvider stands for an external system that takes an idempotency
// key of its own, as Stripe's API does.
type paymentProvider interface {
	Charge(ctx context.Context, amount int64, idempotencyKey string) (Charge, error)
}

func migrate(ctx context.Context, db *sql.DB) error {
	// snippet: migrate
	store, err := idemsql.New(idempostgres.NewSQL(db)) // once, at start-up
	if err != nil {
		return err
	}
	if err := migrations.Up(ctx, db, store); err != nil { // db is a *sql.DB
		return err
	}
	// end snippet
	return nil
}

// snippet: pgx
// ChargeOrder charges an order once, however often it is called with the
// same idempotency key. It reports whether the charge is a replay.
func (s *Service) ChargeOrder(ctx context.Context, key string, orderID, amount int64) (Charge, bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return Charge{}, false, err
	}
	defer tx.Rollback(ctx) // no-op after Commit

	res, err := idemsql.Do(ctx, s.store, tx, key, func(ctx context.Context) (Charge, error) {
		c := Charge{Amount: amount}
		err := tx.QueryRow(ctx,
			`INSERT INTO charges (order_id, amount) VALUES ($1, $2) RETURNING id`,
			orderID, amount).Scan(&c.ID)
		return c, err
	}, idemsql.Options{Fingerprint: map[string]int64{"order": orderID, "amount": amount}})
	if err != nil {
		return Charge{}, false, err // roll back; a retry replays or runs
	}
	if err := tx.Commit(ctx); err != nil {
		// ErrCommitUnknown, ErrRetryable, or ctx's error alone: see
		// docs/errors.md. Not pgconn.SafeToRetry: it can be true for a
		// COMMIT that committed.
		return Charge{}, false, s.store.CommitError(ctx, err)
	}
	return res.Value, res.Replayed, nil
}

// end snippet

// snippet: databasesql
// ChargeOrder is the same on database/sql: MySQL/MariaDB here; SQLite
// alike; PostgreSQL through pgx's stdlib with $1, $2 and RETURNING id.
// s.store is idemsql.New(idemmysql.New(s.db)), made once at start-up.
func (s *SQLService) ChargeOrder(ctx context.Context, key string, orderID, amount int64) (Charge, bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Charge{}, false, err
	}
	defer tx.Rollback()

	res, err := idemsql.Do(ctx, s.store, tx, key, func(ctx context.Context) (Charge, error) {
		r, err := tx.ExecContext(ctx, `INSERT INTO charges (order_id, amount) VALUES (?, ?)`, orderID, amount)
		if err != nil {
			return Charge{}, err
		}
		id, err := r.LastInsertId()
		return Charge{ID: id, Amount: amount}, err
	})
	if err != nil {
		return Charge{}, false, err
	}
	if err := tx.Commit(); err != nil {
		return Charge{}, false, s.store.CommitError(ctx, err)
	}
	return res.Value, res.Replayed, nil
}

// end snippet

func run(ctx context.Context, store *idemsql.Store[*sql.Tx], key string, orderID, amount int64) (idemsql.Result[Charge], error) {
	// snippet: run
	res, err := idemsql.Run(ctx, store, key, func(ctx context.Context, tx *sql.Tx) (Charge, error) {
		return insertCharge(ctx, tx, orderID, amount)
	})
	// end snippet
	return res, err
}

func httpMiddleware(store *idemsql.Store[*sql.Tx], mux *http.ServeMux) error {
	// snippet: http
	guard, err := idemhttp.New(store, idemhttp.Config{
		Principal: func(r *http.Request) (string, error) { return accountID(r), nil },
	})
	if err != nil {
		return err
	}
	mux.Handle("POST /orders", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tx := idemhttp.MustTx[*sql.Tx](r.Context()) // pgx.Tx with a pgx pool
		if _, err := tx.ExecContext(r.Context(), `INSERT INTO orders (item) VALUES (?)`, r.FormValue("item")); err != nil {
			idemhttp.Abort(r.Context(), err) // rolled back, not stored; run again if the database asks
			http.Error(w, "could not create the order", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})))
	// end snippet
	return nil
}

func runExternal(ctx context.Context, store *idemsql.Store[*sql.Tx], psp paymentProvider, orderID, amount int64) (idemsql.Result[Charge], error) {
	// snippet: runexternal
	res, err := idemsql.RunExternal(ctx, store, "charge:"+strconv.FormatInt(orderID, 10),
		func(ctx context.Context, c idemsql.Claim) (Charge, error) {
			// The payment provider's own guard: the same key across retries
			// and takeovers, so a repeat after a crash is absorbed there.
			return psp.Charge(ctx, amount, c.DownstreamKey)
		}, idemsql.Options{Lease: 30 * time.Second})
	// end snippet
	return res, err
}

func observerSlog(pool *pgxpool.Pool) (*idemsql.Store[pgx.Tx], error) {
	// snippet: observer-slog
	store, err := idemsql.New(idempostgres.New(pool), idemsql.Options{
		Observers: []idemsql.Observer{idemslog.New(slog.Default(), nil)},
	})
	// end snippet
	return store, err
}

func lookup(ctx context.Context, store *idemsql.Store[*sql.Tx]) error {
	// snippet: lookup
	rec, found, err := idemsql.Lookup(ctx, store, "charge:order-1")
	if err != nil || !found {
		return err
	}
	fmt.Println(rec.Status, rec.Attempt, rec.Lease, rec.ExpiresAt)
	var c Charge
	if err := rec.Decode(&c); err == nil {
		fmt.Println("charged", c.ID)
	}
	// end snippet
	return nil
}
