package integration

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// TestCLIForget runs 'idemsql forget' on PostgreSQL, MySQL/MariaDB and
// SQLite: it deletes a key, which then runs again; it refuses a key a live
// lease holds, and says so; an unknown key is exit code 3.
func TestCLIForget(t *testing.T) {
	bin := buildCLI(t, t.TempDir())
	for _, b := range backends {
		if b.name == "postgres-pgx" || b.name == "galera" {
			continue // the command reaches PostgreSQL through pgx's stdlib, and MariaDB as a server
		}
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := b.setup(t)
			c := &cliEnv{env: e, t: t, bin: bin, dsn: cliDSN(t, b, e)}
			ctx := context.Background()
			var runs atomic.Int64
			if _, err := e.run(ctx, sql.LevelDefault, "order:1", e.insertBiz("order:1", 5, &runs)); err != nil {
				t.Fatal(err)
			}
			c.run("forget", "order:1").want(t, "forget a completed key", 0,
				"forgot order:1 (completed, attempt 1, lease none) in "+c.table+": the next call with the key runs again", "")
			if res, err := e.run(ctx, sql.LevelDefault, "order:1", e.insertBiz("order:1", 5, &runs)); err != nil || res.Replayed || runs.Load() != 2 {
				t.Fatalf("the call after forget: %+v, %v, fn ran %d times", res, err, runs.Load())
			}

			l, err := idemsql.ClaimLease(ctx, e.store, "pay:1", idemsql.Options{Lease: time.Minute})
			if err != nil || !l.Held {
				t.Fatalf("claim: %+v, %v", l, err)
			}
			c.run("forget", "pay:1").want(t, "forget a live lease", 1, "", "pay:1 is held (a live lease, or a transaction claiming it now)")
			if err := l.Complete(ctx, receipt{By: "holder"}); err != nil {
				t.Fatalf("the holder's Complete after the refused forget: %v", err)
			}

			c.run("forget", "no:such-key").want(t, "forget an unknown key", 3, "", "no key no:such-key in "+c.table)
			c.run("forget").want(t, "forget without a key", 2, "", "want KEY")
			c.run("forget", "--table", "idem_missing", "order:1").want(t, "forget on a missing table", 1, "", "run `idemsql migrate up`")
		})
	}
}
