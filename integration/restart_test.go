//go:build linux

package integration

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idemmysql"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/migrations"
)

// outage is how long the server stays down: longer than the whole retry
// budget of the former default (10 attempts: waits of at most 3.3 s).
const outage = 4 * time.Second

// The database server goes down (every process of it killed at once) and
// comes back after a few seconds, while a Run is under way: BEGIN fails on
// the pool's dead connections, then with "connection refused". Run's
// default retries ride the restart out: the call succeeds, once.
func TestRunRidesOutServerRestart(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		srv, dsn := newPrivatePostgres(t)
		srv.start()
		pool, err := pgxpool.New(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		store, err := idemsql.New(idempostgres.New(pool))
		if err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		prepareRestart(t, db, store, pgBizDDL)
		run := func(ctx context.Context, key string) error {
			_, err := idemsql.Run(ctx, store, key, func(ctx context.Context, tx pgx.Tx) (int, error) {
				_, err := tx.Exec(ctx, "INSERT INTO biz (idem_key, amount) VALUES ($1, 1)", key)
				return 1, err
			})
			return err
		}
		rideOut(t, db, srv, run)
	})
	t.Run("mariadb", func(t *testing.T) {
		srv, dsn := newPrivateMariaDB(t)
		srv.start()
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		store, err := idemsql.New(idemmysql.New(db))
		if err != nil {
			t.Fatal(err)
		}
		prepareRestart(t, db, store, mysqlBizDDL)
		run := func(ctx context.Context, key string) error {
			_, err := idemsql.Run(ctx, store, key, func(ctx context.Context, tx *sql.Tx) (int, error) {
				_, err := tx.ExecContext(ctx, "INSERT INTO biz (idem_key, amount) VALUES (?, 1)", key)
				return 1, err
			})
			return err
		}
		rideOut(t, db, srv, run)
	})
}

func prepareRestart(t *testing.T, db *sql.DB, store migrations.Target, bizDDL string) {
	t.Helper()
	if err := migrations.Up(context.Background(), db, store); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf(bizDDL, "biz")); err != nil {
		t.Fatal(err)
	}
}

func rideOut(t *testing.T, db *sql.DB, srv *privateServer, run func(ctx context.Context, key string) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, "before"); err != nil { // the pool holds live connections
		t.Fatalf("before the restart: %v", err)
	}
	srv.kill()
	done := make(chan error, 1)
	go func() { done <- run(ctx, "during") }()
	time.Sleep(outage)
	srv.start()
	if err := <-done; err != nil {
		t.Fatalf("Run across a restart of the server: %v", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM biz WHERE idem_key = 'during'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("business rows: %d, %v; want 1", n, err)
	}
}
