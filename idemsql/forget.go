package idemsql

import (
	"context"
	"database/sql"
	"errors"

	"github.com/idemsql/idemsql/idemdriver"
)

// Forget deletes the key's row, so that the next call with the key runs fn
// as if the key had never been used: for support staff who let a customer
// retry, or to clear a claim that no holder will finish. found is false,
// with a nil error, when the table holds no row for the key.
//
// It never frees a key that a holder has: a lease-mode claim whose lease is
// live ([LeaseLive]), or a row another transaction holds (an atomic-mode
// claim or re-claim not yet committed, a takeover, a batch of [Sweep] or
// [Purge]), is refused with [ErrInProgress], at once: PostgreSQL takes the
// key's advisory lock and the row's lock without waiting (NOWAIT), and so
// does MySQL/MariaDB the row's. SQLite has one writer: Forget waits for it,
// as every write does (busy_timeout), and then sees committed rows only.
//
// Every other row is deleted, whatever it holds, and what it held is gone:
//
//   - A completed or failed key runs fn again: its effect happens again.
//     That is the point of forgetting it.
//   - A claim whose lease ran out or was released, one committed without an
//     outcome ([ErrAbandoned]), and one [Sweep] abandoned ([AbandonedClass])
//     may stand for an effect that happened. The next claim of the key
//     starts anew, with a new [Claim.DownstreamKey], so the downstream
//     system cannot recognise a repeat: look there first ([Lookup] gives the
//     row's DownstreamKey). A holder whose claim was forgotten records
//     nothing: its writes are fenced and return [ErrLeaseLost].
//
// It runs one short transaction, tried again as lease mode's are when the
// database asks for it. It needs a dialect with lease mode (all shipped
// ones), which holds its SQL.
func Forget[X any](ctx context.Context, s *Store[X], key string) (found bool, err error) {
	if err := ValidateKey(key); err != nil {
		return false, err
	}
	lr, err := newLeaser(s, nil)
	if err != nil {
		return false, err
	}
	err = lr.inHousekeepingTx(ctx, "forget", func(ex idemdriver.Executor) error {
		var err error
		found, err = lr.forget(ctx, ex, key)
		return err
	})
	return found, err
}

// forget deletes the key's row in ex unless a holder has it.
func (lr *leaser) forget(ctx context.Context, ex idemdriver.Executor, key string) (bool, error) {
	if lr.s.stmts.TryLock != "" {
		// An atomic-mode claim not yet committed is invisible to the row's
		// lock on PostgreSQL, but holds the key's advisory lock.
		var got bool
		if err := ex.QueryRow(ctx, lr.s.stmts.TryLock, key).Scan(&got); err != nil {
			return false, lr.forgetError(ctx, key, err)
		}
		if !got {
			return false, &Error{Op: "forget", Key: key, Kind: ErrInProgress, Err: errors.New("a transaction holds the key")}
		}
	}
	var r struct {
		attempt int64
		owner   sql.NullString
		live    bool
	}
	err := ex.QueryRow(ctx, lr.ls.ForgetLock, key).Scan(&r.attempt, &r.owner, &r.live)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, lr.forgetError(ctx, key, err)
	}
	if r.live {
		return false, &Error{Op: "forget", Key: key, Kind: ErrInProgress, Err: errors.New("held by a live lease")}
	}
	n, err := ex.Exec(ctx, lr.ls.Forget, key, r.attempt, r.owner)
	if err != nil {
		return false, lr.forgetError(ctx, key, err)
	}
	return n == 1, nil
}

// forgetError is the error of a statement of forget: another transaction's
// lock, which the statements do not wait for, is [ErrInProgress].
func (lr *leaser) forgetError(ctx context.Context, key string, err error) error {
	if ctx.Err() == nil && lr.s.classify(err) == idemdriver.KindLockTimeout {
		return &Error{Op: "forget", Key: key, Kind: ErrInProgress, Err: err}
	}
	return lr.s.dbError(ctx, "forget", key, err)
}

// withdraw deletes the holder's own claim, for a holder whose fn began
// nothing, under a claim that no holder had before it (attempt 1): the
// key is then free for any request, not only for the same one again. The
// delete is fenced by the claim's attempt and owner token like any write
// of a holder; a claim that was taken over is never deleted so.
func (l Lease) withdraw(ctx context.Context) (refused bool, err error) {
	return l.write(ctx, nil, fencedWrite{op: "release",
		stmt: func(ctx context.Context, ex idemdriver.Executor) (int64, error) {
			return ex.Exec(ctx, l.lr.ls.Forget, l.Key, l.Attempt, l.Owner)
		}})
}
