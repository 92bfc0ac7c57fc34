package idemsql

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"

	"github.com/idemsql/idemsql/idemdriver"
)

// preparer is the dialect's StatementPreparer, or nil.
func preparer(d idemdriver.Dialect) idemdriver.StatementPreparer {
	sp, _ := d.(idemdriver.StatementPreparer)
	return sp
}

// inlined is query with args written into it, when the server refused to
// prepare it (err) and the dialect can write them.
func inlined(dia idemdriver.StatementPreparer, err error, query string, args []any) (string, bool) {
	if err == nil || dia == nil || !dia.PrepareFailed(err) {
		return "", false
	}
	in, ok := dia.(idemdriver.Inliner)
	if !ok {
		return "", false
	}
	return in.Inline(query, args)
}

// preparedSet holds the store's statements prepared on one *sql.DB, and
// what the store learnt of the pool's server while preparing them.
type preparedSet struct {
	db      *sql.DB
	stmts   map[string]*sql.Stmt // written once, before ready; read once ready
	early   bool                 // the server may show a commit before it is durable ([EarlyVisibility]); written like stmts
	ready   atomic.Bool          // stmts is complete
	started atomic.Bool          // preparing has begun, in the background
}

// preparedSet returns the set of db, which may not be prepared yet. Binding
// a new *sql.DB lets go the statements of pools that were closed meanwhile.
func (s *Store) preparedSet(db *sql.DB) *preparedSet {
	if v, ok := s.prepared.Load(db); ok {
		return v.(*preparedSet)
	}
	v, loaded := s.prepared.LoadOrStore(db, &preparedSet{db: db})
	if !loaded {
		s.forgetClosedPools()
	}
	return v.(*preparedSet)
}

// preparedSoon returns the statements prepared on db if they are ready, and
// nil otherwise, after starting to prepare them in the background. No
// caller waits for them: preparing needs a connection of the pool, which
// may be busy (the caller may even hold the only one in a transaction), and
// a call must end with its context. The background call waits for a
// connection like any other caller of the pool, and gives up when db is
// closed. Until the statements are ready, calls run them unprepared; a
// statement that fails to prepare, then or later on another connection of
// the pool, runs unprepared too: preparing is an optimisation, never a new
// way to fail or to wait.
func (s *Store) preparedSoon(db *sql.DB) *preparedSet {
	ps := s.preparedSet(db)
	if ps.ready.Load() {
		return ps
	}
	if ps.started.CompareAndSwap(false, true) {
		go s.prepare(context.Background(), ps)
	}
	return nil
}

func (s *Store) prepare(ctx context.Context, ps *preparedSet) {
	if ev, ok := s.dialect.(idemdriver.EarlyVisibility); ok {
		early, err := ev.VisibleBeforeDurable(ctx, poolExecutor{ps.db})
		ps.early = early || err != nil
	}
	stmts := make(map[string]*sql.Stmt)
	st := s.stmts
	for _, q := range []string{st.Claim, st.ClaimOrTouch, st.ClaimCompleted, st.ClaimOrRead, st.ClaimOrReadCompleted,
		st.Read, st.Reclaim, st.ReclaimCompleted, st.Complete, st.Fail, st.Release} {
		if q == "" || stmts[q] != nil {
			continue
		}
		if stmt, err := ps.db.PrepareContext(ctx, q); err == nil {
			stmts[q] = stmt
		}
	}
	ps.stmts = stmts
	ps.ready.Store(true)
}

// TxBinder is implemented by a [Pool] that can bind a transaction the
// caller began on its database, for [Do]: see [DB.Tx]. BindTx returns nil
// for a nil transaction.
type TxBinder[X any] interface {
	BindTx(tx X) idemdriver.Executor
}

