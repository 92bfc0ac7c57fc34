package idemsql

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
)

// Run is [Do] for callers without a transaction of their own: it begins a
// transaction on db, calls Do with fn, and commits. fn receives the
// transaction for its business writes.
//
// When the transaction is lost — the database refused it (a serialization
// failure, a deadlock, a snapshot conflict, a Galera certification
// failure, a busy SQLite database), ended it under fn, or the connection
// broke before COMMIT, BEGIN included — Run rolls back and runs the whole
// transaction again, after a random, growing, capped wait ([Options.Backoff]),
// at most [Options.MaxAttempts] times ([DefaultMaxAttempts]: enough to ride
// out a database server's restart), and never past ctx. A retried
// transaction replays if another one won the key meanwhile, so fn's
// committed effects never happen twice. When the attempts run out, the
// last error is returned, matching [ErrRetryable]; when ctx ends between
// attempts, the error matches ctx's error alone. A transaction that
// PostgreSQL reports aborted only after fn returned (fn went on past a
// failed statement) is run again once: a second time, the error has no
// class, since another try would meet fn's own failure again. A connection
// lost during the COMMIT of a transaction that ran fn leaves the outcome
// unknown: Run returns [ErrCommitUnknown] rather than guess; calling again
// with the same key replays or runs. After a replay, which wrote nothing,
// and after a COMMIT the driver says it never sent, nothing is unknown:
// Run runs the transaction again. A ctx that ended before COMMIT sends
// none: the error is ctx's alone.
//
// Run commits after fn ran and after a replay, and after a [Permanent]
// failure was recorded ([Options.RecordFailures]): the record is the point.
// Everything else is rolled back, whatever fn's error wraps. If fn panics,
// the transaction is rolled back and the panic goes on. Other errors are
// returned as they came, with the driver's error reachable by [errors.As].
//
// Where the driver can (pgx, idempostgres.New), fn's result is stored by a
// write sent together with the COMMIT, in one round trip; the write then
// fails the transaction by itself when the claim is gone, so that fn's
// writes never commit without the result.
//
// On SQLite the claim is the transaction's first statement, so the
// transaction takes the write lock at once (waiting on busy_timeout) and
// never meets SQLITE_BUSY_SNAPSHOT, whatever the DSN's _txlock.
func Run[X, T any](ctx context.Context, s *Store[X], key string, fn func(ctx context.Context, tx X) (T, error), opts ...Options) (Result[T], error) {
	if s == nil {
		return Result[T]{}, errNoStore
	}
	cfg, err := s.callSettings(key, opts)
	if err != nil {
		return Result[T]{}, err
	}
	if fn == nil {
		return Result[T]{}, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	start := time.Now()
	ctx, call := s.startCall(ctx, "Run", "atomic", key, start)
	defer call.unwinding()
	res, err := runRetrying(ctx, s, key, fn, &cfg, start)
	call.finish(res.Replayed, err)
	return res, err
}

func runRetrying[X, T any](ctx context.Context, s *Store[X], key string, fn func(context.Context, X) (T, error), cfg *settings, start time.Time) (Result[T], error) {
	swallowedBefore := false
	for attempt := 1; ; attempt++ {
		res, o, err := runOnce(ctx, s, key, fn, cfg, start)
		if o == outcomeRetry && isSwallowed(err) {
			if swallowedBefore {
				return res, swallowedTwice(err)
			}
			swallowedBefore = true
		}
		if o != outcomeRetry || attempt >= cfg.maxAttempts || ctx.Err() != nil {
			return res, err
		}
		s.observe(ctx, EventRetried, "atomic", key, 0, start, err)
		if werr := sleep(ctx, backoff(attempt, cfg.backoffBase, cfg.backoffMax)); werr != nil {
			// The context ended before the next attempt: its error is the
			// one class. The last attempt's error would be a second
			// (ErrRetryable), so it is kept in the message only.
			return res, &Error{Op: "retry", Key: key, Err: fmt.Errorf("%w while waiting to run again after: %v", werr, err)}
		}
	}
}

func isSwallowed(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.swallowed
}

// swallowedTwice is the error of a Run whose fn went on past a failed
// statement in two transactions in a row (PostgreSQL reports the aborted
// transaction after fn): not a conflict another try would escape, but
// fn's own doing. It has no class.
func swallowedTwice(err error) error {
	var e *Error
	errors.As(err, &e)
	return &Error{Op: e.Op, Key: e.Key, Err: fmt.Errorf("fn went on past a failed statement in two transactions in a row (handle its error): %w", e.Err)}
}

var errNoStore = fmt.Errorf("%w: nil store", ErrInvalidOption)

func runOnce[X, T any](ctx context.Context, s *Store[X], key string, fn func(context.Context, X) (T, error), cfg *settings, start time.Time) (Result[T], outcome, error) {
	ptx, err := s.driver.Begin(ctx, cfg.isolation)
	if err != nil {
		e := s.dbError(ctx, "begin", key, err)
		return Result[T]{}, failedOutcome(e), e
	}
	ended := false
	defer func() {
		if !ended { // fn panicked
			_ = ptx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	ec, _ := ptx.(idemdriver.ExecCommitter)
	res, o, err := do(ctx, &s.core, ptx, ec, key, func(ctx context.Context) (T, error) { return fn(ctx, ptx.Tx()) }, cfg, start)
	ended = true
	switch o {
	case outcomeCommitted:
		return res, outcomeExecuted, err
	case outcomeExecuted, outcomeReplayed, outcomeRecorded:
	default:
		_ = ptx.Rollback(context.WithoutCancel(ctx))
		return res, o, err
	}
	// A replay wrote nothing: whatever became of its COMMIT, the answer
	// stands, and a COMMIT that failed is a reason to run again, not an
	// unknown.
	if e := s.commit(ctx, ptx, "commit", key, o != outcomeReplayed); e != nil {
		return res, failedOutcome(e), e
	}
	return res, o, err
}

// backoff is "full jitter": uniform in [0, min(max, base·2^(attempt-1))].
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := max
	if attempt < 30 {
		if exp := base << (attempt - 1); exp > 0 && exp < max {
			d = exp
		}
	}
	return rand.N(d + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
