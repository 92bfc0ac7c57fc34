package integration

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

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

// A backend is one database reached through one driver. Every test in the
// conformance suite runs against each of them.
type backend struct {
	name    string
	dialect string // "postgres", "mysql", "sqlite"
	// setup gives the test a migrated idempotency table and a business
	// table of its own, both dropped when the test ends.
	setup func(t *testing.T, opts ...idemsql.Options) *env
}

var backends = []backend{
	{name: "postgres-pgx", dialect: "postgres", setup: setupPgx},
	{name: "postgres-stdlib", dialect: "postgres", setup: setupPgStdlib},
	{name: "mysql", dialect: "mysql", setup: setupMySQL}, // MySQL 8 or MariaDB 10.6+, whichever the DSN names,
	{name: "sqlite", dialect: "sqlite", setup: setupSQLite},
	{name: "galera", dialect: "mysql", setup: setupGalera}, // node 1 of a MariaDB Galera cluster
}

// env is one test's view of a backend.
type env struct {
	t       *testing.T
	dialect string // "postgres", "mysql", "sqlite"
	backend string // the backend's name, in the conformance suite
	// store is the database/sql store on db (pgx's stdlib on PostgreSQL),
	// with the test's options; pgxStore, on the pgx backend, the pgx store
	// of the same table and options, on the pool that db wraps.
	store    *idemsql.Store[*sql.Tx]
	sqlDrv   idemdriver.Driver[*sql.Tx] // store's
	pgxStore *idemsql.Store[pgx.Tx]
	pool     *pgxpool.Pool // the pgx backend's
	opts     []idemsql.Options
	db       *sql.DB // for setup and assertions, outside any tested transaction
	// deferredDB, on SQLite, opens DEFERRED transactions (db's are
	// IMMEDIATE); elsewhere it is db.
	deferredDB *sql.DB
	table      string
	biz        string
	begin      func(ctx context.Context, iso sql.IsolationLevel) (testTx, error)
	// beginOther begins a transaction for a second contender. It is begin,
	// except on SQLite, where it is a DEFERRED transaction: an IMMEDIATE one
	// would wait in BEGIN for the first contender and never reach the claim.
	beginOther func(ctx context.Context) (testTx, error)
	// run calls idemsql.Run with the backend's own pool and transaction type.
	run func(ctx context.Context, iso sql.IsolationLevel, key string, fn bizFunc, opts ...idemsql.Options) (idemsql.Result[invoice], error)
	// runTx calls idemsql.Run with the backend's own pool, handing fn the
	// transaction as a testTx.
	runTx func(ctx context.Context, key string, fn func(ctx context.Context, tx testTx) (invoice, error), opts ...idemsql.Options) (idemsql.Result[invoice], error)
	// runVoid is runTx for an fn with no result (struct{}), which takes the
	// path that stores the result with the claim.
	runVoid func(ctx context.Context, key string, fn func(ctx context.Context, tx testTx) error, opts ...idemsql.Options) (idemsql.Result[struct{}], error)
	// wrapRun wraps the business insert with idemsql.WrapRun on the
	// backend's own pool.
	wrapRun func(keyer func(invoiceReq) (string, error), runs *atomic.Int64, opts ...idemsql.Options) func(context.Context, invoiceReq, ...idemsql.Options) (idemsql.Result[invoice], error)
}

// bizFunc is a guarded function written once for every backend: exec runs a
// statement in the transaction Run began.
type bizFunc func(ctx context.Context, exec func(ctx context.Context, query string, args ...any) error) (invoice, error)

