package idemdriver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"sync"
	"sync/atomic"
)

// SQL returns the [Driver] of a database/sql pool with dialect d: the one
// the dialect packages return for database/sql (pgx's stdlib,
// go-sql-driver/mysql, modernc.org/sqlite).
//
// Where the dialect asks for it ([StatementPreparer]: SQLite, MySQL), the
// store's statements run prepared once per connection, in Run and in Do
// alike: SQLite parses a statement's text on every call otherwise, and
// go-sql-driver/mysql without interpolateParams prepares and closes every
// statement. They are prepared in the background after the first call,
// since that call's transaction may hold the pool's only connection; until
// then, and for any statement the server refuses to prepare, the text runs
// instead (with its arguments inlined where the driver needs a prepared
// statement even for that: [Inliner]). Preparing is an optimisation, never
// a new way to fail or to wait. The statements stay prepared for as long as
// the driver lives: make one per pool an application keeps. With them, once,
// the driver asks the server whether a replay must write to be durable
// ([EarlyVisibility]).
//
// Bind a transaction of db itself: database/sql runs no statement prepared
// on one *sql.DB in a transaction of another. A transaction of another pool
// still works, with every statement sent as text, and is taken to be on
// db's server.
//
// Begin begins each transaction on a connection of its own (a *sql.Conn),
// so that it can drop the connection instead of returning it to the pool
// ([SessionDropper]).
func SQL(d Dialect, db *sql.DB) Driver[*sql.Tx] {
	sd := &sqlDriver{dia: d, db: db}
	if sp, ok := d.(StatementPreparer); ok {
		sd.sp = sp
	}
	if _, ok := d.(EarlyVisibility); ok {
		sd.pending.Store(true)
	}
	return sd
}

type sqlDriver struct {
	dia Dialect
	sp  StatementPreparer // nil: every statement runs as text
	db  *sql.DB

	mu      sync.Mutex // held by a background run, and to add to want
	want    []string   // what Prepare asked for
	pending atomic.Bool
	set     atomic.Pointer[preparedSet] // nil until the first run ended
}

// preparedSet is what a background run prepared on the pool, and what it
// learnt of the pool's server. It never changes once stored.
type preparedSet struct {
	stmts map[string]*sql.Stmt
	early bool // the server may show a commit before it is durable
}

func (d *sqlDriver) Dialect() Dialect { return d.dia }

// Prepare adds queries to the statements the driver keeps prepared.
func (d *sqlDriver) Prepare(queries ...string) {
	if d.sp == nil || !d.sp.PrepareStatements() {
		return
	}
	d.mu.Lock()
	d.want = append(d.want, queries...)
	d.mu.Unlock()
	d.pending.Store(true)
}

// ready returns what the background runs have prepared so far (nil before
// the first one ended), starting one when there is work for it. No caller
// waits for it: preparing needs a connection of the pool, which may be
// busy, and a call must end with its context. The run waits for a
// connection like any other caller of the pool, and gives up when db is
// closed.
func (d *sqlDriver) ready() *preparedSet {
	if d.pending.Load() && d.pending.CompareAndSwap(true, false) {
		go d.prepare(context.Background())
	}
	return d.set.Load()
}

func (d *sqlDriver) prepare(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := &preparedSet{stmts: map[string]*sql.Stmt{}}
	if old := d.set.Load(); old != nil {
		for q, s := range old.stmts {
			next.stmts[q] = s
		}
		next.early = old.early
	} else if ev, ok := d.dia.(EarlyVisibility); ok {
		early, err := ev.VisibleBeforeDurable(ctx, poolExecutor{d.db})
		next.early = early || err != nil
	}
	for _, q := range d.want {
		if q == "" || next.stmts[q] != nil {
			continue
		}
		if stmt, err := d.db.PrepareContext(ctx, q); err == nil {
			next.stmts[q] = stmt
		}
	}
	d.set.Store(next)
}

func (d *sqlDriver) Bind(tx *sql.Tx) Executor {
	if tx == nil {
		return nil
	}
	return sqlExecutor{tx: tx, d: d, ps: d.ready()}
}

// Begin begins the transaction on a connection of its own, which it closes
// when the transaction ends.
func (d *sqlDriver) Begin(ctx context.Context, level sql.IsolationLevel) (Tx[*sql.Tx], error) {
	ps := d.ready()
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	var opts *sql.TxOptions
	if level != sql.LevelDefault {
		opts = &sql.TxOptions{Isolation: level}
	}
	tx, err := conn.BeginTx(ctx, opts)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return &sqlTx{sqlExecutor: sqlExecutor{tx: tx, d: d, ps: ps}, conn: conn}, nil
}

func (d *sqlDriver) QueryRow(ctx context.Context, query string, args ...any) Row {
	return d.db.QueryRowContext(ctx, query, args...)
}

