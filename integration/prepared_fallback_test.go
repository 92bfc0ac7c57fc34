//go:build linux

package integration

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/idemsql/idemsql/idemsql"
)

// MySQL: when the server cannot prepare a statement on the transaction's
// connection (max_prepared_stmt_count reached), idemsql's statements run
// unprepared instead of failing the call: Run through the store's
// prepared statements and through text, Do in a transaction of the store's
// pool (prepared statements) and of another pool (text), lease mode and
// Purge. Without interpolateParams the driver prepares a statement
// even to run it as text, so the text carries its arguments as literals
// then. On a MariaDB server of the test's own: the limit is the server's,
// and would fail the tests of others that share one.
func TestPreparedStatementFallback(t *testing.T) {
	srv, dsn := newPrivateMariaDB(t)
	srv.start()
	for _, interpolate := range []bool{true, false} {
		t.Run(fmt.Sprintf("interpolateParams=%v", interpolate), func(t *testing.T) {
			cfg, err := mysql.ParseDSN(dsn)
			if err != nil {
				t.Fatal(err)
			}
			cfg.InterpolateParams = interpolate
			e := setupMySQLAt(t, cfg.FormatDSN())
			ctx := context.Background()
			bound := e.store
			var runs atomic.Int64
			insert := func(ctx context.Context, tx *sql.Tx) (invoice, error) {
				runs.Add(1)
				_, err := tx.ExecContext(ctx, "INSERT INTO "+e.biz+" (idem_key, amount) VALUES ('prep', 1)")
				return invoice{Amount: 1}, err
			}
			prepared := func() int64 {
				var name string
				var n int64
				if err := e.db.QueryRow("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'").Scan(&name, &n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			if _, err := idemsql.Run(ctx, bound, "prep-1", insert); err != nil {
				t.Fatal(err)
			}
			// Run prepares the store's six statements in the background:
			// wait for them, then make every transaction take a new
			// connection, where they must be prepared again; the old ones'
			// statements go with them (the server counts them until it
			// notices).
			for deadline := time.Now().Add(hangGuard); prepared() < 6; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the store's statements were never prepared")
				}
			}
			e.db.SetMaxIdleConns(0)
			for deadline := time.Now().Add(hangGuard); prepared() != 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the closed connections' statements are still counted")
				}
			}
			if _, err := e.db.Exec("SET GLOBAL max_prepared_stmt_count = 0"); err != nil {
				t.Fatal(err)
			}
			restore := func() {
				if _, err := e.db.Exec("SET GLOBAL max_prepared_stmt_count = DEFAULT"); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(restore) // before the table's migrations go down
			if res, err := idemsql.Run(ctx, bound, "prep-2", insert); err != nil || res.Replayed {
				t.Fatalf("Run with no room for prepared statements: %+v %v", res, err)
			}
			if res, err := idemsql.Run(ctx, bound, "prep-2", insert); err != nil || !res.Replayed || runs.Load() != 2 {
				t.Fatalf("replay: %+v %v runs=%d", res, err, runs.Load())
			}
			other := openMySQL(t, cfg.FormatDSN())
			if _, err := idemsql.Run(ctx, storeOn(e, sqlDriver(e.dialect, other)), "prep-3", insert); err != nil {
				t.Fatalf("Run on a new pool, statements not prepared: %v", err)
			}
			for _, c := range []struct {
				name, key string
				pool      *sql.DB
			}{{"the store's pool", "prep-4", e.db}, {"another pool", "prep-6", other}} {
				tx, err := c.pool.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := idemsql.Do(ctx, e.store, tx, c.key, func(context.Context) (int, error) { return 4, nil }); err != nil {
					t.Fatalf("Do in a transaction of %s: %v", c.name, err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := idemsql.RunExternal(ctx, bound, "prep-5", func(context.Context, idemsql.Claim) (int, error) { return 5, nil }); err != nil {
				t.Fatalf("RunExternal: %v", err)
			}
			if _, err := idemsql.Purge(ctx, bound); err != nil {
				t.Fatalf("Purge: %v", err)
			}
			if n := prepared(); n != 0 {
				t.Fatalf("%d statements prepared with max_prepared_stmt_count = 0", n)
			}
			restore()
			for _, key := range []string{"prep-2", "prep-3", "prep-4", "prep-5", "prep-6"} {
				if n := e.idemRows(key); n != 1 {
					t.Errorf("%d rows for %s, want 1", n, key)
				}
			}
		})
	}
}
