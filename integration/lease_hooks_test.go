package integration

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsqlite"
)

// hooks let a test act inside the transactions the library begins on its
// own pool: before BEGIN, before COMMIT and after it. Every hook is
// optional. The transactions are the library's own (the store's driver over a
// database/sql pool whose driver is wrapped, or a pgx pool), so what the
// library does with its own pool is what runs.
type hooks struct {
	// begin runs before the n-th BEGIN of the pool (1, 2, ...); an error
	// fails the BEGIN without sending it.
	begin func(ctx context.Context, n int64) error
	// began runs after a BEGIN, on the transaction's connection.
	began func(ctx context.Context, c hookConn)
	// commit runs before a COMMIT, on the transaction's connection; an
	// error is returned in place of COMMIT, which is then not sent (the
	// transaction is rolled back).
	commit func(ctx context.Context, c hookConn) error
	// committed runs after a COMMIT and returns the error the library sees.
	committed func(err error) error

	// warm opens n connections in the pool, each through a transaction
	// (so that connIDs knows them), and leaves them idle. hookedOps sets it.
	warm func(ctx context.Context, n int) error

	mu        sync.Mutex
	n         int64
	beginErrs int64          // BEGINs that failed in the driver
	conns     map[int64]bool // server ids of the connections that began a transaction
}

func (h *hooks) beginFailed() {
	h.mu.Lock()
	h.beginErrs++
	h.mu.Unlock()
}

// failedBegins is how many BEGINs failed in the driver so far.
func (h *hooks) failedBegins() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.beginErrs
}

// hookConn is a connection of a hooked pool, for a hook's own queries.
type hookConn interface {
	// driverConn is the driver's own connection (nil for pgx).
	driverConn() driver.Conn
	// queryInt runs a query that returns one integer.
	queryInt(ctx context.Context, query string, args ...any) (int64, error)
	// serverID is the server's id of the connection (0 on SQLite).
	serverID() int64
}

func (h *hooks) beforeBegin(ctx context.Context) error {
	h.mu.Lock()
	h.n++
	n := h.n
	h.mu.Unlock()
	if h.begin != nil {
		return h.begin(ctx, n)
	}
	return nil
}

func (h *hooks) noteConn(id int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns == nil {
		h.conns = map[int64]bool{}
	}
	h.conns[id] = true
}

// connIDs are the server ids of every connection of the pool that began a
// transaction so far.
func (h *hooks) connIDs() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]int64, 0, len(h.conns))
	for id := range h.conns {
		ids = append(ids, id)
	}
	return ids
}

// hookedOps is the lease-mode API on a pool of the backend's own driver
// whose transactions run h. Besides the hooks, it notes the server id of
// every connection that begins a transaction (not on SQLite).
func (e *leaseEnv) hookedOps(t *testing.T, h *hooks) leaseOps {
	t.Helper()
	idQuery := map[string]string{"postgres": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}[e.dialect]
	if e.backend == "postgres-pgx" {
		cfg, err := pgxpool.ParseConfig(e.dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = hookedPoolSize
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		p := &hookPgxPool{p: pool, h: h, idQuery: idQuery}
		h.warm = func(ctx context.Context, n int) error {
			return warm(n, func() (func(), error) {
				tx, err := p.Begin(ctx, sql.LevelDefault)
				if err != nil {
					return nil, err
				}
				return func() { _ = tx.Rollback(ctx) }, nil
			})
		}
		return opsFor(storeOn(e.env, testDriver[pgx.Tx]{inner: idempostgres.New(pool), begin: p.Begin}))
	}
	db := e.openHooked(t, h, idQuery)
	h.warm = func(ctx context.Context, n int) error {
		return warm(n, func() (func(), error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return nil, err
			}
			return func() { _ = tx.Rollback() }, nil
		})
	}
	return opsFor(storeOn(e.env, sqlDriver(e.dialect, db)))
}

// hookedPoolSize is the most connections a hooked pool opens.
const hookedPoolSize = 16

// warm holds n transactions open at once, then ends them all, twice: their
// connections stay in the pool, idle, each used a moment ago (pgx's stdlib
// pings a connection before reuse only when it was idle for a second).
func warm(n int, begin func() (end func(), err error)) error {
	if err := warmOnce(n, begin); err != nil {
		return err
	}
	return warmOnce(n, begin)
}

