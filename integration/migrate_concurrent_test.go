package integration

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// migrateTarget is one database on which a fleet migrates at once.
type migrateTarget struct {
	name    string
	driver  string // database/sql driver name
	dialect string
	dsn     string // for sql.Open
	cliDSN  string // for the command
	// versions are the migrations the dialect has.
	versions []int64
}

func migrateTargets(t *testing.T) []migrateTarget {
	t.Helper()
	noParseTime := func(dsn string) string {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ParseTime = false
		return cfg.FormatDSN()
	}
	path := filepath.Join(t.TempDir(), "fleet.db")
	var out []migrateTarget
	out = append(out, migrateTarget{name: "postgres", driver: "pgx", dialect: "postgres", dsn: postgresDSN(t), cliDSN: postgresDSN(t), versions: []int64{1}})
	out = append(out, migrateTarget{name: "mysql", driver: "mysql", dialect: "mysql", dsn: mysqlDSN(t), cliDSN: noParseTime(mysqlDSN(t)), versions: []int64{1}})
	out = append(out, migrateTarget{name: "sqlite", driver: "sqlite", dialect: "sqlite", dsn: idemsqlite.DSN(path), cliDSN: path, versions: []int64{1}})
	// Every process through the same node: GET_LOCK serialises them there
	// (it is node-local: see docs/distributed.md).
	galera := galeraDSNs(t)[0]
	out = append(out, migrateTarget{name: "galera", driver: "mysql", dialect: "mysql", dsn: galera, cliDSN: noParseTime(galera), versions: []int64{1}})
	return out
}

// TestMigrateConcurrently starts a fleet at once, as the README tells users
// to migrate at start-up: eight goroutines, each with a pool of its own,
// call migrations.Up on a new table, then four processes run `idemsql
// migrate up` on another. Every caller succeeds, the version table records
// each migration once, and the table is whole: a guarded call works on it.
func TestMigrateConcurrently(t *testing.T) {
	bin := buildCLI(t, t.TempDir())
	for _, mt := range migrateTargets(t) {
		t.Run(mt.name, func(t *testing.T) {
			t.Run("goroutines", func(t *testing.T) {
				table := "idem_mig_" + uniqueSuffix(t)
				store, admin := mt.open(t, table)
				const n = 8
				start := make(chan struct{})
				errs := make([]error, n)
				var wg sync.WaitGroup
				for i := range n {
					db, err := sql.Open(mt.driver, mt.dsn)
					if err != nil {
						t.Fatal(err)
					}
					defer db.Close()
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
						defer cancel()
						errs[i] = migrations.Up(ctx, db, store)
					}()
				}
				close(start)
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Errorf("caller %d: %v", i, err)
					}
				}
				mt.check(t, admin, store, table)
			})
			t.Run("processes", func(t *testing.T) {
				// Each process waits for the same instant, so that they
				// connect and migrate together however long each took to
				// start.
				table := "idem_mig_" + uniqueSuffix(t)
				store, admin := mt.open(t, table)
				at := time.Now().Add(2 * time.Second)
				mt.fleet(t, 4, func() *exec.Cmd {
					cmd := exec.Command(os.Args[0], "-test.run=^TestMigrateChild$", "-test.count=1")
					cmd.Env = append(os.Environ(), envMigrateChild+"="+strings.Join([]string{mt.driver, mt.dialect, mt.dsn, table, fmt.Sprint(at.UnixNano())}, "\n"))
					return cmd
				})
				mt.check(t, admin, store, table)
			})
			t.Run("cli", func(t *testing.T) {
				table := "idem_mig_" + uniqueSuffix(t)
				store, admin := mt.open(t, table)
				mt.fleet(t, 4, func() *exec.Cmd {
					cmd := exec.Command(bin, "migrate", "up", "--table", table)
					cmd.Env = append(os.Environ(), "IDEMSQL_DSN="+mt.cliDSN)
					return cmd
				})
				mt.check(t, admin, store, table)
			})
		})
	}
}

// fleet starts n processes at once and wants each to succeed.
func (mt migrateTarget) fleet(t *testing.T, n int, cmd func() *exec.Cmd) {
	t.Helper()
	cmds := make([]*exec.Cmd, n)
	outs := make([]strings.Builder, n)
	for i := range cmds {
		cmds[i] = cmd()
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("process %d: %v\n%s", i, err, outs[i].String())
		}
	}
}

const envMigrateChild = "IDEMSQL_TEST_MIGRATE_CHILD"

// TestMigrateChild is one process of TestMigrateConcurrently's fleet: it
// does nothing unless that test started it.
func TestMigrateChild(t *testing.T) {
	v := os.Getenv(envMigrateChild)
	if v == "" {
		t.Skip("run by TestMigrateConcurrently")
	}
	f := strings.Split(v, "\n")
	driver, dialect, dsn, table := f[0], f[1], f[2], f[3]
	var at int64
	if _, err := fmt.Sscan(f[4], &at); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := newStore(dialect, db, idemsql.Options{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(time.Unix(0, at)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := migrations.Up(ctx, db, store); err != nil {
		t.Fatalf("Up: %v", err)
	}
}

// open gives a store for table and a pool for the test's own checks; the
// table and its version table are dropped when the test ends.
func (mt migrateTarget) open(t *testing.T, table string, opts ...idemsql.Options) (*idemsql.Store[*sql.Tx], *sql.DB) {
	t.Helper()
	admin, err := sql.Open(mt.driver, mt.dsn)
	if err != nil {
		t.Fatal(err)
	}
	store, err := newStore(mt.dialect, admin, withOptions(idemsql.Options{Table: table}, opts...))
	if err != nil {
		admin.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx := context.Background()
		if err := migrations.Down(ctx, admin, store); err != nil {
			t.Errorf("migrate down: %v", err)
		}
		versions := idemdriver.Table{Schema: store.Table().Schema, Name: migrations.VersionTable(table)}
		q := `"`
		if mt.dialect == "mysql" {
			q = "`"
		}
		if _, err := admin.ExecContext(ctx, "DROP TABLE IF EXISTS "+versions.Quote(q)); err != nil {
			t.Errorf("drop version table: %v", err)
		}
	})
	return store, admin
}

// check asserts what a fleet's migration must leave: each version recorded
// once (and goose's version 0), every migration applied, a table a guarded
// call can use.
func (mt migrateTarget) check(t *testing.T, db *sql.DB, store *idemsql.Store[*sql.Tx], table string) {
	t.Helper()
	ctx := context.Background()
	q := `"`
	if mt.dialect == "mysql" {
		q = "`"
	}
	versions := idemdriver.Table{Schema: store.Table().Schema, Name: migrations.VersionTable(table)}.Quote(q)
	rows, err := db.QueryContext(ctx, "SELECT version_id, COUNT(*) FROM "+versions+" GROUP BY version_id ORDER BY version_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var v, n int64
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d×%d", v, n))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"0×1"}
	for _, v := range mt.versions {
		want = append(want, fmt.Sprintf("%d×1", v))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("version table %s holds %v (version×rows), want %v", versions, got, want)
	}
	st, err := migrations.Status(ctx, db, store)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied {
			t.Fatalf("migration %d not applied: %+v", s.Version, st)
		}
	}
	key := "mig-" + uniqueSuffix(t)
	for i := range 2 {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := idemsql.Do(ctx, store, tx, key, func(context.Context) (int, error) { return 7, nil })
		if err != nil {
			_ = tx.Rollback()
			t.Fatalf("Do on the migrated table: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if res.Value != 7 || res.Replayed != (i == 1) {
			t.Fatalf("call %d: %+v", i, res)
		}
	}
}
