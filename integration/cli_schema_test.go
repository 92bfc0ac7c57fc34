package integration

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/migrations"
)

// TestCLISchema runs every command of cmd/idemsql on a table in a schema
// of its own (--schema): a PostgreSQL schema, a MySQL database, which the
// test creates. Before it exists, the commands say so; once it does, they
// find the table there, and nothing lands in the connection's default
// schema.
func TestCLISchema(t *testing.T) {
	bin := buildCLI(t, t.TempDir())
	for _, b := range backends {
		if b.name != "postgres-stdlib" && b.name != "mysql" {
			continue // the command reaches PostgreSQL through pgx's stdlib, MariaDB as a server; SQLite has no schemas
		}
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			admin := b.setup(t) // a connection of the test's own, for the schema's DDL and the rows
			c := &cliEnv{env: admin, t: t, bin: bin, dsn: cliDSN(t, b, admin)}
			suffix := uniqueSuffix(t)
			schema, table := "idem_cli_s_"+suffix, "idem_cli_"+suffix
			qualified := idemdriver.Table{Schema: schema, Name: table}.String()
			versions := migrations.VersionTable(table)
			create, drop := "CREATE SCHEMA "+schema, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"
			if b.dialect == "mysql" {
				create, drop = "CREATE DATABASE "+schema, "DROP DATABASE IF EXISTS "+schema
			}
			t.Cleanup(func() {
				_, _ = admin.db.Exec(drop)
				// Where a regression put them.
				_, _ = admin.db.Exec("DROP TABLE IF EXISTS " + table)
				_, _ = admin.db.Exec("DROP TABLE IF EXISTS " + versions)
			})
			found := func(name string) bool {
				var n int64
				return admin.db.QueryRow("SELECT COUNT(*) FROM "+name).Scan(&n) == nil
			}
			// The connection's default schema holds neither table.
			inDefault := func(what string) {
				t.Helper()
				if found(table) || found(versions) {
					t.Fatalf("%s: a table in the default schema", what)
				}
			}
			// The schema after the command, as an operator would put it;
			// cli also puts one before the command, in run.
			cli := func(args ...string) cliResult {
				t.Helper()
				return c.runWith([]string{"IDEMSQL_DSN=" + c.dsn}, append(args, "--schema", schema, "--table", table)...)
			}

			noSchema := "schema " + schema + " does not exist in "
			r := cli("migrate", "up")
			r.want(t, "migrate up in a schema that does not exist", 1, "", noSchema)
			if !strings.Contains(r.stderr, "("+create+")") || strings.Contains(r.stderr, "goose") {
				t.Fatalf("migrate up in a schema that does not exist: not the command's own message:\n%s", r.stderr)
			}
			cli("migrate", "status").want(t, "migrate status in a schema that does not exist", 1, "", noSchema)
			cli("migrate", "down", "--yes").want(t, "migrate down in a schema that does not exist", 1, "", "nothing to migrate down: "+noSchema)
			cli("stats").want(t, "stats in a schema that does not exist", 1, "", noSchema)
			inDefault("before the schema")

			if _, err := admin.db.Exec(create); err != nil {
				t.Fatal(err)
			}
			cli("migrate", "down", "--yes").want(t, "migrate down of a table that does not exist", 1, "", "nothing to migrate down: table "+qualified+" does not exist in ")
			if found(schema + "." + versions) {
				t.Fatal("migrate down of a table that does not exist created the version table")
			}
			cli("migrate", "status").want(t, "migrate status before up", 0, "pending", "")
			c.runWith([]string{"IDEMSQL_DSN=" + c.dsn}, "--schema", schema, "--table", table, "migrate", "up").
				want(t, "migrate up with --schema before the command", 0, "to "+qualified+" in ", "")
			if !found(qualified) || !found(schema+"."+versions) {
				t.Fatal("migrate up did not create the table and its version table in the schema")
			}
			inDefault("after migrate up")
			cli("migrate", "up").want(t, "migrate up again", 0, qualified+" is up to date", "")
			cli("migrate", "status").want(t, "migrate status", 0, "table "+qualified+", version table "+qualified+"_goose_version", "")

			// Rows put there through the library: one completed, one past
			// its retention, one stale claim.
			store, err := newStore(b.dialect, admin.db, idemsql.Options{Table: table, Schema: schema})
			if err != nil {
				t.Fatal(err)
			}
			e := &env{t: t, dialect: b.dialect, db: admin.db, store: store, table: qualified}
			ops := opsFor(store)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, key := range []string{"s:done", "s:old"} {
				if _, err := ops.do(ctx, key, func(context.Context, idemsql.Claim) (receipt, error) {
					return receipt{By: key}, nil
				}); err != nil {
					t.Fatalf("%s: %v", key, err)
				}
			}
			e.expire("s:old")
			if cl, err := ops.claim(ctx, "s:stale", idemsql.Options{Lease: time.Hour}); err != nil || !cl.Held {
				t.Fatalf("claim: %+v %v", cl, err)
			}
			e.exec(t, "UPDATE "+qualified+" SET lease_until = "+e.secondsAgo(5)+" WHERE idem_key = ?", "s:stale")

			r = cli("ls", "--json")
			r.want(t, "ls --json", 0, "", "")
			var ls lsJSON
			if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil {
				t.Fatalf("ls --json: %v\n%s", err, r.stdout)
			}
			if got, want := ls.keys(), []string{"s:done", "s:old", "s:stale"}; !slices.Equal(got, want) {
				t.Fatalf("ls: %q, want %q", got, want)
			}
			cli("ls", "--stale").want(t, "ls --stale", 0, "s:stale", "")
			cli("show", "s:done").want(t, "show", 0, "completed", "")
			cli("show", "s:none").want(t, "show a key the table does not hold", 3, "", "no key s:none in "+qualified)
			r = cli("stats")
			r.want(t, "stats", 0, "table "+qualified+" ("+b.dialect+")", "")
			if !strings.Contains(r.stdout, "\nrows               3\n") {
				t.Fatalf("stats:\n%s", r.stdout)
			}
			cli("sweep").want(t, "sweep", 0, "swept 1 stale claim: 1 abandoned", "")
			cli("purge").want(t, "purge", 0, "deleted 1 row in 1 batch from "+qualified, "")
			cli("show", "s:stale").want(t, "show a swept claim", 0, "failure         abandoned: ", "")
			inDefault("after the commands")

			cli("migrate", "down", "--yes").want(t, "migrate down", 0, qualified+" dropped from ", "")
			if found(qualified) {
				t.Fatal("migrate down left the table in the schema")
			}
			cli("migrate", "down", "--yes").want(t, "migrate down again", 1, "", "nothing to migrate down: table "+qualified+" does not exist")
			inDefault("after migrate down")
		})
	}
}
