package integration

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// TestSchema runs the library with its table in a schema of its own
// (idemsql.Options.Schema): a PostgreSQL schema, a MySQL database. The
// migrations, Do, Run, lease mode, Sweep and Purge all find it there, and
// nothing lands in the connection's default schema.
func TestSchema(t *testing.T) {
	for _, b := range backends {
		if b.dialect == "sqlite" {
			continue // no schemas: the option is refused (TestStoreOptions)
		}
		t.Run(b.name, func(t *testing.T) {
			schema := "idem_s_" + uniqueSuffix(t)
			admin := b.setup(t) // a plain env, for the schema's DDL
			create, drop := "CREATE SCHEMA "+schema, "DROP SCHEMA "+schema+" CASCADE"
			if b.dialect == "mysql" {
				create, drop = "CREATE DATABASE "+schema, "DROP DATABASE "+schema
			}
			if _, err := admin.db.Exec(create); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = admin.db.Exec(drop) })

			e := b.setup(t, idemsql.Options{Schema: schema})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var runs atomic.Int64
			if res := e.mustGuarded("s-1", 1, &runs); res.Replayed {
				t.Fatal("first call replayed")
			}
			if res := e.mustGuarded("s-1", 1, &runs); !res.Replayed || runs.Load() != 1 {
				t.Fatalf("duplicate: %+v runs=%d", res, runs.Load())
			}
			if res, err := e.run(ctx, sql.LevelDefault, "s-2", e.insertBiz("s-2", 2, &runs)); err != nil || res.Replayed {
				t.Fatalf("Run: %+v %v", res, err)
			}
			db := e.store
			var calls atomic.Int64
			if _, err := idemsql.RunExternal(ctx, db, "s-3", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
				calls.Add(1)
				return receipt{By: "s"}, nil
			}); err != nil {
				t.Fatalf("RunExternal: %v", err)
			}
			if n := e.queryInt("SELECT COUNT(*) FROM " + e.table); n != 3 {
				t.Fatalf("%d rows in %s, want 3", n, e.table)
			}
			if _, err := idemsql.Sweep(ctx, db, nil); err != nil {
				t.Fatalf("Sweep: %v", err)
			}
			e.expire("s-1")
			if st, err := idemsql.Purge(ctx, db); err != nil || st.Deleted != 1 {
				t.Fatalf("Purge: %+v %v", st, err)
			}
			// Nothing was created where the connection looks by default.
			unqualified := "SELECT COUNT(*) FROM " + idemsql.DefaultTable
			var n int64
			err := e.db.QueryRow(unqualified).Scan(&n)
			if err == nil && n > 0 {
				t.Fatalf("%d rows in the default schema's %s", n, idemsql.DefaultTable)
			}
			if _, err := e.db.Exec(fmt.Sprintf("SELECT 1 FROM %s_goose_version", e.table)); err != nil {
				t.Fatalf("the version table is not in the schema: %v", err)
			}
		})
	}
}