func warmOnce(n int, begin func() (end func(), err error)) error {
	ends := make([]func(), 0, n)
	defer func() {
		for _, end := range ends {
			end()
		}
	}()
	for tries := 0; len(ends) < n; tries++ {
		end, err := begin()
		if err != nil {
			if tries < 4*n {
				continue // a connection that died earlier; the pool lets it go
			}
			return err
		}
		ends = append(ends, end)
	}
	return nil
}

// openHooked opens a database/sql pool of the backend's driver, wrapped so
// that its transactions run h.
func (e *leaseEnv) openHooked(t *testing.T, h *hooks, idQuery string) *sql.DB {
	t.Helper()
	name, dsn := e.sqlDriver()
	probe, err := sql.Open(name, dsn)
	if err != nil {
		t.Fatal(err)
	}
	drv := probe.Driver()
	probe.Close()
	var conn driver.Connector = dsnConnector{drv: drv, dsn: dsn}
	if dc, ok := drv.(driver.DriverContext); ok {
		if conn, err = dc.OpenConnector(dsn); err != nil {
			t.Fatal(err)
		}
	}
	db := sql.OpenDB(hookConnector{inner: conn, h: h, idQuery: idQuery})
	db.SetMaxOpenConns(hookedPoolSize)
	db.SetMaxIdleConns(hookedPoolSize)
	t.Cleanup(func() { db.Close() })
	return db
}

// sqlDriver is the database/sql driver name and DSN of the backend.
func (e *leaseEnv) sqlDriver() (name, dsn string) {
	switch e.dialect {
	case "mysql":
		return "mysql", e.dsn
	case "sqlite":
		return "sqlite", idemsqlite.DSN(e.dsn)
	}
	return "pgx", e.dsn
}

// outageOps is the lease-mode API on a pool whose BEGINs fail with
// errUnreachable while down is set.
func (e *leaseEnv) outageOps(t *testing.T, down *atomic.Bool) leaseOps {
	return e.hookedOps(t, &hooks{begin: func(context.Context, int64) error {
		if down.Load() {
			return errUnreachable
		}
		return nil
	}})
}

type dsnConnector struct {
	drv driver.Driver
	dsn string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.drv }

type hookConnector struct {
	inner   driver.Connector
	h       *hooks
	idQuery string
}

func (c hookConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &hookedConn{Conn: conn, h: c.h, idQuery: c.idQuery}, nil
}

func (c hookConnector) Driver() driver.Driver { return c.inner.Driver() }

// hookedConn forwards every optional interface database/sql looks for to
// the driver's connection, and runs the hooks at BEGIN and COMMIT.
type hookedConn struct {
	driver.Conn
	h       *hooks
	idQuery string
	id      int64
}

var errNoQueryer = errors.New("the driver's connection cannot run queries")

func (c *hookedConn) serverID() int64         { return c.id }
func (c *hookedConn) driverConn() driver.Conn { return c.Conn }

func (c *hookedConn) queryInt(ctx context.Context, query string, args ...any) (int64, error) {
	q, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return 0, errNoQueryer
	}
	named := make([]driver.NamedValue, len(args))
	for i, a := range args {
		named[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	rows, err := q.QueryContext(ctx, query, named)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	dest := make([]driver.Value, len(rows.Columns()))
	if err := rows.Next(dest); err != nil {
		return 0, err
	}
	var n sql.NullInt64
	if err := n.Scan(dest[0]); err != nil {
		if s, ok := dest[0].([]byte); ok {
			_, err = fmt.Sscan(string(s), &n.Int64)
		}
		if err != nil {
			return 0, err
		}
	}
	return n.Int64, nil
}

func (c *hookedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := c.h.beforeBegin(ctx); err != nil {
		return nil, err
	}
	var tx driver.Tx
	var err error
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		tx, err = b.BeginTx(ctx, opts)
	} else {
		//lint:ignore SA1019 a driver without BeginTx has only Begin
		tx, err = c.Conn.Begin()
	}
	if err != nil {
		c.h.beginFailed()
		return nil, err
	}
	if c.idQuery != "" {
		if c.id == 0 {
			if c.id, err = c.queryInt(ctx, c.idQuery); err != nil {
				_ = tx.Rollback()
				return nil, err
			}
		}
		c.h.noteConn(c.id)
	}
	if c.h.began != nil {
		c.h.began(ctx, c)
	}
	return hookedTx{Tx: tx, c: c}, nil
}

