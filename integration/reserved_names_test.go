package integration

import (
	"context"
	"database/sql"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/migrations"
)

// reservedNames are reserved words of SQL that idemsql.Options.Table accepts:
// ORDER on every database, USER on PostgreSQL, GRANT on PostgreSQL and
// MySQL.
var reservedNames = []string{"order", "user", "grant"}

// TestReservedTableNames migrates a table named by a reserved word up, runs
// a full cycle on it (Do, Run, RunExternal, Sweep, Purge, Status) and
// migrates it down, on every backend; on PostgreSQL also in a schema named
// by one. The command (cmd/idemsql) then runs every command on the same
// names. On the shared Galera cluster the tables live in a database of the
// test's own, so that two runs never meet.
func TestReservedTableNames(t *testing.T) {
	bin := buildCLI(t, t.TempDir())
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			var schemas []string
			switch b.name {
			case "galera":
				schemas = []string{"idem_rsv_" + uniqueSuffix(t)}
			case "postgres-pgx", "postgres-stdlib":
				schemas = []string{"", "user"}
			default:
				schemas = []string{""}
			}
			admin := b.setup(t)
			for _, schema := range schemas {
				if schema != "" {
					createSchema(t, admin, schema)
				}
				for _, name := range reservedNames {
					t.Run(strings.TrimPrefix(schema+"."+name, "."), func(t *testing.T) {
						cli := ""
						if b.name == "postgres-stdlib" || b.name == "mysql" || b.name == "sqlite" {
							cli = bin // as TestCLI: one backend per database
						}
						testReservedName(t, b, cli, schema, name)
					})
				}
			}
		})
	}
}

// createSchema creates a schema (a MySQL database) the test drops when it
// ends.
func createSchema(t *testing.T, admin *env, schema string) {
	t.Helper()
	create, drop := `CREATE SCHEMA "`+schema+`"`, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`
	if admin.dialect == "mysql" {
		create, drop = "CREATE DATABASE `"+schema+"`", "DROP DATABASE IF EXISTS `"+schema+"`"
	}
	_, _ = admin.db.Exec(drop) // left by a run that was killed
	if _, err := admin.db.Exec(create); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.db.Exec(drop) })
}

func testReservedName(t *testing.T, b backend, bin, schema, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := b.setup(t) // a business table, and run helpers that read e.store
	e.withStoreOptions(idemsql.Options{Table: name, Schema: schema})
	q := `"`
	if e.dialect == "mysql" {
		q = "`"
	}
	table := idemdriver.Table{Schema: schema, Name: name}
	versions := idemdriver.Table{Schema: schema, Name: migrations.VersionTable(name)}
	drop := func() {
		_, _ = e.db.Exec("DROP TABLE IF EXISTS " + table.Quote(q))
		_, _ = e.db.Exec("DROP TABLE IF EXISTS " + versions.Quote(q))
	}
	drop() // left by a run that was killed
	t.Cleanup(drop)
	// The helpers' own SQL names the table as given; setup's clean-up
	// wants its own name back.
	own := e.table
	t.Cleanup(func() { e.table = own })
	e.table = table.Quote(q)

	if err := migrations.Up(ctx, e.db, e.store); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if err := migrations.Up(ctx, e.db, e.store); err != nil {
		t.Fatalf("Up again: %v", err)
	}
	st, err := migrations.Status(ctx, e.db, e.store)
	if err != nil || len(st) == 0 || !st[len(st)-1].Applied {
		t.Fatalf("Status: %+v %v", st, err)
	}

	var runs atomic.Int64
	if res := e.mustGuarded("r-1", 1, &runs); res.Replayed {
		t.Fatal("first Do replayed")
	}
	if res := e.mustGuarded("r-1", 1, &runs); !res.Replayed || runs.Load() != 1 {
		t.Fatalf("duplicate Do: %+v runs=%d", res, runs.Load())
	}
	if res, err := e.run(ctx, sql.LevelDefault, "r-2", e.insertBiz("r-2", 2, &runs)); err != nil || res.Replayed {
		t.Fatalf("Run: %+v %v", res, err)
	}
	if res, err := e.run(ctx, sql.LevelDefault, "r-2", e.insertBiz("r-2", 2, &runs)); err != nil || !res.Replayed || runs.Load() != 2 {
		t.Fatalf("Run again: %+v %v runs=%d", res, err, runs.Load())
	}
	db := e.store
	var calls atomic.Int64
	for range 2 {
		if _, err := idemsql.RunExternal(ctx, db, "r-3", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
			calls.Add(1)
			return receipt{By: name}, nil
		}); err != nil {
			t.Fatalf("RunExternal: %v", err)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("RunExternal ran %d times", calls.Load())
	}
	if n := e.queryInt("SELECT COUNT(*) FROM " + e.table); n != 3 {
		t.Fatalf("%d rows in %s, want 3", n, e.table)
	}
	if _, err := idemsql.Sweep(ctx, db, nil); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	e.expire("r-1")
	if st, err := idemsql.Purge(ctx, db); err != nil || st.Deleted != 1 {
		t.Fatalf("Purge: %+v %v", st, err)
	}

	if err := migrations.Down(ctx, e.db, e.store); err != nil {
		t.Fatalf("Down: %v", err)
	}
	var n int64
	if err := e.db.QueryRow("SELECT COUNT(*) FROM " + e.table).Scan(&n); err == nil {
		t.Fatalf("%s still exists after Down", e.table)
	}
	st, err = migrations.Status(ctx, e.db, e.store)
	if err != nil || st[0].Applied {
		t.Fatalf("Status after Down: %+v %v", st, err)
	}
	if bin == "" {
		return
	}

	c := &cliEnv{env: e, t: t, bin: bin, dsn: cliDSN(t, b, e)}
	cli := func(args ...string) cliResult {
		t.Helper()
		args = append(args, "--table", name)
		if schema != "" {
			args = append(args, "--schema", schema)
		}
		return c.runWith([]string{"IDEMSQL_DSN=" + c.dsn}, args...)
	}
	shown := table.String()
	cli("migrate", "up").want(t, "migrate up", 0, "to "+shown+" in ", "")
	cli("migrate", "up").want(t, "migrate up again", 0, shown+" is up to date", "")
	runs.Store(0)
	e.mustGuarded("c-1", 1, &runs)
	cli("ls").want(t, "ls", 0, "c-1", "")
	cli("show", "c-1").want(t, "show", 0, "c-1", "")
	cli("stats").want(t, "stats", 0, "", "")
	cli("purge", "--dry-run").want(t, "purge --dry-run", 0, "", "")
	cli("sweep", "--dry-run").want(t, "sweep --dry-run", 0, "", "")
	cli("migrate", "status").want(t, "migrate status", 0, "applied", "")
	cli("migrate", "down", "--yes").want(t, "migrate down", 0, shown+" dropped", "")
	if err := e.db.QueryRow("SELECT COUNT(*) FROM " + e.table).Scan(&n); err == nil {
		t.Fatalf("%s still exists after migrate down", e.table)
	}
}
