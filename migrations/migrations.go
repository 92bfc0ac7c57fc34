// Package migrations ships idemsql's schema as goose SQL migrations, one
// folder per dialect, embedded in the binary, and applies them.
//
// From Go, with the library's own goose version table (so they never mix
// with the application's goose_db_version):
//
//	store, err := postgres.New()
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
// reserved word ([idemsql.WithTable]("order")) or living in a schema of its
// own ([idemsql.WithSchema]) is created as the statements name it.

package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"testing/fstest" // a ready-made in-memory fs.FS; nothing of package testing is linked

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

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

// Target is what the migrations need to know of a store: its dialect, its
// table and the table's schema ("" for none). *idemsql.Store and
// *postgres.Store satisfy it.
type Target interface {
	Dialect() idemsql.Dialect
	Table() string
	Schema() string
}

// VersionTable is the goose version table [Up] keeps for a table, in the
// table's schema.
func VersionTable(table string) string { return table + "_goose_version" }

// Up applies every pending migration for the target's dialect and table, in
// their own transactions (never the caller's: MySQL commits DDL implicitly).
// On PostgreSQL a session advisory lock lets many processes run Up at start-up
// at once.
func Up(ctx context.Context, db *sql.DB, target Target) error {
	p, err := provider(db, target)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("idemsql migrations: %w", err)
	}
	return nil
}

// Down rolls back every migration applied by [Up] for the target, dropping
// the table.
func Down(ctx context.Context, db *sql.DB, target Target) error {
	p, err := provider(db, target)
	if err != nil {
		return err
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		return fmt.Errorf("idemsql migrations: %w", err)
	}
	return nil
}

func provider(db *sql.DB, target Target) (*goose.Provider, error) {
	if db == nil || target == nil {
		return nil, fmt.Errorf("%w: nil database or target", idemsql.ErrInvalidOption)
	}
	name := target.Dialect().Name()
	fsys, err := FS(name)
	if err != nil {
		return nil, err
	}
	q := quoteChar(name)
	table := idemsql.Table{Schema: target.Schema(), Name: target.Table()}
	// The names were validated as lowercase identifiers by WithTable and
	// WithSchema, so textual replacement cannot inject SQL; quoting lets
	// a reserved word (order, user) name the table or its schema.
	if fsys, err = rendered(fsys, table, q); err != nil {
		return nil, err
	}
	versions := idemsql.Table{Schema: table.Schema, Name: VersionTable(table.Name)}
	store, err := database.NewStore(gooseDialects[name], versions.Quote(q))
	if err != nil {
		return nil, fmt.Errorf("idemsql migrations: %w", err)
	}
	opts := []goose.ProviderOption{
		goose.WithStore(versionStore{Store: store, dialect: name, table: versions}),
		goose.WithDisableGlobalRegistry(true),
	}
	if name == "postgres" {
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(goose.DialectCustom, db, fsys, opts...)
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
	table   idemsql.Table
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
func rendered(fsys fs.FS, table idemsql.Table, q string) (fs.FS, error) {
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