// Tx binds the store to tx, a transaction that the caller began on db's
// pool, for [Do]. It is [Store.SQL] (or the postgres dialect's Pgx) with
// what the pool binding knows: on dialects that prepare statements (SQLite,
// MySQL), Do then runs the store's statements prepared once per connection,
// as [Run] does, instead of sending every statement's text again (SQLite
// parses it again on every call; go-sql-driver/mysql without
// interpolateParams prepares and closes it). The first binding of a pool
// starts preparing them in the background, since tx may hold the pool's
// only connection; calls until they are ready run unprepared.
//
// tx must belong to the pool db was bound to: a transaction of another
// *sql.DB fails at Do's first statement, and nothing runs. A pool that
// cannot bind transactions (a [Pool] that does not implement [TxBinder])
// gives an unbound Tx, which Do refuses with [ErrInvalidOption].
func (d DB[X]) Tx(tx X) Tx {
	b, ok := d.pool.(TxBinder[X])
	if d.store == nil || !ok {
		return Tx{store: d.store}
	}
	ex := b.BindTx(tx)
	if ex == nil {
		return Tx{store: d.store}
	}
	return Tx{store: d.store, exec: ex}
}

var _ TxBinder[*sql.Tx] = sqlPool{}

// BindTx binds a transaction of the pool, through its prepared statements
// once they are ready.
func (p sqlPool) BindTx(tx *sql.Tx) idemdriver.Executor {
	if tx == nil {
		return nil
	}
	sp := preparer(p.store.dialect)
	if sp != nil && sp.PrepareStatements() {
		if ps := p.store.preparedSoon(p.db); ps != nil {
			return preparedExecutor{tx: tx, ps: ps, dia: sp}
		}
	}
	return sqlExecutor{tx: tx, dia: sp}
}

// forgetClosedPools drops the statements of every *sql.DB that was closed.
// A cancelled context makes PingContext answer without any I/O: "database
// is closed" for a closed pool, the context's error for an open one.
func (s *Store) forgetClosedPools() {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	s.prepared.Range(func(k, v any) bool {
		db := k.(*sql.DB)
		if err := db.PingContext(done); !errors.Is(err, context.Canceled) {
			s.prepared.Delete(k)
		}
		return true
	})
}

// preparedExecutor runs the store's statements through their prepared
// forms, bound to the transaction's connection.
type preparedExecutor struct {
	tx  *sql.Tx
	ps  *preparedSet
	dia idemdriver.StatementPreparer
}

var _ idemdriver.Executor = preparedExecutor{}

func (e preparedExecutor) visibleBeforeDurable() bool { return e.ps.early }

func (e preparedExecutor) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	stmt := e.ps.stmts[query]
	if stmt == nil {
		return sqlExecutor{tx: e.tx, dia: e.dia}.Exec(ctx, query, args...)
	}
	res, err := e.tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
	if err != nil && e.dia.PrepareFailed(err) {
		// Not prepared on this connection: run the text instead.
		return sqlExecutor{tx: e.tx, dia: e.dia}.Exec(ctx, query, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (e preparedExecutor) QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row {
	if stmt := e.ps.stmts[query]; stmt != nil {
		return fallbackRow{ctx: ctx, tx: e.tx, dia: e.dia, query: query, args: args, prepared: true,
			row: e.tx.StmtContext(ctx, stmt).QueryRowContext(ctx, args...)}
	}
	return sqlExecutor{tx: e.tx, dia: e.dia}.QueryRow(ctx, query, args...)
}

// fallbackRow runs the query again when the server refused to prepare it:
// as text, when it was the store's prepared statement, and with its
// arguments inlined, when the driver needs a prepared statement for the
// text too. The error shows at Scan.
type fallbackRow struct {
	ctx      context.Context
	tx       *sql.Tx
	dia      idemdriver.StatementPreparer
	query    string
	args     []any
	prepared bool
	row      *sql.Row
}

func (r fallbackRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if err == nil || !r.dia.PrepareFailed(err) {
		return err
	}
	if r.prepared {
		err = r.tx.QueryRowContext(r.ctx, r.query, r.args...).Scan(dest...)
	}
	if text, ok := inlined(r.dia, err, r.query, r.args); ok {
		return r.tx.QueryRowContext(r.ctx, text).Scan(dest...)
	}
	return err
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

func (e poolExecutor) QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row {
	return e.db.QueryRowContext(ctx, query, args...)
}
