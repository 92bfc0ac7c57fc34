package idemsql

import (
	"context"
	"database/sql"
	"sync"
)

// StatementPreparer is implemented by dialects whose driver gains from
// statements prepared once per connection and reused: SQLite parses every
// statement text again otherwise (a large share of a short transaction's
// CPU), and go-sql-driver/mysql without interpolateParams prepares and
// closes a statement per query, three round trips instead of one.
type StatementPreparer interface {
	PrepareStatements() bool
}

// preparedSet holds the store's statements prepared on one *sql.DB.
type preparedSet struct {
	once  sync.Once
	stmts map[string]*sql.Stmt
}

// preparedFor returns the statements prepared on db, preparing them on the
// first call. A statement that fails to prepare is left out and runs
// unprepared: preparing is an optimisation, never a new way to fail.
func (s *Store) preparedFor(ctx context.Context, db *sql.DB) *preparedSet {
	v, _ := s.prepared.LoadOrStore(db, &preparedSet{})
	ps := v.(*preparedSet)
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

// preparedExecutor runs the store's statements through their prepared
// forms, bound to the transaction's connection.
type preparedExecutor struct {
	tx *sql.Tx
	ps *preparedSet
}

var _ Executor = preparedExecutor{}

func (e preparedExecutor) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	var res sql.Result
	var err error
	if stmt := e.ps.stmts[query]; stmt != nil {
		res, err = e.tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
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
		return e.tx.StmtContext(ctx, stmt).QueryRowContext(ctx, args...)
	}
	return e.tx.QueryRowContext(ctx, query, args...)
}
