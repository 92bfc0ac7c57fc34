package integration

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// TestReplayWaitsForDurability checks what lets a replay's answer survive
// a crash of the server. InnoDB without a binary log, outside Galera, shows
// a commit to other transactions before it is durable; there the
// transaction that answers a replay must write, so that its own COMMIT
// returns only once the outcome it read is durable (make test-crash shows
// the outcome with server kills). Everywhere else a replay writes nothing:
// PostgreSQL shows a commit only after its WAL flush, SQLite after its WAL
// write, a server with a binary log after writing that, and a Galera node
// after the cluster certified it (a write there would also be a write set
// that concurrent replays on other nodes conflict with). The store's
// driver asks its server in the background after the first call; a replay
// before the answer writes (TestReplayWritesUntilTheServerIsKnown), so the
// checks below wait for it.
func TestReplayWaitsForDurability(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := newLeaseEnv(t, b)
			ctx := t.Context()
			early := e.commitsVisibleEarly(t)
			var runs atomic.Int64
			fn := func(ctx context.Context, exec func(ctx context.Context, q string, args ...any) error) (invoice, error) {
				runs.Add(1)
				return invoice{Key: "k", Amount: 1}, exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), "k", 1)
			}
			if _, err := e.run(ctx, sql.LevelDefault, "k", fn); err != nil {
				t.Fatal(err)
			}
			e.waitServerKnown(t, early)

			// Run: the pool was asked what its server does.
			before := e.updatedAt(t, "k")
			res, err := e.run(ctx, sql.LevelDefault, "k", fn)
			if err != nil || !res.Replayed {
				t.Fatalf("Run: %+v, %v; want a replay", res, err)
			}
			if wrote := e.updatedAt(t, "k") != before; wrote != early {
				t.Errorf("Run's replay wrote the row: %v, want %v", wrote, early)
			}

			// Do, in the caller's transaction: of the store's pool, or of
			// another, taken to be on the store's server.
			for _, bind := range e.bindings() {
				tx, err := bind.begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				before := e.updatedAt(t, "k")
				res, err := doIn(ctx, tx, "k", e.charge(tx, "k", 1, &runs))
				if err != nil || !res.Replayed {
					t.Fatalf("Do (%s): %+v, %v; want a replay", bind.name, res, err)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				want := early
				if wrote := e.updatedAt(t, "k") != before; wrote != want {
					t.Errorf("Do (%s): the replay's transaction wrote the row: %v, want %v", bind.name, wrote, want)
				}
			}

			// Lease mode: the replay's read transaction.
			const leaseKey = "lease-k"
			r := receipt{By: "first"}
			if _, err := e.ops.do(ctx, leaseKey, func(context.Context, idemsql.Claim) (receipt, error) { return r, nil }); err != nil {
				t.Fatal(err)
			}
			before = e.updatedAt(t, leaseKey)
			lres, err := e.ops.do(ctx, leaseKey, func(context.Context, idemsql.Claim) (receipt, error) { return receipt{By: "again"}, nil })
			if err != nil || !lres.Replayed || lres.Value != r {
				t.Fatalf("RunExternal: %+v, %v; want a replay of %+v", lres, err, r)
			}
			if wrote := e.updatedAt(t, leaseKey) != before; wrote != early {
				t.Errorf("RunExternal's replay wrote the row: %v, want %v", wrote, early)
			}
			if runs.Load() != 1 {
				t.Errorf("fn ran %d times, want 1", runs.Load())
			}

			// A holder whose COMMIT reply was lost finds, in a new
			// transaction, its outcome recorded: that COMMIT may still wait
			// for its log flush, and the confirming transaction writes the
			// row where the server shows commits early. (MySQL's
			// UTC_TIMESTAMP(6) is one value per statement: the record leaves
			// updated_at = completed_at.)
			if e.dialect != "mysql" {
				return
			}
			var a armed
			ops := e.hookedOps(t, &hooks{committed: func(err error) error {
				if err == nil && a.once() {
					// What a connection that broke after the server
					// committed reports (driver.ErrBadConn would say the
					// COMMIT was never sent).
					return fmt.Errorf("injected: reply lost: %w", io.ErrUnexpectedEOF)
				}
				return err
			}})
			lres, err = ops.do(ctx, "lost-reply", func(context.Context, idemsql.Claim) (receipt, error) {
				a.on.Store(true)
				return receipt{By: "fn"}, nil
			})
			if err != nil || lres.Value.By != "fn" || a.on.Load() {
				t.Fatalf("RunExternal whose record lost its COMMIT reply: %+v, %v (reply lost: %v)", lres, err, !a.on.Load())
			}
			var wrote bool
			if err := e.db.QueryRow("SELECT updated_at <> completed_at FROM " + e.table + " WHERE idem_key = 'lost-reply'").Scan(&wrote); err != nil {
				t.Fatal(err)
			}
			if wrote != early {
				t.Errorf("the confirmation of a COMMIT whose reply was lost wrote the row: %v, want %v", wrote, early)
			}
		})
	}
}

