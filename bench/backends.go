package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemmysql"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// Paths, in the order they run.
var allPaths = []string{"pgx", "pgsql", "mariadb", "sqlite"}

var pathTitle = map[string]string{
	"pgx":     "pg/pgx",
	"pgsql":   "pg/sql",
	"mariadb": "mariadb",
	"sqlite":  "sqlite",
}

// txn is one open transaction of any path. The adapter is the same for every
// variant, so its cost cancels out of every ratio.
type txn interface {
	Exec(ctx context.Context, q string, args ...any) (int64, error)
	// InsertID runs an INSERT and returns the new row's id, the way each
	// driver is used for it: RETURNING id on PostgreSQL, LastInsertId on
	// MySQL and SQLite.
	InsertID(ctx context.Context, q string, args ...any) (int64, error)
	QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

// idemDo calls idemsql.Do in t with the store of t's driver: the pgx store
// for a pgx transaction, the database/sql one otherwise, whose statements
// run prepared on SQLite and MySQL.
func idemDo[T any](ctx context.Context, t txn, k string, fn func(context.Context) (T, error), opts ...idemsql.Options) (idemsql.Result[T], error) {
	switch t := t.(type) {
	case *pgxTxn:
		return idemsql.Do(ctx, t.b.pgxStore, t.tx, k, fn, opts...)
	case *sqlTxn:
		return idemsql.Do(ctx, t.b.store, t.tx, k, fn, opts...)
	}
	panic(fmt.Sprintf("unknown transaction %T", t))
}

// queries is the SQL a hand-written guard and the business transaction use.
type queries struct {
	business     string // args: k, amount; RETURNING id on PostgreSQL
	handClaim    string // args: key, fingerprint; ON CONFLICT DO NOTHING, or a plain INSERT on MySQL
	handRead     string // args: key; returns status, result
	handComplete string // args: result, key
	purge        string // args: none; deletes one batch of expired rows of the idem table
	countExpired string
}

// backend is one database path with its three tables: the business table,
// the library's idempotency table and the hand-written guard's table (same
// schema, created by migrations.Up under another name).
type backend struct {
	path     string
	dialect  string // postgres, mysql, sqlite
	db       *sql.DB
	pool     *pgxpool.Pool // pgx path only
	dia      idemdriver.Dialect
	store    *idemsql.Store[*sql.Tx] // on db
	pgxStore *idemsql.Store[pgx.Tx]  // on pool (pgx path)
	hand     *idemsql.Store[*sql.Tx] // only its table is used, for migrations
	business string
	q        queries
	cleanup  func()
	version  string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func postgresDSN() string {
	return envOr("IDEMSQL_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/idemsql_test?sslmode=disable")
}

func mysqlDSN(interpolate bool) string {
	dsn := envOr("IDEMSQL_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/idemsql_test?parseTime=true")
	if interpolate && !strings.Contains(dsn, "interpolateParams") {
		if strings.Contains(dsn, "?") {
			dsn += "&interpolateParams=true"
		} else {
			dsn += "?interpolateParams=true"
		}
	}
	return dsn
}

type openOptions struct {
	maxConns    int
	interpolate bool
	suffix      string // table name suffix, e.g. "" or "_grow"
	batch       int    // purge batch size
}

// open connects a path and creates its tables, dropping leftovers of an
// earlier run first.
func open(ctx context.Context, path string, o openOptions) (*backend, error) {
	b := &backend{path: path, cleanup: func() {}}
	base := "bench_" + path + o.suffix
	idemOpt, handOpt := idemsql.Options{Table: base + "_idem"}, idemsql.Options{Table: base + "_hand"}
	b.business = base + "_business"
	var err error
	switch path {
	case "pgx", "pgsql":
		b.dialect, b.dia = "postgres", idempostgres.Dialect
		if path == "pgx" {
			cfg, err := pgxpool.ParseConfig(postgresDSN())
			if err != nil {
				return nil, err
			}
			cfg.MaxConns = int32(o.maxConns)
			cfg.ConnConfig.DialFunc = countingDial
			if b.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
				return nil, err
			}
			b.db = stdlib.OpenDBFromPool(b.pool)
		} else {
			cfg, err := pgx.ParseConfig(postgresDSN())
			if err != nil {
				return nil, err
			}
			cfg.DialFunc = countingDial
			b.db = stdlib.OpenDB(*cfg)
		}
	case "mariadb":
		b.dialect, b.dia = "mysql", idemmysql.Dialect
		mcfg, err := mysql.ParseDSN(mysqlDSN(o.interpolate))
		if err != nil {
			return nil, err
		}
		if mcfg.Net == "tcp" {
			mysql.RegisterDialContext("counted", func(ctx context.Context, addr string) (net.Conn, error) {
				return countingDial(ctx, "tcp", addr)
			})
			mcfg.Net = "counted"
		}
		conn, err := mysql.NewConnector(mcfg)
		if err != nil {
			return nil, err
		}
		b.db = sql.OpenDB(conn)
	case "sqlite":
		b.dialect, b.dia = "sqlite", idemsqlite.Dialect
		dir, err := os.MkdirTemp("", "idemsql-bench-")
		if err != nil {
			return nil, err
		}
		b.cleanup = func() { os.RemoveAll(dir) }
		if b.db, err = sql.Open("sqlite", idemsqlite.DSN(filepath.Join(dir, "bench.db"))); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown path %q (want one of %v)", path, allPaths)
	}
	b.db.SetMaxOpenConns(o.maxConns)
	b.db.SetMaxIdleConns(o.maxConns)
	if b.pool != nil {
		// An idle *sql.DB connection would hold a pool connection away
		// from the pgx transactions.
		b.db.SetMaxIdleConns(0)
	}
	if err := b.db.PingContext(ctx); err != nil {
		b.close()
		return nil, err
	}
	if b.store, err = idemsql.New(idemdriver.SQL(b.dia, b.db), idemOpt); err != nil {
		b.close()
		return nil, err
	}
	if b.hand, err = idemsql.New(idemdriver.SQL(b.dia, b.db), handOpt); err != nil {
		b.close()
		return nil, err
	}
	if b.pool != nil {
		if b.pgxStore, err = idemsql.New(idempostgres.New(b.pool), idemOpt); err != nil {
			b.close()
			return nil, err
		}
	}
	b.q = sqlFor(b.dialect, b.business, b.hand.Table().Name, b.store.Table().Name, o.batch)
	if err := b.createTables(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func sqlFor(dialect, business, hand, idem string, batch int) queries {
	switch dialect {
	case "postgres":
		return queries{
			business:     `INSERT INTO ` + business + ` (k, amount) VALUES ($1, $2) RETURNING id`,
			handClaim:    `INSERT INTO ` + hand + ` (idem_key, fingerprint, status, created_at, updated_at, expires_at) VALUES ($1, $2, 'in_progress', now(), now(), now() + interval '24 hours') ON CONFLICT (idem_key) DO NOTHING`,
			handRead:     `SELECT status, result FROM ` + hand + ` WHERE idem_key = $1`,
			handComplete: `UPDATE ` + hand + ` SET status = 'completed', result = $1, updated_at = now(), completed_at = now() WHERE idem_key = $2`,
			purge: fmt.Sprintf(`DELETE FROM %s WHERE ctid = ANY(ARRAY(SELECT ctid FROM %s WHERE expires_at < clock_timestamp() LIMIT %d))`,
				idem, idem, batch),
			countExpired: `SELECT count(*) FROM ` + idem + ` WHERE expires_at < clock_timestamp()`,
		}
	case "mysql":
		const now = `UTC_TIMESTAMP(6)`
		return queries{
			business:     "INSERT INTO `" + business + "` (k, amount) VALUES (?, ?)",
			handClaim:    "INSERT INTO `" + hand + "` (idem_key, fingerprint, status, created_at, updated_at, expires_at) VALUES (?, ?, 'in_progress', " + now + ", " + now + ", " + now + " + INTERVAL 24 HOUR)",
			handRead:     "SELECT status, result FROM `" + hand + "` WHERE idem_key = ? LOCK IN SHARE MODE",
			handComplete: "UPDATE `" + hand + "` SET status = 'completed', result = ?, updated_at = " + now + ", completed_at = " + now + " WHERE idem_key = ?",
			purge:        fmt.Sprintf("DELETE FROM `%s` WHERE expires_at < %s LIMIT %d", idem, now, batch),
			countExpired: "SELECT count(*) FROM `" + idem + "` WHERE expires_at < " + now,
		}
	default:
		const now = `CAST(unixepoch('subsec') * 1000 AS INTEGER)`
		return queries{
			business:     `INSERT INTO ` + business + ` (k, amount) VALUES (?, ?)`,
			handClaim:    `INSERT INTO ` + hand + ` (idem_key, fingerprint, status, created_at, updated_at, expires_at) VALUES (?, ?, 'in_progress', ` + now + `, ` + now + `, ` + now + ` + 86400000) ON CONFLICT (idem_key) DO NOTHING`,
			handRead:     `SELECT status, result FROM ` + hand + ` WHERE idem_key = ?`,
			handComplete: `UPDATE ` + hand + ` SET status = 'completed', result = ?, updated_at = ` + now + `, completed_at = ` + now + ` WHERE idem_key = ?`,
			purge: fmt.Sprintf(`DELETE FROM %s WHERE idem_key IN (SELECT idem_key FROM %s WHERE expires_at < %s LIMIT %d)`,
				idem, idem, now, batch),
			countExpired: `SELECT count(*) FROM ` + idem + ` WHERE expires_at < ` + now,
		}
	}
}

func (b *backend) createTables(ctx context.Context) error {
	if err := b.dropTables(ctx); err != nil {
		return err
	}
	var ddl string
	switch b.dialect {
	case "postgres":
		ddl = `CREATE TABLE ` + b.business + ` (id bigserial PRIMARY KEY, k text NOT NULL, amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`
	case "mysql":
		ddl = "CREATE TABLE `" + b.business + "` (id BIGINT AUTO_INCREMENT PRIMARY KEY, k VARBINARY(255) NOT NULL, amount BIGINT NOT NULL, created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
	default:
		ddl = `CREATE TABLE ` + b.business + ` (id INTEGER PRIMARY KEY, k TEXT NOT NULL, amount INTEGER NOT NULL, created_at INTEGER NOT NULL DEFAULT (unixepoch()))`
	}
	if _, err := b.db.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("create %s: %w", b.business, err)
	}
	for _, s := range []*idemsql.Store[*sql.Tx]{b.store, b.hand} {
		if err := migrations.Up(ctx, b.db, s); err != nil {
			return fmt.Errorf("migrate %s: %w", s.Table().Name, err)
		}
	}
	var q string
	switch b.dialect {
	case "postgres":
		q = `SELECT 'PostgreSQL ' || current_setting('server_version')`
	case "mysql":
		q = `SELECT CONCAT('MariaDB/MySQL ', VERSION())`
	default:
		q = `SELECT 'SQLite ' || sqlite_version()`
	}
	return b.db.QueryRowContext(ctx, q).Scan(&b.version)
}

func (b *backend) dropTables(ctx context.Context) error {
	for _, t := range []string{b.business, b.store.Table().Name, b.hand.Table().Name,
		migrations.VersionTable(b.store.Table().Name), migrations.VersionTable(b.hand.Table().Name)} {
		if _, err := b.db.ExecContext(ctx, `DROP TABLE IF EXISTS `+t); err != nil {
			return fmt.Errorf("drop %s: %w", t, err)
		}
	}
	return nil
}

func (b *backend) close() {
	if b.db != nil {
		b.db.Close()
	}
	if b.pool != nil {
		b.pool.Close()
	}
	b.cleanup()
}

// begin opens a transaction the way an application would.
func (b *backend) begin(ctx context.Context) (txn, error) {
	if b.pool != nil {
		tx, err := b.pool.Begin(ctx)
		if err != nil {
			return nil, err
		}
		return &pgxTxn{tx: tx, b: b}, nil
	}
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &sqlTxn{tx: tx, b: b, returning: b.dialect == "postgres"}, nil
}

// retryable says whether a failed transaction should run again from BEGIN.
func (b *backend) retryable(err error) bool {
	return errors.Is(err, idemsql.ErrRetryable) || b.dia.Classify(err) == idemdriver.KindRetryable
}

// duplicate says whether err is MySQL's duplicate-key error (the hand-written
// guard's claim on MySQL is a plain INSERT).
func duplicate(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1062
}

type pgxTxn struct {
	tx pgx.Tx
	b  *backend
}

func (t *pgxTxn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}
func (t *pgxTxn) InsertID(ctx context.Context, q string, args ...any) (int64, error) {
	var id int64
	err := t.tx.QueryRow(ctx, q, args...).Scan(&id)
	return id, err
}
func (t *pgxTxn) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return t.tx.QueryRow(ctx, q, args...)
}
func (t *pgxTxn) Commit(ctx context.Context) error   { return t.tx.Commit(ctx) }
func (t *pgxTxn) Rollback(ctx context.Context) error { return t.tx.Rollback(ctx) }

type sqlTxn struct {
	tx        *sql.Tx
	b         *backend
	returning bool // PostgreSQL: the id comes from RETURNING
}

func (t *sqlTxn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
func (t *sqlTxn) InsertID(ctx context.Context, q string, args ...any) (int64, error) {
	if t.returning {
		var id int64
		err := t.tx.QueryRowContext(ctx, q, args...).Scan(&id)
		return id, err
	}
	res, err := t.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}
func (t *sqlTxn) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return t.tx.QueryRowContext(ctx, q, args...)
}
func (t *sqlTxn) Commit(context.Context) error   { return t.tx.Commit() }
func (t *sqlTxn) Rollback(context.Context) error { return t.tx.Rollback() }
