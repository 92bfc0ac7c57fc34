package integration

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/idemsql/idemsql/idemsql"
)

// TestDoThroughPreparedStatements runs Do in transactions of the store's
// pool after Run has started preparing the store's statements on it, so
// that Do runs them prepared once they are ready (SQLite, MySQL;
// idemdriver's own tests check the switch): first call, replay,
// fingerprint mismatch, a failed fn's release, the struct{} fast path.
func TestDoThroughPreparedStatements(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			ctx := context.Background()
			pool := e.store
			var runs atomic.Int64
			// Run starts preparing the statements on e.db.
			if _, err := idemsql.Run(ctx, pool, "warm", func(ctx context.Context, tx *sql.Tx) (int, error) { return 1, nil }); err != nil {
				t.Fatalf("Run: %v", err)
			}
			call := func(key string, fp string, fn func(context.Context, testTx) (invoice, error)) (idemsql.Result[invoice], error) {
				t.Helper()
				sqlTx, err := e.db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatalf("begin: %v", err)
				}
				tx := sqlTestTx{tx: sqlTx, store: e.store}
				res, err := idemsql.Do(ctx, pool, sqlTx, key, func(ctx context.Context) (invoice, error) { return fn(ctx, tx) },
					idemsql.Options{Fingerprint: []byte(fp)})
				if err != nil {
					_ = sqlTx.Rollback()
					return res, err
				}
				if err := sqlTx.Commit(); err != nil {
					t.Fatalf("commit: %v", err)
				}
				return res, nil
			}
			charge := func(key string) func(context.Context, testTx) (invoice, error) {
				return func(ctx context.Context, tx testTx) (invoice, error) { return e.charge(tx, key, 42, &runs)(ctx) }
			}
			for i := range 2 {
				res, err := call("k", "req", charge("k"))
				if err != nil || res.Replayed != (i == 1) || res.Value.Amount != 42 {
					t.Fatalf("call %d: %+v, %v", i, res, err)
				}
			}
			if runs.Load() != 1 || e.bizRows("k") != 1 {
				t.Fatalf("fn ran %d times, %d business rows; want 1, 1", runs.Load(), e.bizRows("k"))
			}
			if _, err := call("k", "other", charge("k")); !errors.Is(err, idemsql.ErrFingerprintMismatch) {
				t.Fatalf("other fingerprint: %v, want ErrFingerprintMismatch", err)
			}
			boom := errors.New("boom")
			sqlTx, err := e.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := idemsql.Do(ctx, pool, sqlTx, "failed", func(context.Context) (int, error) { return 0, boom }); !errors.Is(err, boom) {
				t.Fatalf("fn error: %v", err)
			}
			if err := sqlTx.Commit(); err != nil {
				t.Fatal(err)
			}
			if n := e.idemRows("failed"); n != 0 {
				t.Fatalf("%d rows after fn failed and the caller committed, want 0", n)
			}
			for i := range 2 {
				sqlTx, err := e.db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				res, err := idemsql.Do(ctx, pool, sqlTx, "void", func(context.Context) (struct{}, error) { return struct{}{}, nil })
				if err != nil || res.Replayed != (i == 1) {
					t.Fatalf("struct{} call %d: %+v, %v", i, res, err)
				}
				if err := sqlTx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