// testTx is a transaction of the driver under test.
type testTx interface {
	Exec(ctx context.Context, query string, args ...any) error
	QueryInt(ctx context.Context, query string, args ...any) (int64, error)
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

func uniqueSuffix(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// doIn calls idemsql.Do in tx with the store of tx's driver.
func doIn[T any](ctx context.Context, tx testTx, key string, fn func(context.Context) (T, error), opts ...idemsql.Options) (idemsql.Result[T], error) {
	switch t := tx.(type) {
	case pgxTestTx:
		return idemsql.Do(ctx, t.store, t.tx, key, fn, opts...)
	case sqlTestTx:
		return idemsql.Do(ctx, t.store, t.tx, key, fn, opts...)
	}
	panic(fmt.Sprintf("unknown test transaction %T", tx))
}

// sqlDriver is the database/sql driver of the dialect on db.
func sqlDriver(dialect string, db *sql.DB) idemdriver.Driver[*sql.Tx] {
	switch dialect {
	case "postgres":
		return idempostgres.NewSQL(db)
	case "mysql":
		return idemmysql.New(db)
	}
	return idemsqlite.New(db)
}

// newStore makes a database/sql store of the dialect on db.
func newStore(dialect string, db *sql.DB, opts ...idemsql.Options) (*idemsql.Store[*sql.Tx], error) {
	return idemsql.New(sqlDriver(dialect, db), opts...)
}

// dialectOf is the dialect named so.
func dialectOf(name string) idemdriver.Dialect { return sqlDriver(name, nil).Dialect() }

// setStores makes the env's stores on its table with opts.
func (e *env) setStores(opts ...idemsql.Options) {
	e.t.Helper()
	e.sqlDrv = sqlDriver(e.dialect, e.db)
	store, err := idemsql.New(e.sqlDrv, opts...)
	if err != nil {
		e.t.Fatalf("new store: %v", err)
	}
	e.store, e.opts = store, opts
	if e.pool != nil {
		if e.pgxStore, err = idemsql.New(idempostgres.New(e.pool), opts...); err != nil {
			e.t.Fatalf("new pgx store: %v", err)
		}
	}
}

// prepare migrates a table of the test's own and creates the business table.
func prepare(t *testing.T, e *env, bizDDL string, opts ...idemsql.Options) {
	t.Helper()
	suffix := uniqueSuffix(t)
	e.table = "idem_" + suffix
	e.biz = "biz_" + suffix
	e.setStores(withOptions(idemsql.Options{Table: e.table}, opts...))
	store := e.store
	if schema := store.Table().Schema; schema != "" {
		// The tests' own SQL names the table as the migrations do.
		e.table = idemdriver.Table{Schema: schema, Name: e.table}.String()
	}
	ctx := context.Background()
	if err := migrations.Up(ctx, e.db, store); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if _, err := e.db.ExecContext(ctx, fmt.Sprintf(bizDDL, e.biz)); err != nil {
		t.Fatalf("create business table: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if err := migrations.Down(ctx, e.db, store); err != nil {
			t.Errorf("migrate down: %v", err)
		}
		if _, err := e.db.ExecContext(ctx, "DROP TABLE "+e.biz); err != nil {
			t.Errorf("drop business table: %v", err)
		}
		if _, err := e.db.ExecContext(ctx, "DROP TABLE "+migrations.VersionTable(e.table)); err != nil {
			t.Errorf("drop version table: %v", err)
		}
	})
}

const (
	pgBizDDL     = `CREATE TABLE %s (id bigserial PRIMARY KEY, idem_key text NOT NULL, amount bigint NOT NULL)`
	mysqlBizDDL  = `CREATE TABLE %s (id BIGINT AUTO_INCREMENT PRIMARY KEY, idem_key VARBINARY(255) NOT NULL, amount BIGINT NOT NULL) ENGINE=InnoDB`
	sqliteBizDDL = `CREATE TABLE %s (id INTEGER PRIMARY KEY AUTOINCREMENT, idem_key TEXT NOT NULL, amount INTEGER NOT NULL)`
)

func setupPgx(t *testing.T, opts ...idemsql.Options) *env {
	dsn := postgresDSN(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	cfg.MaxConns = 48
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { db.Close(); pool.Close() })
	e := &env{t: t, dialect: "postgres", db: db, pool: pool}
	prepare(t, e, pgBizDDL, opts...)
	// The stores are read at each call, so that a test may replace them
	// (withStoreOptions).
	e.begin = func(ctx context.Context, iso sql.IsolationLevel) (testTx, error) {
		txo := pgx.TxOptions{}
		switch iso {
		case sql.LevelRepeatableRead:
			txo.IsoLevel = pgx.RepeatableRead
		case sql.LevelSerializable:
			txo.IsoLevel = pgx.Serializable
		}
		tx, err := pool.BeginTx(ctx, txo)
		if err != nil {
			return nil, err
		}
		return pgxTestTx{tx: tx, store: e.pgxStore}, nil
	}
	e.beginOther = func(ctx context.Context) (testTx, error) { return e.begin(ctx, sql.LevelDefault) }
	e.run = func(ctx context.Context, iso sql.IsolationLevel, key string, fn bizFunc, opts ...idemsql.Options) (idemsql.Result[invoice], error) {
		if iso == sql.LevelSerializable {
			opts = []idemsql.Options{withOptions(idemsql.Options{Isolation: iso}, opts...)}
		}
		return idemsql.Run(ctx, e.pgxStore, key, func(ctx context.Context, tx pgx.Tx) (invoice, error) {
			return fn(ctx, func(ctx context.Context, q string, args ...any) error {
				_, err := tx.Exec(ctx, q, args...)
				return err
			})
		}, opts...)
	}
	e.runTx = func(ctx context.Context, key string, fn func(context.Context, testTx) (invoice, error), opts ...idemsql.Options) (idemsql.Result[invoice], error) {
		return idemsql.Run(ctx, e.pgxStore, key, func(ctx context.Context, tx pgx.Tx) (invoice, error) {
			return fn(ctx, pgxTestTx{tx: tx, store: e.pgxStore})
		}, opts...)
	}
	e.runVoid = func(ctx context.Context, key string, fn func(context.Context, testTx) error, opts ...idemsql.Options) (idemsql.Result[struct{}], error) {
		return idemsql.Run(ctx, e.pgxStore, key, func(ctx context.Context, tx pgx.Tx) (struct{}, error) {
			return struct{}{}, fn(ctx, pgxTestTx{tx: tx, store: e.pgxStore})
		}, opts...)
	}
	e.wrapRun = func(keyer func(invoiceReq) (string, error), runs *atomic.Int64, opts ...idemsql.Options) func(context.Context, invoiceReq, ...idemsql.Options) (idemsql.Result[invoice], error) {
		insert := e.wrapInsert(runs)
		return idemsql.WrapRun(e.pgxStore, keyer, func(ctx context.Context, tx pgx.Tx, r invoiceReq) (invoice, error) {
			key, _ := keyer(r)
			return insert(ctx, func(ctx context.Context, q string, args ...any) error {
				_, err := tx.Exec(ctx, q, args...)
				return err
			}, key, r)
		}, opts...)
	}
	return e
}

type pgxTestTx struct {
	tx    pgx.Tx
	store *idemsql.Store[pgx.Tx]
}

func (p pgxTestTx) Exec(ctx context.Context, q string, args ...any) error {
	_, err := p.tx.Exec(ctx, q, args...)
	return err
}
func (p pgxTestTx) QueryInt(ctx context.Context, q string, args ...any) (n int64, err error) {
	err = p.tx.QueryRow(ctx, q, args...).Scan(&n)
	return n, err
}
func (p pgxTestTx) Commit(ctx context.Context) error   { return p.tx.Commit(ctx) }
func (p pgxTestTx) Rollback(ctx context.Context) error { return p.tx.Rollback(ctx) }

type sqlTestTx struct {
	tx    *sql.Tx
	store *idemsql.Store[*sql.Tx]
}

func (s sqlTestTx) Exec(ctx context.Context, q string, args ...any) error {
	_, err := s.tx.ExecContext(ctx, q, args...)
	return err
}
func (s sqlTestTx) QueryInt(ctx context.Context, q string, args ...any) (n int64, err error) {
	err = s.tx.QueryRowContext(ctx, q, args...).Scan(&n)
	return n, err
}
func (s sqlTestTx) Commit(context.Context) error   { return s.tx.Commit() }
func (s sqlTestTx) Rollback(context.Context) error { return s.tx.Rollback() }

// useSQL wires a database/sql backend.
func useSQL(e *env) {
	if e.deferredDB == nil {
		e.deferredDB = e.db
	}
	e.begin = func(ctx context.Context, iso sql.IsolationLevel) (testTx, error) {
		tx, err := e.db.BeginTx(ctx, &sql.TxOptions{Isolation: iso})
		if err != nil {
			return nil, err
		}
		return sqlTestTx{tx: tx, store: e.store}, nil
	}
	e.beginOther = func(ctx context.Context) (testTx, error) { return e.begin(ctx, sql.LevelDefault) }
	e.run = func(ctx context.Context, iso sql.IsolationLevel, key string, fn bizFunc, opts ...idemsql.Options) (idemsql.Result[invoice], error) {
		if iso != sql.LevelDefault {
			opts = []idemsql.Options{withOptions(idemsql.Options{Isolation: iso}, opts...)}
		}
		return idemsql.Run(ctx, e.store, key, func(ctx context.Context, tx *sql.Tx) (invoice, error) {
			return fn(ctx, func(ctx context.Context, q string, args ...any) error {
				_, err := tx.ExecContext(ctx, q, args...)
				return err
			})
		}, opts...)
	}
	e.runTx = func(ctx context.Context, key string, fn func(context.Context, testTx) (invoice, error), opts ...idemsql.Options) (idemsql.Result[invoice], error) {
		return idemsql.Run(ctx, e.store, key, func(ctx context.Context, tx *sql.Tx) (invoice, error) {
			return fn(ctx, sqlTestTx{tx: tx, store: e.store})
		}, opts...)
	}
	e.runVoid = func(ctx context.Context, key string, fn func(context.Context, testTx) error, opts ...idemsql.Options) (idemsql.Result[struct{}], error) {
		return idemsql.Run(ctx, e.store, key, func(ctx context.Context, tx *sql.Tx) (struct{}, error) {
			return struct{}{}, fn(ctx, sqlTestTx{tx: tx, store: e.store})
		}, opts...)
	}
	e.wrapRun = func(keyer func(invoiceReq) (string, error), runs *atomic.Int64, opts ...idemsql.Options) func(context.Context, invoiceReq, ...idemsql.Options) (idemsql.Result[invoice], error) {
		insert := e.wrapInsert(runs)
		return idemsql.WrapRun(e.store, keyer, func(ctx context.Context, tx *sql.Tx, r invoiceReq) (invoice, error) {
			key, _ := keyer(r)
			return insert(ctx, func(ctx context.Context, q string, args ...any) error {
				_, err := tx.ExecContext(ctx, q, args...)
				return err
			}, key, r)
		}, opts...)
	}
}

func setupPgStdlib(t *testing.T, opts ...idemsql.Options) *env {
	db, err := sql.Open("pgx", postgresDSN(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	db.SetMaxOpenConns(48)
	t.Cleanup(func() { db.Close() })
	e := &env{t: t, dialect: "postgres", db: db}
	prepare(t, e, pgBizDDL, opts...)
	useSQL(e)
	return e
}

func setupMySQL(t *testing.T, opts ...idemsql.Options) *env {
	return setupMySQLAt(t, mysqlDSN(t), opts...)
}

// setupMySQLAt is setupMySQL on the server that dsn names.
func setupMySQLAt(t *testing.T, dsn string, opts ...idemsql.Options) *env {
	e := &env{t: t, dialect: "mysql", db: openMySQL(t, dsn)}
	prepare(t, e, mysqlBizDDL, opts...)
	useSQL(e)
	return e
}

// openMySQL opens a pool the test closes when it ends.
func openMySQL(t *testing.T, dsn string) *sql.DB {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	db.SetMaxOpenConns(48)
	t.Cleanup(func() { db.Close() })
	return db
}

func setupSQLite(t *testing.T, opts ...idemsql.Options) *env {
	path := filepath.Join(t.TempDir(), "idem.db")
	db, err := sql.Open("sqlite", idemsqlite.DSN(path))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	deferred, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { deferred.Close(); db.Close() })
	e := &env{t: t, dialect: "sqlite", db: db, deferredDB: deferred}
	prepare(t, e, sqliteBizDDL, opts...)
	useSQL(e)
	e.beginOther = func(ctx context.Context) (testTx, error) {
		tx, err := deferred.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		// A transaction of another *sql.DB than the store's: its statements
		// run as text.
		return sqlTestTx{tx: tx, store: e.store}, nil
	}
	return e
}

// withStoreOptions replaces the test's store by one on the same table with
// more options; the env's transactions and Run use it from then on.
func (e *env) withStoreOptions(opts ...idemsql.Options) *env {
	e.t.Helper()
	table := e.store.Table()
	e.setStores(withOptions(idemsql.Options{Table: table.Name, Schema: table.Schema}, opts...))
	return e
}

// q rewrites ? placeholders to $n on PostgreSQL, so that test SQL is written
// once.
func (e *env) q(query string) string {
	if e.dialect != "postgres" {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// queryInt runs a one-integer query outside any tested transaction.
func (e *env) queryInt(query string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.db.QueryRowContext(context.Background(), e.q(query), args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (e *env) queryString(query string, args ...any) string {
	e.t.Helper()
	var s string
	if err := e.db.QueryRowContext(context.Background(), e.q(query), args...).Scan(&s); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return s
}

// bizRows counts the business effects recorded for key.
func (e *env) bizRows(key string) int64 {
	e.t.Helper()
	return e.queryInt("SELECT COUNT(*) FROM "+e.biz+" WHERE idem_key = ?", key)
}

// idemRows counts idempotency rows for key.
func (e *env) idemRows(key string) int64 {
	e.t.Helper()
	return e.queryInt("SELECT COUNT(*) FROM "+e.table+" WHERE idem_key = ?", key)
}

// secondsAgo is the database's own clock minus n seconds, as a SQL
// expression of the type of the table's time columns.
func (e *env) secondsAgo(n int) string {
	switch e.dialect {
	case "postgres":
		return fmt.Sprintf("clock_timestamp() - interval '%d seconds'", n)
	case "mysql":
		return fmt.Sprintf("UTC_TIMESTAMP(6) - INTERVAL %d SECOND", n)
	}
	return fmt.Sprintf("CAST(unixepoch('subsec') * 1000 AS INTEGER) - %d", n*1000)
}

// expire moves a key's expiry into the past with the database's clock.
func (e *env) expire(key string) {
	e.t.Helper()
	stmt := e.q("UPDATE " + e.table + " SET expires_at = " + e.secondsAgo(1) + " WHERE idem_key = ?")
	res, err := e.db.ExecContext(context.Background(), stmt, key)
	if err != nil {
		e.t.Fatalf("expire: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		e.t.Fatalf("expire %q: %d rows", key, n)
	}
}

// ttlSeconds reads expires_at - created_at of a key, in whole seconds.
func (e *env) ttlSeconds(key string) int64 {
	e.t.Helper()
	var expr string
	switch e.dialect {
	case "postgres":
		expr = "CAST(EXTRACT(EPOCH FROM expires_at - created_at) AS bigint)"
	case "mysql":
		expr = "TIMESTAMPDIFF(SECOND, created_at, expires_at)"
	case "sqlite":
		expr = "(expires_at - created_at) / 1000"
	}
	return e.queryInt("SELECT "+expr+" FROM "+e.table+" WHERE idem_key = ?", key)
}

// resultField reads one field of the stored result with the database's own
// JSON functions, as an audit query would.
func (e *env) resultField(key, field string) string {
	e.t.Helper()
	var expr string
	switch e.dialect {
	case "postgres":
		expr = "result->>'" + field + "'"
	case "mysql":
		expr = "JSON_UNQUOTE(JSON_EXTRACT(result, '$." + field + "'))"
	case "sqlite":
		expr = "CAST(json_extract(result, '$." + field + "') AS TEXT)"
	}
	return e.queryString("SELECT "+expr+" FROM "+e.table+" WHERE idem_key = ?", key)
}

// testDriver is a driver a test changes: dia, begin and bind, where set,
// replace inner's. It has none of inner's optional interfaces (prepared
// statements, reads outside a transaction).
type testDriver[X any] struct {
	inner idemdriver.Driver[X]
	dia   idemdriver.Dialect // nil: inner's
	begin func(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[X], error)
	bind  func(tx X) idemdriver.Executor
}

func (d testDriver[X]) Dialect() idemdriver.Dialect {
	if d.dia != nil {
		return d.dia
	}
	return d.inner.Dialect()
}

func (d testDriver[X]) Begin(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[X], error) {
	if d.begin != nil {
		return d.begin(ctx, level)
	}
	return d.inner.Begin(ctx, level)
}

func (d testDriver[X]) Bind(tx X) idemdriver.Executor {
	if d.bind != nil {
		return d.bind(tx)
	}
	return d.inner.Bind(tx)
}

// storeOn makes a store on d with the env's table and options.
func storeOn[X any](e *env, d idemdriver.Driver[X]) *idemsql.Store[X] {
	e.t.Helper()
	s, err := idemsql.New(d, e.opts...)
	if err != nil {
		e.t.Fatalf("new store: %v", err)
	}
	return s
}

// execDriver binds the executor it is given as the transaction, for tests
// that wrap a transaction's executor. It begins none.
type execDriver struct{ dia idemdriver.Dialect }

func (d execDriver) Dialect() idemdriver.Dialect { return d.dia }
func (execDriver) Begin(context.Context, sql.IsolationLevel) (idemdriver.Tx[idemdriver.Executor], error) {
	return nil, errors.New("execDriver has no pool")
}
func (execDriver) Bind(ex idemdriver.Executor) idemdriver.Executor { return ex }

// exStore is a store with the env's options whose Do runs its statements
// through the executor it is given.
func (e *env) exStore() *idemsql.Store[idemdriver.Executor] {
	return storeOn(e, execDriver{dialectOf(e.dialect)})
}

// withOptions is base with the fields that more set, the last one's winning:
// a call takes one Options.
func withOptions(base idemsql.Options, more ...idemsql.Options) idemsql.Options {
	out := reflect.ValueOf(&base).Elem()
	for _, o := range more {
		v := reflect.ValueOf(o)
		for i := range v.NumField() {
			if !v.Field(i).IsZero() {
				out.Field(i).Set(v.Field(i))
			}
		}
	}
	return base
}
