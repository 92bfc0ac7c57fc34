package migrations

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemmysql"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
)

// lockCase is one database for the lock tests: SQLite always, PostgreSQL
// and MySQL/MariaDB when the integration suite's DSNs name them.
type lockCase struct {
	name, driver, dsn string
	newStore          func(*sql.DB, ...idemsql.Options) (Target, error)
	// kill ends the session of conn from another one, as the server does
	// when the process that holds it dies.
	kill func(t *testing.T, admin *sql.DB, conn *sql.Conn)
}

func lockCases(t *testing.T) []lockCase {
	out := []lockCase{{
		name: "sqlite", driver: "sqlite", dsn: idemsqlite.DSN(filepath.Join(t.TempDir(), "app.db")),
		newStore: func(db *sql.DB, o ...idemsql.Options) (Target, error) { return idemsql.New(idemsqlite.New(db), o...) },
	}}
	env := func(name string) string {
		v := os.Getenv(name)
		if v == "" && os.Getenv("IDEMSQL_REQUIRE_DB") == "1" {
			t.Fatalf("%s is required (IDEMSQL_REQUIRE_DB=1)", name)
		}
		return v
	}
	if dsn := env("IDEMSQL_POSTGRES_DSN"); dsn != "" {
		out = append(out, lockCase{name: "postgres", driver: "pgx", dsn: dsn,
			newStore: func(db *sql.DB, o ...idemsql.Options) (Target, error) {
				return idemsql.New(idempostgres.NewSQL(db), o...)
			},
			kill: func(t *testing.T, admin *sql.DB, conn *sql.Conn) {
				var pid int64
				if err := conn.QueryRowContext(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
					t.Fatal(err)
				}
				if _, err := admin.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
					t.Fatal(err)
				}
			}})
	}
	if dsn := env("IDEMSQL_MYSQL_DSN"); dsn != "" {
		out = append(out, lockCase{name: "mysql", driver: "mysql", dsn: dsn,
			newStore: func(db *sql.DB, o ...idemsql.Options) (Target, error) { return idemsql.New(idemmysql.New(db), o...) },
			kill: func(t *testing.T, admin *sql.DB, conn *sql.Conn) {
				var id int64
				if err := conn.QueryRowContext(context.Background(), `SELECT CONNECTION_ID()`).Scan(&id); err != nil {
					t.Fatal(err)
				}
				if _, err := admin.Exec(`KILL ?`, id); err != nil {
					t.Fatal(err)
				}
			}})
	}
	return out
}

func (c lockCase) open(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open(c.driver, c.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// target gives a store on a table of the test's own, dropped with its
// version table when the test ends.
func (c lockCase) target(t *testing.T, db *sql.DB) Target {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	target, err := c.newStore(db, idemsql.Options{Table: "idem_lock_" + hex.EncodeToString(b[:])})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = Down(context.Background(), db, target)
		versions := idemdriver.Table{Name: VersionTable(target.Table().Name)}
		_, _ = db.Exec("DROP TABLE IF EXISTS " + versions.Quote(quoteChar(target.Table().Dialect)))
	})
	return target
}

// Up waits for the migration lock: while a session holds it, Up changes
// nothing and ends with its context; when the holder's session ends, as
// when its process dies, the next Up migrates.
func TestUpWaitsForTheLockUntilItsHolderDies(t *testing.T) {
	for _, c := range lockCases(t) {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			holderDB, db := c.open(t), c.open(t)
			target := c.target(t, db)
			locker, err := lockerFor(holderDB, idemdriver.Table{Dialect: target.Table().Dialect, Name: target.Table().Name})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := holderDB.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := locker.SessionLock(ctx, conn); err != nil {
				t.Fatal(err)
			}

			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			if err := Up(short, db, target); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Up while another session holds the lock: %v, want the context's deadline", err)
			}
			st, err := Status(ctx, db, target)
			if err != nil {
				t.Fatal(err)
			}
			if st[0].Applied {
				t.Fatal("Up migrated while another session held the lock")
			}
			if exists, err := tableExists(ctx, db, target.Table().Dialect, idemdriver.Table{Name: VersionTable(target.Table().Name)}); err != nil || exists {
				t.Fatalf("Up created the version table while another session held the lock: %v %v", exists, err)
			}

			if c.kill != nil {
				c.kill(t, c.open(t), conn)
			} else {
				// SQLite's lock is the side file's write transaction: the
				// process that dies closes the file.
				if err := locker.(*sqliteLocker).close(); err != nil {
					t.Fatal(err)
				}
			}
			long, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := Up(long, db, target); err != nil {
				t.Fatalf("Up after the holder's session ended: %v", err)
			}
			if st, err := Status(ctx, db, target); err != nil || !st[len(st)-1].Applied {
				t.Fatalf("Status: %+v %v", st, err)
			}
		})
	}
}

// Callers of Up at once, each with a pool of its own, all succeed, and the
// version table records each migration once. Without the lock, on SQLite,
// several recorded version 1.
func TestUpConcurrently(t *testing.T) {
	for _, c := range lockCases(t) {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			admin := c.open(t)
			target := c.target(t, admin)
			const n = 6
			errs := make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				db := c.open(t)
				wg.Go(func() {
					<-start
					errs[i] = Up(ctx, db, target)
				})
			}
			close(start)
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			versions := idemdriver.Table{Name: VersionTable(target.Table().Name)}.Quote(quoteChar(target.Table().Dialect))
			var rows, distinct int
			if err := admin.QueryRow("SELECT COUNT(*), COUNT(DISTINCT version_id) FROM "+versions).Scan(&rows, &distinct); err != nil {
				t.Fatal(err)
			}
			if rows != distinct {
				t.Fatalf("version table: %d rows for %d versions", rows, distinct)
			}
		})
	}
}

// A fleet started on a new SQLite file: every caller's first connection
// sets WAL mode at once, and SQLite fails some of them with SQLITE_BUSY
// without waiting (about one file in a hundred with eight callers here).
// Up asks again; no caller fails.
func TestUpOnANewSQLiteFileConcurrently(t *testing.T) {
	dir := t.TempDir()
	const files, n = 200, 8
	var failed []error
	for f := range files {
		path := filepath.Join(dir, fmt.Sprintf("fleet%d.db", f))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			db, err := sql.Open("sqlite", idemsqlite.DSN(path)) // opens nothing yet
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			target, err := idemsql.New(idemsqlite.New(db))
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				<-start
				errs[i] = Up(ctx, db, target)
			})
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			failed = append(failed, fmt.Errorf("file %d: %w", f, err))
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d files: %v", len(failed), files, errors.Join(failed...))
	}
}
