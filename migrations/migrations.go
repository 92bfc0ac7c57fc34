// Package migrations ships idemsql's schema as goose SQL migrations, one
// folder per dialect, embedded in the binary, and applies them.
//
// From Go, with the library's own goose version table (so they never mix
// with the application's goose_db_version):
//
//	store, err := idemsql.New(idempostgres.NewSQL(db))
//	if err != nil {
//		return err
//	}
//	err = migrations.Up(ctx, db, store)
//
// Or with the stock goose command-line tool, from a checkout, naming the
// same version table, so that both ways agree and neither mixes with the
// application's own goose_db_version:
//
//	goose -table idempotency_keys_goose_version -dir migrations/postgres postgres "$DATABASE_URL" up
//	goose -table idempotency_keys_goose_version -dir migrations/mysql mysql "$MYSQL_DSN" up
//	goose -table idempotency_keys_goose_version -dir migrations/sqlite sqlite3 ./app.db up
//
// The files create the table named idempotency_keys. [Up] renders them for
// the store's table, quoting every name, so that a table named by a
// reserved word (idemsql.Options{Table: "order"}) or living in a schema of
// its own ([idemsql.Options].Schema) is created as the statements name it.
//
// # Many processes at once
//
// [Up] and [Down] are safe to call from every process of a fleet at once, at
// start-up: each holds a lock for the table from before it reads the version
// table until its last migration is recorded, so that each migration applies
// once and the others wait for it (as long as ctx allows), then find nothing
// pending. The lock belongs to the session that migrates: a process that
// dies frees it at once, and a slow migration keeps it as long as it runs.
//
//   - PostgreSQL: a session advisory lock (pg_advisory_lock), keyed by the
//     table. It needs a session of its own: through PgBouncer's transaction
//     pooling, migrate over a direct connection.
//   - MySQL, MariaDB: a named lock of the server (GET_LOCK), named by the
//     database and the table.
//   - SQLite: a write transaction on a file beside the database,
//     <database>-idemsql-migrate, which stays there afterwards. An in-memory
//     database takes none (no other process reaches it).
//
// On MariaDB Galera, and MySQL Group Replication in multi-primary mode,
// GET_LOCK is local to the node that takes it: processes connected to
// different nodes do not wait for each other. Migrating through several
// nodes at once fails: on a three-node Galera cluster, eight callers spread
// over the nodes all failed with goose's "missing zero version migration"
// in 7 tries of 8, and left the version table empty, which fails every
// later Up the same way until it is dropped (nothing was applied then:
// dropping it is safe).
// Migrate through one node: give Up, in every process, a *sql.DB whose DSN
// names the same node, or run `idemsql migrate up` once before the fleet
// starts. The stock goose command takes no lock at all: run it once.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"math"
	"regexp"
	"testing/fstest" // a ready-made in-memory fs.FS; nothing of package testing is linked

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

//go:embed postgres/*.sql mysql/*.sql sqlite/*.sql
var files embed.FS

// FS returns the migrations of one dialect ("postgres", "mysql", "sqlite")
// as goose reads them, for callers who run goose themselves.
func FS(dialect string) (fs.FS, error) {
	if _, ok := gooseDialects[dialect]; !ok {
		return nil, fmt.Errorf("%w: no migrations for dialect %q", idemsql.ErrInvalidOption, dialect)
	}
	return fs.Sub(files, dialect)
}

var gooseDialects = map[string]goose.Dialect{
	"postgres": goose.DialectPostgres,
	"mysql":    goose.DialectMySQL,
	"sqlite":   goose.DialectSQLite3,
}

// Target is what the migrations need to know of a store: its table's
// dialect, schema ("" for none) and name. *idemsql.Store satisfies it.
type Target interface {
	Table() idemdriver.Table
}

// VersionTable is the goose version table [Up] keeps for a table, in the
// table's schema.
func VersionTable(table string) string { return table + "_goose_version" }

