package idemsql

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// StatementPreparer is implemented by dialects whose driver gains from
// statements prepared once per connection and reused: SQLite parses every
// statement text again otherwise (a large share of a short transaction's
// CPU), and go-sql-driver/mysql without interpolateParams prepares and
// closes a statement per query, three round trips instead of one.
type StatementPreparer interface {
	PrepareStatements() bool
	// PrepareFailed reports an error that means the statement could not be
	// prepared on the connection, so nothing ran (MySQL 1461, too many
	// prepared statements on the server; 1615, prepare again): the
	// statement then runs unprepared.
	PrepareFailed(err error) bool
}

// preparedSet holds the store's statements prepared on one *sql.DB.
type preparedSet struct {
	once  sync.Once
	db    *sql.DB
	stmts map[string]*sql.Stmt
}

// preparedFor returns the statements prepared on db, preparing them on the
// first call. A statement that fails to prepare, here or later on another
// connection of the pool, runs unprepared: preparing is an optimisation,
// never a new way to fail. Binding a new *sql.DB lets go the statements of
// pools that were closed meanwhile.
func (s *Store) preparedFor(ctx context.Context, db *sql.DB) *preparedSet {
	v, loaded := s.prepared.LoadOrStore(db, &preparedSet{db: db})
	ps := v.(*preparedSet)
	if !loaded {
		s.forgetClosedPools()
	}
	ps.once.Do(func() {
		ps.stmts = make(map[string]*sql.Stmt)
		st := s.stmts
		for _, q := range []string{st.Claim, st.ClaimCompleted, st.ClaimOrRead, st.ClaimOrReadCompleted,
			st.Read, st.Reclaim, st.ReclaimCompleted, st.Complete, st.Fail, st.Release} {
			if q == "" || ps.stmts[q] != nil {
				continue
			}
			if stmt, err := db.PrepareContext(context.WithoutCancel(ctx), q); err == nil {
				ps.stmts[q] = stmt
			}
		}
	})
	return ps
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
	dia StatementPreparer
}

var _ Executor = preparedExecutor{}

func (e preparedExecutor) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	var res sql.Result
	var err error
	if stmt := e.ps.stmts[query]; stmt != nil {
		res, err = e.tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
		if err != nil && e.dia.PrepareFailed(err) {
			res, err = e.tx.ExecContext(ctx, query, args...)
		}
	} else {
		res, err = e.tx.ExecContext(ctx, query, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (e preparedExecutor) QueryRow(ctx context.Context, query string, args ...any) Row {
	if stmt := e.ps.stmts[query]; stmt != nil {
		return fallbackRow{e: e, ctx: ctx, query: query, args: args,
			row: e.tx.StmtContext(ctx, stmt).QueryRowContext(ctx, args...)}
	}
	return e.tx.QueryRowContext(ctx, query, args...)
}

// fallbackRow runs the query unprepared when the prepared form could not be
// prepared on the transaction's connection; the error shows at Scan.
type fallbackRow struct {
	e     preparedExecutor
	ctx   context.Context
	query string
	args  []any
	row   *sql.Row
}

func (r fallbackRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if err != nil && r.e.dia.PrepareFailed(err) {
		return r.e.tx.QueryRowContext(r.ctx, r.query, r.args...).Scan(dest...)
	}
	return err
}
