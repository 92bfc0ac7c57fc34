package integration

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
)

// TestStoreUnusable: a table that is missing, or not as the migrations make
// it, is ErrStoreUnusable from every call, on every backend, with the way
// out in its text, and nothing runs; an error of fn's own statements never
// is.
func TestStoreUnusable(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := b.setup(t)
			ctx := context.Background()
			// A table of the right name made by hand, without the columns
			// the statements need: a migration not applied.
			partial := map[string]string{
				"postgres": `CREATE TABLE %s (idem_key text PRIMARY KEY, status text)`,
				"mysql":    `CREATE TABLE %s (idem_key VARBINARY(255) PRIMARY KEY, status VARCHAR(20)) ENGINE=InnoDB`,
				"sqlite":   `CREATE TABLE %s (idem_key TEXT PRIMARY KEY, status TEXT)`,
			}[e.dialect]
			for _, tc := range []struct{ name, ddl string }{{"Missing", ""}, {"NotMigrated", partial}} {
				t.Run(tc.name, func(t *testing.T) {
					table := "idem_gone_" + uniqueSuffix(t)
					if tc.ddl != "" {
						if _, err := e.db.ExecContext(ctx, strings.Replace(tc.ddl, "%s", table, 1)); err != nil {
							t.Fatal(err)
						}
						t.Cleanup(func() { _, _ = e.db.ExecContext(context.Background(), "DROP TABLE "+table) })
					}
					opt := idemsql.Options{Table: table}
					s, err := newStore(e.dialect, e.db, opt)
					if err != nil {
						t.Fatal(err)
					}
					checkUnusable(t, s, func(ctx context.Context) (*sql.Tx, func(), error) {
						tx, err := e.db.BeginTx(ctx, nil)
						if err != nil {
							return nil, nil, err
						}
						return tx, func() { _ = tx.Rollback() }, nil
					})
					if e.pool != nil {
						ps, err := idemsql.New(idempostgres.New(e.pool), opt)
						if err != nil {
							t.Fatal(err)
						}
						checkUnusable(t, ps, func(ctx context.Context) (pgx.Tx, func(), error) {
							tx, err := e.pool.Begin(ctx)
							if err != nil {
								return nil, nil, err
							}
							return tx, func() { _ = tx.Rollback(context.Background()) }, nil
						})
					}
				})
			}
			t.Run("FnsOwnMissingTable", func(t *testing.T) {
				var runs atomic.Int64
				_, err := e.run(ctx, sql.LevelDefault, "fn-missing", func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
					runs.Add(1)
					return invoice{}, exec(ctx, "INSERT INTO no_such_business_table_"+uniqueSuffix(t)+" (x) VALUES (1)")
				})
				if err == nil || errors.Is(err, idemsql.ErrStoreUnusable) || runs.Load() != 1 {
					t.Fatalf("fn's own missing table: %v (ran %d times); want fn's error, not ErrStoreUnusable", err, runs.Load())
				}
				oneClass(t, err)
			})
		})
	}
}

// checkUnusable calls every function of the API that reaches the table on
// a store whose table is unusable.
func checkUnusable[X any](t *testing.T, s *idemsql.Store[X], begin func(context.Context) (X, func(), error)) {
	t.Helper()
	ctx := context.Background()
	ran := false
	fn := func(context.Context) (int, error) { ran = true; return 1, nil }
	calls := map[string]func() error{
		"Do": func() error {
			tx, rollback, err := begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer rollback()
			_, err = idemsql.Do(ctx, s, tx, "k", fn)
			return err
		},
		"Run": func() error {
			_, err := idemsql.Run(ctx, s, "k", func(ctx context.Context, _ X) (int, error) { return fn(ctx) })
			return err
		},
		"RunExternal": func() error {
			_, err := idemsql.RunExternal(ctx, s, "k", func(ctx context.Context, _ idemsql.Claim) (int, error) { return fn(ctx) })
			return err
		},
		"ClaimLease": func() error { _, err := idemsql.ClaimLease(ctx, s, "k"); return err },
		"Lookup":     func() error { _, _, err := idemsql.Lookup(ctx, s, "k"); return err },
		"List":       func() error { _, _, err := idemsql.List(ctx, s, idemsql.ListFilter{}); return err },
		"Stats":      func() error { _, err := idemsql.Stats(ctx, s); return err },
		"Sweep":      func() error { _, err := idemsql.Sweep(ctx, s, nil); return err },
		"SweepWithHandler": func() error {
			_, err := idemsql.Sweep(ctx, s, func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
				ran = true
				return idemsql.Resolution{Outcome: idemsql.ResolveReleased}, nil
			})
			return err
		},
		"Purge":  func() error { _, err := idemsql.Purge(ctx, s); return err },
		"Forget": func() error { _, err := idemsql.Forget(ctx, s, "k"); return err },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, idemsql.ErrStoreUnusable) {
			t.Errorf("%s: %v; want ErrStoreUnusable", name, err)
			continue
		}
		oneClass(t, err)
		if !strings.Contains(err.Error(), "idemsql migrate up") || !strings.Contains(err.Error(), "migrations.Up") {
			t.Errorf("%s: %q does not say how to create the table", name, err)
		}
		var ie *idemsql.Error
		if !errors.As(err, &ie) || ie.Err == nil {
			t.Errorf("%s: %#v carries no driver error", name, err)
		}
	}
	if ran {
		t.Error("fn ran on an unusable store")
	}
}
