package idemsql

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/idemsql/idemsql/idemdriver"
)

// CommitError gives the error of a COMMIT the class the library gives its
// own, for callers of [Do], who commit their transaction themselves. Pass
// it what Commit returned and the context the transaction ran under:
//
//	if err := tx.Commit(ctx); err != nil {
//		return store.CommitError(ctx, err)
//	}
//
// For a nil err it returns nil; otherwise an [*Error] (Op "commit", the
// driver's error inside) of one class:
//
//   - [ErrCommitUnknown]: the connection broke, or ctx ended, while the
//     COMMIT was under way, so it may have committed. Call again with the
//     same key: the call replays if it did, runs fn if it did not.
//   - [ErrRetryable]: it certainly did not commit, and the transaction is
//     lost: the database refused it (a serialization failure or a deadlock
//     found at COMMIT, a Galera certification failure) or had already ended
//     it, or the driver says that the COMMIT never left
//     ([driver.ErrBadConn]: by database/sql's contract the server cannot
//     have performed it; pgx's error for a context that had already ended).
//     Run the whole transaction again.
//   - the context's error, and no class of the library's: ctx ended and
//     the COMMIT certainly did not commit (it was not sent, or the
//     transaction had been rolled back: sql.ErrTxDone).
//   - none: an error the library has no meaning for (a deferred constraint
//     that failed at COMMIT, say).
//
// Do not read pgx's pgconn.SafeToRetry as "not committed" for a COMMIT:
// pgx reports a COMMIT whose connection broke as "conn closed", for which
// SafeToRetry is true although the COMMIT may have committed (with the
// server killed mid-load, 35 of 218 such COMMITs had). CommitError says
// ErrCommitUnknown for it. database/sql returns the context's own error
// when ctx ended before Commit, and pgx's stdlib driver returns the same
// error for a COMMIT that a cancelled ctx interrupted, so that one is
// ErrCommitUnknown too (except on SQLite, whose driver rolls such a COMMIT
// back).
func (s *Store[X]) CommitError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	return s.commitError(ctx, "commit", "", err, true)
}

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
func (s *core) commit(ctx context.Context, tx committer, op, key string, wrote bool) *Error {
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
func (s *core) commitError(ctx context.Context, op, key string, err error, wrote bool) *Error {
	e := &Error{Op: op, Key: key, Err: err}
	cerr := ctx.Err()
	if cerr != nil && !errors.Is(err, cerr) {
		e.Err = errors.Join(err, cerr)
	}
	k := s.classify(err)
	refused := k == idemdriver.KindRetryable || k == idemdriver.KindTxEnded || k == idemdriver.KindTxAborted
	notSent := s.notSent(err)
	e.notCommitted = refused || notSent || !wrote
	switch {
	case !e.notCommitted && (k == idemdriver.KindConnLost || cerr != nil):
		e.Kind = ErrCommitUnknown
	case cerr != nil:
		// Not committed, and ctx ended: its class alone.
	case e.notCommitted && !refused:
		e.Kind = ErrRetryable
	default:
		e.Kind = kindSentinel("commit", k)
		e.swallowed = k == idemdriver.KindTxAborted
	}
	return e
}

// notSent reports whether err says that the statement never left:
// driver.ErrBadConn, which database/sql's contract allows only when the
// server cannot have performed the operation, or an error whose
// SafeToRetry says so (pgconn's) — unless the dialect reads it as a broken
// connection: pgx says "conn closed", SafeToRetry and all, also for a
// statement that went out.
func (s *core) notSent(err error) bool {
	if errors.Is(err, driver.ErrBadConn) {
		return true
	}
	var safe interface{ SafeToRetry() bool }
	return errors.As(err, &safe) && safe.SafeToRetry() && s.dialect.Classify(err) != idemdriver.KindConnLost
}