// commitsVisibleEarly reads from the server whether it shows a commit to
// other transactions before the commit is durable: on MySQL and MariaDB,
// without a binary log, outside Galera, with a COMMIT that waits for the
// log.
func (e *env) commitsVisibleEarly(t *testing.T) bool {
	t.Helper()
	if e.dialect != "mysql" {
		return false
	}
	var logBin, galera bool
	var flush int
	if err := e.db.QueryRow("SELECT @@GLOBAL.log_bin, @@GLOBAL.innodb_flush_log_at_trx_commit").Scan(&logBin, &flush); err != nil {
		t.Fatal(err)
	}
	if err := e.db.QueryRow("SELECT @@GLOBAL.wsrep_on").Scan(&galera); err != nil {
		t.Logf("no wsrep_on (MySQL without Galera): %v", err)
	}
	return !logBin && !galera && flush != 0
}

// updatedAt reads a key's updated_at, as text: a replay that wrote the row
// changed it.
func (e *env) updatedAt(t *testing.T, key string) string {
	t.Helper()
	var v any
	if err := e.db.QueryRow(e.q("SELECT updated_at FROM "+e.table+" WHERE idem_key = ?"), key).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(v)
}

// txBinding begins a caller's transaction one way.
type txBinding struct {
	name  string
	begin func(ctx context.Context) (testTx, error)
}

// bindings are the caller's transactions Do takes on the backend: pgx's, or
// on database/sql one of the store's pool (statements prepared on MySQL and
// SQLite) and one of another pool on the same database (statements as
// text).
func (e *leaseEnv) bindings() []txBinding {
	if e.backend == "postgres-pgx" {
		return []txBinding{{name: "pgx", begin: func(ctx context.Context) (testTx, error) { return e.begin(ctx, sql.LevelDefault) }}}
	}
	other := e.deferredDB
	if other == e.db {
		var err error
		if other, err = sql.Open(e.sqlDriver()); err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { other.Close() })
	}
	sqlBegin := func(pool *sql.DB) func(ctx context.Context) (testTx, error) {
		return func(ctx context.Context) (testTx, error) {
			tx, err := pool.BeginTx(ctx, nil)
			if err != nil {
				return nil, err
			}
			return sqlTestTx{tx: tx, store: e.store}, nil
		}
	}
	return []txBinding{
		{name: "the store's pool", begin: sqlBegin(e.db)},
		{name: "another pool", begin: sqlBegin(other)},
	}
}

// waitServerKnown waits until the driver of e.store has learnt from the
// server that its commits are durable before they are visible, where that
// is so (early false). Until then its replays write, which is safe.
func (e *env) waitServerKnown(t *testing.T, early bool) {
	t.Helper()
	if early || e.dialect != "mysql" {
		return // the other dialects' replays write nothing either way
	}
	deadline := time.Now().Add(hangGuard)
	for {
		tx, err := e.db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		known := !e.sqlDrv.Bind(tx).(idemdriver.DurabilityReporter).VisibleBeforeDurable()
		_ = tx.Rollback()
		if known {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the store's driver never learnt that its server's commits are durable when visible")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Until the store's driver has learnt what its server does, a replay
// counts the server as one that shows commits early, and writes: here the
// transaction holds the pool's only connection, so the driver cannot ask.
func TestReplayWritesUntilTheServerIsKnown(t *testing.T) {
	for _, b := range backends {
		if b.dialect != "mysql" {
			continue // the other dialects' replays never need to write
		}
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			ctx := t.Context()
			var runs atomic.Int64
			e.mustGuarded("k", 1, &runs)
			dsn := mysqlDSN(t)
			if b.name == "galera" {
				dsn = galeraDSNs(t)[0]
			}
			db := openMySQL(t, dsn)
			db.SetMaxOpenConns(1)
			store := storeOn(e, sqlDriver(e.dialect, db))
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			before := e.updatedAt(t, "k")
			res, err := idemsql.Do(ctx, store, tx, "k", func(context.Context) (invoice, error) {
				runs.Add(1)
				return invoice{}, nil
			})
			if err != nil || !res.Replayed {
				t.Fatalf("Do: %+v, %v; want a replay", res, err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if e.updatedAt(t, "k") == before {
				t.Error("a replay before the driver knew its server wrote nothing")
			}
			if runs.Load() != 1 {
				t.Errorf("fn ran %d times, want 1", runs.Load())
			}
		})
	}
}
