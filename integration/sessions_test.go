package integration

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// hangGuard bounds a wait that only a hang can make long: the failure it
// reports is "never returned", not a speed.
const hangGuard = 30 * time.Second

// settled is n's value once it is 0, or after hangGuard: the connections
// in use of a pool that a store prepares its statements on (SQLite, MySQL),
// which a background call borrows for a moment after the pool's first
// transaction. A connection that a request left behind stays in use.
func settled(n func() int) int {
	deadline := time.Now().Add(hangGuard)
	for {
		v := n()
		if v == 0 || time.Now().After(deadline) {
			return v
		}
		time.Sleep(time.Millisecond)
	}
}

// onePool opens a second pool on the backend's database, limited to one
// connection, so that a test can hold that connection or read its session.
func (e *env) onePool() *sql.DB {
	e.t.Helper()
	var db *sql.DB
	var err error
	switch e.dialect {
	case "mysql":
		db, err = sql.Open("mysql", mysqlDSN(e.t))
	case "sqlite":
		var seq int
		var name, file string
		if err = e.db.QueryRow("PRAGMA database_list").Scan(&seq, &name, &file); err != nil {
			e.t.Fatal(err)
		}
		// DEFERRED transactions, as e.deferredDB: an IMMEDIATE one would
		// wait in BEGIN for a writer, before any claim.
		db, err = sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	default:
		db, err = sql.Open("pgx", postgresDSN(e.t))
	}
	if err != nil {
		e.t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	e.t.Cleanup(func() { db.Close() })
	return db
}

// The first Run on a pool must not wait for the pool beyond its context,
// nor make other first callers wait behind it: preparing the store's
// statements (SQLite, MySQL) needs a connection, and here the only one is
// held elsewhere. Every Run returns with its context's error.
func TestFirstRunsOnABusyPoolKeepTheirContexts(t *testing.T) {
	for _, b := range backends {
		if b.name != "sqlite" && b.name != "mysql" {
			continue // the dialects that prepare statements
		}
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			db := e.onePool()
			held, err := db.Conn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			released := false
			release := func() {
				if !released {
					released = true
					held.Close()
				}
			}
			defer release()

			const callers = 4
			errs := make(chan error, callers)
			var wg sync.WaitGroup
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
					defer cancel()
					_, err := idemsql.Run(ctx, e.store.DB(db, nil), "busy-1", func(ctx context.Context, tx *sql.Tx) (int, error) { return 1, nil })
					errs <- err
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(hangGuard):
				release() // let the stuck callers end
				<-done
				t.Fatalf("Run waited for the busy pool past its context (a first caller's prepare held them all)")
			}
			close(errs)
			for err := range errs {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err = %v, want the context's deadline", err)
				}
			}
			release()
			if _, err := idemsql.Run(context.Background(), e.store.DB(db, nil), "busy-1", func(ctx context.Context, tx *sql.Tx) (int, error) { return 1, nil }); err != nil {
				t.Fatalf("Run once the pool is free: %v", err)
			}
		})
	}
}