func (d *sqlDriver) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	return d.db.QueryContext(ctx, query, args...)
}

// errForeign is database/sql's error for a statement prepared on another
// *sql.DB than the transaction's; nothing was sent.
const errForeign = "sql: Tx.Stmt: statement from different database used"

// unprepared reports whether the prepared statement's err means that
// nothing ran and the text should run instead: the server refused to
// prepare it on this connection, or the transaction is another pool's.
func (d *sqlDriver) unprepared(err error) bool {
	return err != nil && (err.Error() == errForeign || d.sp != nil && d.sp.PrepareFailed(err))
}

// inlined is query with args written into it, when the server refused to
// prepare it (err) and the dialect can write them.
func (d *sqlDriver) inlined(err error, query string, args []any) (string, bool) {
	if err == nil || d.sp == nil || !d.sp.PrepareFailed(err) {
		return "", false
	}
	in, ok := d.dia.(Inliner)
	if !ok {
		return "", false
	}
	return in.Inline(query, args)
}

// sqlExecutor runs statements in a database/sql transaction: prepared
// where ps has them, else as text.
type sqlExecutor struct {
	tx *sql.Tx
	d  *sqlDriver
	ps *preparedSet // nil: none prepared yet
}

var (
	_ DurabilityReporter = sqlExecutor{}
	_ RowsQuerier        = sqlExecutor{}
)

func (e sqlExecutor) VisibleBeforeDurable() bool { return e.ps == nil || e.ps.early }

func (e sqlExecutor) stmt(query string) *sql.Stmt {
	if e.ps == nil {
		return nil
	}
	return e.ps.stmts[query]
}

func (e sqlExecutor) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	if stmt := e.stmt(query); stmt != nil {
		res, err := e.tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
		if !e.d.unprepared(err) {
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		}
	}
	res, err := e.tx.ExecContext(ctx, query, args...)
	if text, ok := e.d.inlined(err, query, args); ok {
		res, err = e.tx.ExecContext(ctx, text)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (e sqlExecutor) QueryRow(ctx context.Context, query string, args ...any) Row {
	r := fallbackRow{ctx: ctx, e: e, query: query, args: args}
	if stmt := e.stmt(query); stmt != nil {
		r.prepared = true
		r.row = e.tx.StmtContext(ctx, stmt).QueryRowContext(ctx, args...)
	} else {
		r.row = e.tx.QueryRowContext(ctx, query, args...)
	}
	return r
}

// Query runs a query of many rows as text.
func (e sqlExecutor) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := e.tx.QueryContext(ctx, query, args...)
	if text, ok := e.d.inlined(err, query, args); ok {
		rows, err = e.tx.QueryContext(ctx, text)
	}
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// fallbackRow runs the query again when nothing ran: as text, when it was
// the store's prepared statement, and with its arguments inlined, when the
// driver needs a prepared statement for the text too. The error shows at
// Scan.
type fallbackRow struct {
	ctx      context.Context
	e        sqlExecutor
	query    string
	args     []any
	prepared bool
	row      *sql.Row
}

func (r fallbackRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if r.prepared && r.e.d.unprepared(err) {
		err = r.e.tx.QueryRowContext(r.ctx, r.query, r.args...).Scan(dest...)
	}
	if text, ok := r.e.d.inlined(err, r.query, r.args); ok {
		return r.e.tx.QueryRowContext(r.ctx, text).Scan(dest...)
	}
	return err
}

// sqlTx is a transaction begun by the driver, on a connection of its own.
type sqlTx struct {
	sqlExecutor
	conn *sql.Conn // nil once released
	// drop: a setting that a statement changed for the session may still
	// be on the connection, so it must not serve another transaction.
	drop bool
}

var (
	_ Tx[*sql.Tx]    = (*sqlTx)(nil)
	_ SessionDropper = (*sqlTx)(nil)
)

func (t *sqlTx) Tx() *sql.Tx  { return t.tx }
func (t *sqlTx) DropSession() { t.drop = true }

func (t *sqlTx) Commit(context.Context) error {
	err := t.tx.Commit()
	t.release()
	return err
}

func (t *sqlTx) Rollback(context.Context) error {
	err := t.tx.Rollback()
	t.release()
	return err
}

// release returns the connection to the pool, or drops it: database/sql
// closes a connection for which a call reports driver.ErrBadConn.
func (t *sqlTx) release() {
	if t.conn == nil {
		return
	}
	if t.drop {
		_ = t.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = t.conn.Close()
	t.conn = nil
}

// poolExecutor runs statements on the pool, each in a transaction of its
// own: to ask the server about itself.
type poolExecutor struct{ db *sql.DB }

func (e poolExecutor) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := e.db.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (e poolExecutor) QueryRow(ctx context.Context, query string, args ...any) Row {
	return e.db.QueryRowContext(ctx, query, args...)
}
