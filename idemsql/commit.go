package idemsql

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
)

// committer is a transaction the library began and ends.
type committer interface {
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

// commit commits tx, a transaction the library began; wrote says whether
// it wrote anything. A context that already ended sends no COMMIT: the
// transaction is rolled back, and the error is the context's alone. (pgx
// and database/sql would not send it either, but database/sql says so with
// an error that a driver also returns for a COMMIT the context interrupted.)
func (s *Store) commit(ctx context.Context, tx committer, op, key string, wrote bool) *Error {
	if cerr := ctx.Err(); cerr != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return &Error{Op: op, Key: key, Err: fmt.Errorf("not committed: %w", cerr), notCommitted: true}
	}
	if err := tx.Commit(ctx); err != nil {
		return s.commitError(ctx, op, key, err, wrote)
	}
	return nil
}

// commitError classifies a failed COMMIT. The transaction certainly did
// not commit when the database refused it or had already ended it, when
// the driver says the COMMIT never left, or when it wrote nothing (then
// nothing of it can have committed). Then the class is ErrRetryable, or,
// with ctx ended, the context's alone. When the connection broke, or ctx
// ended, during the COMMIT of a transaction that wrote, nobody can tell:
// ErrCommitUnknown, the context's error inside if it ended.
func (s *Store) commitError(ctx context.Context, op, key string, err error, wrote bool) *Error {
	e := &Error{Op: op, Key: key, Err: err}
	cerr := ctx.Err()
	if cerr != nil && !errors.Is(err, cerr) {
		e.Err = errors.Join(err, cerr)
	}
	k := s.classify(err)
	refused := k == KindRetryable || k == KindTxEnded || k == KindTxAborted
	notSent := s.notSent(err)
	e.notCommitted = refused || notSent || !wrote
	switch {
	case !e.notCommitted && (k == KindConnLost || cerr != nil):
		e.Kind = ErrCommitUnknown
	case cerr != nil:
		// Not committed, and ctx ended: its class alone.
	case e.notCommitted && !refused:
		e.Kind = ErrRetryable
	default:
		e.Kind = kindSentinel("commit", k)
		e.swallowed = k == KindTxAborted
	}
	return e
}

// notSent reports whether err says that the statement never left:
// driver.ErrBadConn, which database/sql's contract allows only when the
// server cannot have performed the operation, or an error whose
// SafeToRetry says so (pgconn's) — unless the dialect reads it as a broken
// connection: pgx says "conn closed", SafeToRetry and all, also for a
// statement that went out.
func (s *Store) notSent(err error) bool {
	if errors.Is(err, driver.ErrBadConn) {
		return true
	}
	var safe interface{ SafeToRetry() bool }
	return errors.As(err, &safe) && safe.SafeToRetry() && s.dialect.Classify(err) != KindConnLost
}