func (c *hookedConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return c.Conn.Prepare(query)
}

func (c *hookedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if x, ok := c.Conn.(driver.ExecerContext); ok {
		return x.ExecContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

func (c *hookedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if q, ok := c.Conn.(driver.QueryerContext); ok {
		return q.QueryContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

func (c *hookedConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *hookedConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *hookedConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *hookedConn) CheckNamedValue(nv *driver.NamedValue) error {
	if v, ok := c.Conn.(driver.NamedValueChecker); ok {
		return v.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

type hookedTx struct {
	driver.Tx
	c *hookedConn
}

func (t hookedTx) Commit() error {
	h := t.c.h
	if h.commit != nil {
		if err := h.commit(context.Background(), t.c); err != nil {
			_ = t.Tx.Rollback()
			return err
		}
	}
	err := t.Tx.Commit()
	if h.committed != nil {
		err = h.committed(err)
	}
	return err
}

// hookPgxPool is a pool of pgx transactions, written here as any Pool of
// another driver would be, that runs hooks.
type hookPgxPool struct {
	p       *pgxpool.Pool
	h       *hooks
	idQuery string
}

// Begin begins at the level lease mode's housekeeping asks for, as the
// pgx driver's own Begin does.
func (p *hookPgxPool) Begin(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[pgx.Tx], error) {
	opts := pgx.TxOptions{}
	if level == sql.LevelReadCommitted {
		opts.IsoLevel = pgx.ReadCommitted
	}
	return p.begin(ctx, opts)
}

func (p *hookPgxPool) begin(ctx context.Context, opts pgx.TxOptions) (idemdriver.Tx[pgx.Tx], error) {
	if err := p.h.beforeBegin(ctx); err != nil {
		return nil, err
	}
	tx, err := p.p.BeginTx(ctx, opts)
	if err != nil {
		p.h.beginFailed()
		return nil, err
	}
	t := &hookPgxTx{tx: tx, h: p.h}
	if t.id, err = t.queryInt(ctx, p.idQuery); err != nil {
		_ = tx.Rollback(ctx)
		return nil, err
	}
	p.h.noteConn(t.id)
	if p.h.began != nil {
		p.h.began(ctx, t)
	}
	return t, nil
}

type hookPgxTx struct {
	tx pgx.Tx
	h  *hooks
	id int64
}

func (t *hookPgxTx) serverID() int64         { return t.id }
func (t *hookPgxTx) driverConn() driver.Conn { return nil }

func (t *hookPgxTx) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}

func (t *hookPgxTx) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return t.tx.QueryRow(ctx, q, args...)
}

func (t *hookPgxTx) queryInt(ctx context.Context, q string, args ...any) (n int64, err error) {
	err = t.tx.QueryRow(ctx, q, args...).Scan(&n)
	return n, err
}

func (t *hookPgxTx) Tx() pgx.Tx                         { return t.tx }
func (t *hookPgxTx) Rollback(ctx context.Context) error { return t.tx.Rollback(ctx) }

func (t *hookPgxTx) Commit(ctx context.Context) error {
	if t.h.commit != nil {
		if err := t.h.commit(ctx, t); err != nil {
			_ = t.tx.Rollback(ctx)
			return err
		}
	}
	err := t.tx.Commit(ctx)
	if t.h.committed != nil {
		err = t.h.committed(err)
	}
	return err
}

// killAll ends the server sessions of the ids and waits until the server
// has let them go, so that the next statement on any of them fails.
func (e *leaseEnv) killAll(t *testing.T, ids []int64) {
	t.Helper()
	for _, id := range ids {
		_ = e.kill(id) // it may be gone already
	}
	// A killed MariaDB thread may linger, marked Killed, until it notices.
	q := "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND COMMAND <> 'Killed'"
	if e.dialect == "postgres" {
		q = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1"
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ids {
		for e.queryInt(q, id) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("session %d still there after it was killed", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