// Up applies every pending migration for the target's dialect and table, in
// their own transactions (never the caller's: MySQL commits DDL implicitly).
// Many processes may call it at once: they take turns (see the package doc,
// and its caveat for Galera); a caller waits for the others as long as ctx
// allows.
func Up(ctx context.Context, db *sql.DB, target Target) error {
	p, err := provider(ctx, db, target)
	if err != nil {
		return err
	}
	// goose's Up first asks HasPending, without the lock, and HasPending
	// creates a missing version table: on MySQL, whose DDL commits at once,
	// a concurrent caller then finds the table still without goose's
	// version 0 row and fails ("missing zero version migration"); on Galera
	// every caller did. DownTo a version above any applied one rolls
	// nothing back, and creates the table under the lock.
	if _, err := p.DownTo(ctx, math.MaxInt64); err != nil {
		return fmt.Errorf("idemsql migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("idemsql migrations: %w", err)
	}
	return nil
}

// Down rolls back every migration applied by [Up] for the target, dropping
// the table. It takes the same lock as Up.
func Down(ctx context.Context, db *sql.DB, target Target) error {
	p, err := provider(ctx, db, target)
	if err != nil {
		return err
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		return fmt.Errorf("idemsql migrations: %w", err)
	}
	return nil
}

func provider(ctx context.Context, db *sql.DB, target Target) (*goose.Provider, error) {
	if db == nil || target == nil {
		return nil, fmt.Errorf("%w: nil database or target", idemsql.ErrInvalidOption)
	}
	table := target.Table()
	if table.Dialect == "sqlite" {
		if err := sqliteOpen(ctx, db); err != nil {
			return nil, fmt.Errorf("idemsql migrations: %w", err)
		}
	}
	name := table.Dialect
	fsys, err := FS(name)
	if err != nil {
		return nil, err
	}
	q := quoteChar(name)
	// The names were validated as lowercase identifiers by Options.Table and
	// Options.Schema, so textual replacement cannot inject SQL; quoting lets
	// a reserved word (order, user) name the table or its schema.
	if fsys, err = rendered(fsys, table, q); err != nil {
		return nil, err
	}
	versions := idemdriver.Table{Schema: table.Schema, Name: VersionTable(table.Name)}
	store, err := database.NewStore(gooseDialects[name], versions.Quote(q))
	if err != nil {
		return nil, fmt.Errorf("idemsql migrations: %w", err)
	}
	locker, err := lockerFor(db, table)
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectCustom, db, fsys,
		goose.WithStore(versionStore{Store: store, dialect: name, table: versions}),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("idemsql migrations: %w", err)
	}
	return p, nil
}

func quoteChar(dialect string) string {
	if dialect == "mysql" {
		return "`"
	}
	return `"`
}

// versionStore is goose's version table for a quoted name. goose's own
// existence check would look the quoted name up in the catalog, quotes
// and all, never find it, and try to create it again.
type versionStore struct {
	database.Store
	dialect string
	table   idemdriver.Table
}

func (s versionStore) TableExists(ctx context.Context, db database.DBTxConn) (bool, error) {
	return tableExists(ctx, db, s.dialect, s.table)
}

// defaultNames matches the table's name in the migration files, and the
// names derived from it (indexes, constraints: a suffix after "_").
var defaultNames = regexp.MustCompile(`\b` + idemsql.DefaultTable + `(_[a-z0-9_]+)?\b`)

// rendered renders the files for table, every name quoted with q: the
// table as schema.name, the names derived from it with the table's name
// (an index or constraint lives in its table's schema).
func rendered(fsys fs.FS, table idemdriver.Table, q string) (fs.FS, error) {
	out := fstest.MapFS{}
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		out[path] = &fstest.MapFile{Data: defaultNames.ReplaceAllFunc(b, func(m []byte) []byte {
			if suffix := m[len(idemsql.DefaultTable):]; len(suffix) > 0 {
				return []byte(q + table.Name + string(suffix) + q)
			}
			return []byte(table.Quote(q))
		})}
		return nil
	})
	return out, err
}
