package idempostgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idemdriver"
)

// A transaction the store begins on a *pgxpool.Pool or a *pgx.Conn
// (idemsql.Run, lease mode) pipelines the library's own statements: BEGIN
// leaves with the first statement (pgx's Batch.BeginTx), and Run's result
// write with COMMIT, one round trip each. A Run then costs the round trips
// of the bare transaction fn's writes would need anyway.

var (
	_ idemdriver.Tx[pgx.Tx]    = (*pipeTx)(nil)
	_ idemdriver.ExecCommitter = (*pipeTx)(nil)
	_ idemdriver.RowsQuerier   = (*pipeTx)(nil)
	_ pgx.Tx                   = (*fnTx)(nil)
)

// pipeline takes a connection from p for a transaction that begins with
// its first statement; ok is false for a Beginner it cannot take one from.
// The connection is taken now, so that a pool that cannot give one fails
// the transaction's BEGIN, as pgx's would.
func pipeline(ctx context.Context, p Beginner, opts pgx.TxOptions) (t *pipeTx, ok bool, err error) {
	switch p := p.(type) {
	case *pgxpool.Pool:
		c, err := p.Acquire(ctx)
		if err != nil {
			return nil, true, err
		}
		return &pipeTx{opts: opts, conn: c.Conn(), release: c.Release}, true, nil
	case *pgx.Conn:
		return &pipeTx{opts: opts, conn: p, release: func() {}}, true, nil
	}
	return nil, false, nil
}

// pipeTx is the core's side of the transaction: nothing is sent until its
// first statement, which takes BEGIN along.
type pipeTx struct {
	opts    pgx.TxOptions
	conn    *pgx.Conn
	release func() // gives conn back, until BEGIN is sent
	tx      *fnTx  // once BEGIN was sent
}

// send sends q after BEGIN, or alone once BEGIN was sent, and returns its
// results, to be closed before the transaction is used again.
func (t *pipeTx) send(ctx context.Context, q string, args ...any) pgx.BatchResults {
	b := &pgx.Batch{}
	if t.tx != nil {
		b.Queue(q, args...)
		return t.tx.SendBatch(ctx, b)
	}
	b.BeginTx(t.opts)
	b.Queue(q, args...)
	br := t.conn.SendBatch(ctx, b)
	t.tx = &fnTx{Tx: br.Tx(), release: t.release}
	if _, err := br.Exec(); err != nil { // BEGIN's result
		return failedBatch{br, err}
	}
	return br
}

func (t *pipeTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	if t.tx != nil {
		tag, err := t.tx.Exec(ctx, query, args...)
		return tag.RowsAffected(), err
	}
	br := t.send(ctx, query, args...)
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag.RowsAffected(), err
}

func (t *pipeTx) QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row {
	if t.tx != nil {
		return t.tx.QueryRow(ctx, query, args...)
	}
	br := t.send(ctx, query, args...)
	return batchRow{br: br, row: br.QueryRow()}
}

func (t *pipeTx) Query(ctx context.Context, query string, args ...any) (idemdriver.Rows, error) {
	if t.tx == nil {
		br := t.send(ctx, "SELECT")
		if err := br.Close(); err != nil {
			return nil, err
		}
	}
	return pgxExecutor{t.tx}.Query(ctx, query, args...)
}

// Tx is fn's transaction; the core calls fn after a statement of its own.
func (t *pipeTx) Tx() pgx.Tx { return t.tx }

func (t *pipeTx) Commit(ctx context.Context) error {
	if t.tx == nil {
		return t.Rollback(ctx) // nothing was sent
	}
	return t.tx.Commit(ctx)
}

func (t *pipeTx) Rollback(ctx context.Context) error {
	if t.tx == nil {
		if t.release != nil {
			t.release()
			t.release = nil
		}
		return nil
	}
	return t.tx.Rollback(ctx)
}

// divisionByZero is the SQLSTATE of a fenced write that matched no row.
const divisionByZero = "22012"

// fenced makes q, an UPDATE or DELETE without RETURNING, fail with
// division_by_zero when it matches no row. The error aborts the
// transaction, so that the COMMIT sent behind it rolls back.
func fenced(q string) string {
	return "WITH fenced AS (" + q + "\nRETURNING 1) SELECT 1 / count(*) FROM fenced"
}

