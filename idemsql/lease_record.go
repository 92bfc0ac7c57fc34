package idemsql

import (
	"context"
	"errors"
	"fmt"
	"time"
)

var errUnboundLease = fmt.Errorf("%w: Lease was not made by ClaimLease", ErrInvalidOption)

// Renew extends the lease to the database's clock + the lease duration,
// and moves [LeaseInfo.Deadline] on. It returns [ErrLeaseLost] when the
// lease no longer holds the key.
func (l Lease) Renew(ctx context.Context) error {
	if l.lr == nil {
		return errUnboundLease
	}
	us := l.lr.leaseMicros()
	var at time.Time
	err := l.finish(ctx, "renew", func(ex Executor) (int64, error) {
		at = time.Now()
		return ex.Exec(ctx, l.lr.ls.Renew, us, us, l.Key, l.Attempt, l.Owner)
	})
	if err == nil {
		l.clock.renewed(at)
	}
	return err
}

// Complete records result (encoded with the codec) as the key's outcome,
// kept for the TTL from now; every later call with the key replays it. It
// returns [ErrLeaseLost], and records nothing, when the lease no longer
// holds the key (taken over, resolved, or an outcome already recorded). A
// lease that ran out without a takeover still completes: the holder is
// still the latest.
func (l Lease) Complete(ctx context.Context, result any) error {
	if l.lr == nil {
		return errUnboundLease
	}
	encoded, err := encode(result, &l.lr.cfg)
	if err != nil {
		return err
	}
	return l.complete(ctx, encoded)
}

func (l Lease) complete(ctx context.Context, encoded []byte) error {
	ttl := l.lr.ttlMicros()
	return l.finish(ctx, "complete", func(ex Executor) (int64, error) {
		return ex.Exec(ctx, l.lr.ls.Complete, string(encoded), ttl, l.Key, l.Attempt, l.Owner)
	})
}

// Fail records a permanent failure (class for machines, message for people),
// kept for the TTL from now; every later call with the key gets it back as a
// [*FailureError]. It returns [ErrLeaseLost], and records nothing, when the
// lease no longer holds the key.
func (l Lease) Fail(ctx context.Context, class, message string) error {
	if l.lr == nil {
		return errUnboundLease
	}
	class, message = truncateUTF8(class, maxErrorClass), truncateUTF8(message, maxErrorMessage)
	ttl := l.lr.ttlMicros()
	return l.finish(ctx, "fail", func(ex Executor) (int64, error) {
		return ex.Exec(ctx, l.lr.ls.Fail, class, message, ttl, l.Key, l.Attempt, l.Owner)
	})
}

// Release ends the lease without recording an outcome, for an effect that
// did not happen or that may be repeated under the same downstream key. The
// row stays in_progress, marked [ReleasedClass]: the next call with the key
// takes it over at once, as attempt+1 with the same DownstreamKey. It
// returns [ErrLeaseLost] when the lease no longer holds the key. A released
// Lease holds nothing: its Renew, Complete, Fail and Release change nothing
// and return [ErrLeaseLost].
func (l Lease) Release(ctx context.Context) error {
	if l.lr == nil {
		return errUnboundLease
	}
	return l.end(ctx, "released by its holder")
}

func (l Lease) end(ctx context.Context, why string) error {
	ttl := l.lr.ttlMicros()
	why = truncateUTF8(why, maxErrorMessage)
	return l.finish(ctx, "release", func(ex Executor) (int64, error) {
		return ex.Exec(ctx, l.lr.ls.End, ReleasedClass, why, ttl, l.Key, l.Attempt, l.Owner)
	})
}

// finish runs a fenced write. A write that changes no row means the lease
// no longer holds the key: the row was taken over, resolved, or already
// carries an outcome. No row is re-read to guess otherwise: the owner token
// is this claim's alone, and a fenced write either matched it or did not.
func (l Lease) finish(ctx context.Context, op string, write func(Executor) (int64, error)) error {
	lr := l.lr
	return lr.inTx(ctx, op, l.Key, func(ex Executor) error {
		n, err := write(ex)
		if err != nil {
			return lr.s.dbError(ctx, op, l.Key, err)
		}
		if n != 1 {
			return lostError(op, l.Key, l.Attempt)
		}
		return nil
	})
}

func lostError(op, key string, attempt int64) error {
	return &Error{Op: op, Key: key, Kind: ErrLeaseLost,
		Err: fmt.Errorf("attempt %d no longer holds the key", attempt)}
}

// runHeld runs fn under l and records its outcome.
func runHeld[T any](ctx context.Context, l Lease, fn func(context.Context, LeaseInfo) (T, error)) (Result[T], error) {
	var res Result[T]
	var v T
	var fnErr error
	lost, definite := l.hold(ctx, func(ctx context.Context) { v, fnErr = fn(ctx, l.LeaseInfo) })
	if definite {
		return res, joinErrs(lost, fnErr)
	}
	// The effect happened (or failed): record that even if ctx ended. A
	// lease the heartbeat could not renew may still be this holder's: the
	// writes are fenced, and lost joins whatever comes back.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(l.lr.cfg.lease.leaseDuration(), 10*time.Second))
	defer cancel()
	if fnErr != nil {
		if class, ok := IsPermanent(fnErr); ok && l.lr.cfg.recordFailures {
			msg := truncateUTF8(fnErr.Error(), maxErrorMessage)
			if err := l.Fail(wctx, class, msg); err != nil {
				return res, joinErrs(fnErr, lost, err)
			}
			return res, &FailureError{Key: l.Key, Class: truncateUTF8(class, maxErrorClass), Message: msg, Err: fnErr}
		}
		return res, joinErrs(fnErr, lost, l.end(wctx, "fn failed: "+fnErr.Error()))
	}
	encoded, err := encode(v, &l.lr.cfg)
	if err != nil {
		return res, joinErrs(err, lost, l.Fail(wctx, UnencodableClass, err.Error()))
	}
	if err := l.complete(wctx, encoded); err != nil {
		return res, joinErrs(err, lost)
	}
	res.Value = v
	return res, nil
}

// joinErrs is errors.Join, except that a single error comes back unchanged
// (fn's own error stays comparable with ==).
func joinErrs(errs ...error) error {
	var only error
	n := 0
	for _, e := range errs {
		if e != nil {
			only = e
			n++
		}
	}
	if n <= 1 {
		return only
	}
	return errors.Join(errs...)
}