// ExecCommit runs query, fenced, and COMMIT in one round trip
// (idemdriver.ExecCommitter).
func (t *pipeTx) ExecCommit(ctx context.Context, query string, args ...any) (wrote bool, err, commitErr error) {
	if t.tx == nil || t.tx.ended {
		return false, pgx.ErrTxClosed, nil
	}
	b := &pgx.Batch{}
	b.Queue(fenced(query), args...)
	b.Queue("COMMIT")
	br := t.tx.SendBatch(ctx, b)
	_, err = br.Exec()
	var pgErr *pgconn.PgError
	if errors.Is(err, pgx.ErrTxClosed) {
		return false, err, nil // fn ended the transaction itself
	}
	if errors.As(err, &pgErr) {
		// The server refused the write and so did not commit: the
		// transaction is aborted, for Rollback to end.
		_ = br.Close()
		if pgErr.Code == divisionByZero {
			return false, nil, nil
		}
		return false, err, nil
	}
	if err == nil {
		var tag pgconn.CommandTag
		tag, err = br.Exec()
		if err == nil && tag.String() == "ROLLBACK" {
			err = pgx.ErrTxCommitRollback
		}
	}
	// Past the write, any error may have come after the COMMIT was
	// applied: it is the COMMIT's.
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	t.tx.committed()
	return err == nil, nil, err
}

// fnTx is pgx's Tx, begun in the batch of the first statement, handed to
// fn. After a pipelined COMMIT, pgx's Tx still counts itself open, and
// ending it would cost a round trip: fnTx gives the connection back and
// refuses every further use instead.
type fnTx struct {
	pgx.Tx
	release func() // returns the connection to its pool; nil once done
	ended   bool   // by a pipelined COMMIT
}

// committed ends the transaction after a pipelined COMMIT. A connection
// left in a transaction (the COMMIT failed) is closed, as pgx's Tx does.
func (t *fnTx) committed() {
	t.ended = true
	if c := t.Tx.Conn(); c.PgConn().TxStatus() != 'I' {
		_ = c.Close(context.Background())
	}
	t.done()
}

func (t *fnTx) done() {
	if t.release != nil {
		t.release()
		t.release = nil
	}
}

func (t *fnTx) Commit(ctx context.Context) error {
	if t.ended {
		return pgx.ErrTxClosed
	}
	defer t.done()
	return t.Tx.Commit(ctx)
}

func (t *fnTx) Rollback(ctx context.Context) error {
	if t.ended {
		return pgx.ErrTxClosed
	}
	defer t.done()
	return t.Tx.Rollback(ctx)
}

func (t *fnTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if t.ended {
		return nil, pgx.ErrTxClosed
	}
	return t.Tx.Begin(ctx)
}

func (t *fnTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.ended {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	return t.Tx.Exec(ctx, sql, args...)
}

func (t *fnTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.ended {
		return nil, pgx.ErrTxClosed
	}
	return t.Tx.Query(ctx, sql, args...)
}

func (t *fnTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.ended {
		return errRow{pgx.ErrTxClosed}
	}
	return t.Tx.QueryRow(ctx, sql, args...)
}

func (t *fnTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.ended {
		return pgx.FailedBatchResults(b, pgx.ErrTxClosed)
	}
	return t.Tx.SendBatch(ctx, b)
}

func (t *fnTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if t.ended {
		return 0, pgx.ErrTxClosed
	}
	return t.Tx.CopyFrom(ctx, table, columns, src)
}

func (t *fnTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if t.ended {
		return nil, pgx.ErrTxClosed
	}
	return t.Tx.Prepare(ctx, name, sql)
}

// batchRow is the row of a statement sent in a batch: Scan closes the
// batch, so that the transaction can be used again.
type batchRow struct {
	br  pgx.BatchResults
	row pgx.Row
}

func (r batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

// failedBatch is a batch whose BEGIN failed: every result is that error.
type failedBatch struct {
	pgx.BatchResults
	err error
}

func (b failedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b failedBatch) QueryRow() pgx.Row                { return errRow{b.err} }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
