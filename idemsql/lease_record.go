package idemsql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/internal/notbegun"
)

var errUnboundLease = fmt.Errorf("%w: the Lease is not held (Held false, or not made by ClaimLease)", ErrInvalidOption)

// Renew extends the lease to the database's clock + the lease duration,
// and moves [Claim.Deadline] on. It returns [ErrLeaseLost] when the
// lease no longer holds the key. Like every write through a Lease, it is
// tried again after a broken connection or a transaction the database
// refused, while the lease holds by its Deadline and ctx allows.
func (l Lease) Renew(ctx context.Context) error {
	if l.lr == nil {
		return errUnboundLease
	}
	_, err := l.renew(ctx, nil)
	return err
}

// renew is Renew, stopping between attempts when stop is closed (then
// errStopped). refused says that the fence refused it: the lease is lost
// for certain, not merely unrenewed.
func (l Lease) renew(ctx context.Context, stop <-chan struct{}) (refused bool, err error) {
	us := l.lr.leaseMicros()
	var at time.Time
	refused, err = l.write(ctx, stop, fencedWrite{op: "renew", strict: stop != nil,
		stmt: func(ctx context.Context, ex idemdriver.Executor) (int64, error) {
			at = time.Now()
			return ex.Exec(ctx, l.lr.ls.Renew, us, us, l.Key, l.Attempt, l.Owner)
		}})
	if err == nil {
		l.clock.renewed(at)
	}
	return refused, err
}

// Complete records result (encoded with the codec) as the key's outcome,
// kept for the TTL from now; every later call with the key replays it. It
// returns [ErrLeaseLost], and records nothing, when the lease no longer
// holds the key (taken over, resolved, released, or an outcome already
// recorded). A lease that ran out without a takeover still completes: the
// holder is still the latest. With [Options.ResultType], a result of another
// type is refused ([ErrEncode]) and nothing is written.
//
// A broken connection or a transaction the database refused does not make
// it give up: it tries again, with a growing wait, until the lease's
// [Claim.Deadline] (at least once) or the end of ctx. When the
// connection broke during the COMMIT, the next try learns from the row,
// read under the fence, whether that COMMIT went through. When the lease
// runs out before the write could be made, the error matches
// [ErrLeaseLost]; when it runs out before the fate of an interrupted COMMIT
// could be learned, [ErrCommitUnknown]. Fail and Release do the same.
func (l Lease) Complete(ctx context.Context, result any) error {
	if l.lr == nil {
		return errUnboundLease
	}
	if err := l.lr.cfg.lease.checkResult(result); err != nil {
		return err
	}
	encoded, err := encode(result, &l.lr.cfg, false)
	if err != nil {
		return err
	}
	_, err = l.complete(ctx, encoded)
	return err
}

// complete, fail and end are Complete, Fail and Release; refused says that
// the fence refused the write.
func (l Lease) complete(ctx context.Context, encoded []byte) (refused bool, err error) {
	ttl := l.lr.ttlMicros()
	return l.write(ctx, nil, fencedWrite{op: "complete",
		stmt: func(ctx context.Context, ex idemdriver.Executor) (int64, error) {
			return ex.Exec(ctx, l.lr.ls.Complete, string(encoded), ttl, l.Key, l.Attempt, l.Owner)
		},
		ours: func(r leaseRow) bool { return l.holds(r) && r.status == StatusCompleted }})
}

// Fail records a permanent failure (class for machines, message for people),
// kept for the TTL from now; every later call with the key gets it back as a
// recorded failure ([ErrFailureRecorded]). It returns [ErrLeaseLost], and
// records nothing, when the lease no longer holds the key.
func (l Lease) Fail(ctx context.Context, class, message string) error {
	if l.lr == nil {
		return errUnboundLease
	}
	_, err := l.fail(ctx, class, message)
	return err
}

func (l Lease) fail(ctx context.Context, class, message string) (refused bool, err error) {
	class, message = truncateUTF8(class, maxErrorClass), truncateUTF8(message, maxErrorMessage)
	ttl := l.lr.ttlMicros()
	return l.write(ctx, nil, fencedWrite{op: "fail",
		stmt: func(ctx context.Context, ex idemdriver.Executor) (int64, error) {
			return ex.Exec(ctx, l.lr.ls.Fail, class, message, ttl, l.Key, l.Attempt, l.Owner)
		},
		ours: func(r leaseRow) bool { return l.holds(r) && r.status == StatusFailed && r.errorClass.String == class }})
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
	_, err := l.end(ctx, "released by its holder")
	return err
}

func (l Lease) end(ctx context.Context, why string) (refused bool, err error) {
	ttl := l.lr.ttlMicros()
	why = truncateUTF8(why, maxErrorMessage)
	return l.write(ctx, nil, fencedWrite{op: "release",
		stmt: func(ctx context.Context, ex idemdriver.Executor) (int64, error) {
			return ex.Exec(ctx, l.lr.ls.End, ReleasedClass, why, ttl, l.Key, l.Attempt, l.Owner)
		},
		ours: func(r leaseRow) bool {
			return l.holds(r) && r.status == StatusInProgress && r.errorClass.String == ReleasedClass
		}})
}

// restore is end for a sweeper that took over a claim its holder had
// released: the row goes back to that holder's attempt and owner token,
// marked released with why.
func (l Lease) restore(ctx context.Context, why string, attempt int64, owner string) (refused bool, err error) {
	ttl := l.lr.ttlMicros()
	why = truncateUTF8(why, maxErrorMessage)
	return l.write(ctx, nil, fencedWrite{op: "release",
		stmt: func(ctx context.Context, ex idemdriver.Executor) (int64, error) {
			return ex.Exec(ctx, l.lr.ls.Restore, ReleasedClass, why, ttl, attempt, owner, l.Key, l.Attempt, l.Owner)
		},
		ours: func(r leaseRow) bool {
			return r.attempt == attempt && r.owner.String == owner && r.status == StatusInProgress &&
				r.errorClass.String == ReleasedClass && r.errorMessage.String == why
		}})
}

// holds reports whether r is at this lease's attempt and owner token.
func (l Lease) holds(r leaseRow) bool {
	return r.attempt == l.Attempt && r.owner.String == l.Owner
}

// fencedWrite is one write of a holder.
type fencedWrite struct {
	op string
	// stmt runs the write in ex and reports the rows it changed: 1, or 0
	// when the fence refused it.
	stmt func(ctx context.Context, ex idemdriver.Executor) (int64, error)
	// ours, if set, says whether the row, read back, carries this write:
	// asked when an earlier try's COMMIT was interrupted and a new try
	// finds the fence closed.
	ours func(r leaseRow) bool
	// strict bounds the tries by the lease's deadline, as the heartbeat's
	// renewals need (fn is to be cancelled when the lease ends): a try that
	// starts near or past it may run for one heartbeat interval. Otherwise
	// a try may run on for writeTryFloor past it, since a fenced write is
	// correct whenever it lands.
	strict bool
}

// writeTryFloor is how long a try of a write may run at least, when the
// lease's local deadline is near or past.
const writeTryFloor = 5 * time.Second

// errStopped ends the tries of a renewal whose heartbeat was stopped.
var errStopped = errors.New("idemsql: heartbeat stopped")

type tryResult int

const (
	tryDone      tryResult = iota // the write is in the database
	tryRefused                    // the fence refused it: the lease no longer holds the key
	tryAgain                      // nothing was written: try again
	tryUncertain                  // the COMMIT was interrupted: it may have gone through
	tryFailed                     // an error that another try would meet again
)

// write makes a fenced write in a short transaction of its own. It tries
// again after a failed BEGIN (nothing was sent: pgx's pools hand out a
// connection the server has closed, and its first statement fails), a
// broken connection, a transaction the database refused or ended, a lock or
// statement time-out, or a try that ran out of time, with a growing wait,
// for as long as the lease holds by its local clock; the first try always
// runs. An error another try would meet again (a constraint, a type) ends
// it at once. refused reports that the fence refused the write: the key is
// no longer this holder's.
//
// After a COMMIT whose fate is unknown (the connection broke during it),
// the next try finds the fence closed if that COMMIT went through; then the
// row, read back, tells, through w.ours, whether it carries this write.
func (l Lease) write(ctx context.Context, stop <-chan struct{}, w fencedWrite) (refused bool, err error) {
	lr := l.lr
	uncertain := false
	for try := 1; ; try++ {
		deadline := l.clock.deadline()
		floor := writeTryFloor
		if w.strict {
			floor = lr.cfg.lease.heartbeatEvery()
		}
		tryEnd := later(deadline, time.Now().Add(floor))
		tctx, cancel := context.WithDeadline(ctx, tryEnd)
		res, terr := l.try(tctx, w, uncertain)
		cancel()
		switch res {
		case tryDone:
			return false, nil
		case tryRefused:
			err := lostError(w.op, l.Key, l.Attempt)
			lr.observe(ctx, EventLeaseLost, l.Key, l.Attempt, err)
			return true, err
		case tryUncertain:
			uncertain = true
		}
		if cerr := ctx.Err(); cerr != nil {
			return false, withoutClass(terr, cerr)
		}
		if res == tryFailed {
			return false, terr
		}
		left := time.Until(l.clock.deadline())
		if left <= 0 {
			return false, l.ranOut(w, uncertain, terr)
		}
		t := time.NewTimer(min(backoff(try, lr.cfg.backoffBase, lr.cfg.backoffMax), left))
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return false, errStopped
		case <-ctx.Done():
			t.Stop()
			return false, withoutClass(terr, ctx.Err())
		}
	}
}

// try is one try of a fenced write.
func (l Lease) try(ctx context.Context, w fencedWrite, uncertain bool) (tryResult, error) {
	lr := l.lr
	tx, err := lr.begin(ctx)
	if err != nil {
		return tryAgain, lr.s.dbError(ctx, "begin", l.Key, err)
	}
	rollback := func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }
	n, err := w.stmt(ctx, tx)
	if err != nil {
		// Nothing more is sent on the transaction: roll it back.
		rollback()
		if lr.worthAnotherTry(ctx, err) {
			return tryAgain, lr.s.dbError(ctx, w.op, l.Key, err)
		}
		return tryFailed, lr.s.dbError(ctx, w.op, l.Key, err)
	}
	if n != 1 {
		if !uncertain || w.ours == nil {
			rollback()
			return tryRefused, nil
		}
		r, found, rerr := lr.read(ctx, tx, l.Key)
		switch {
		case rerr != nil:
			rollback()
			return tryUncertain, rerr
		case found && w.ours(r):
			return l.confirmed(ctx, tx)
		}
		rollback()
		return tryRefused, nil
	}
	if e := lr.s.commit(ctx, tx, w.op+": commit", l.Key, true); e != nil {
		// Refused, already over, or never sent, even when the try's own
		// time ran out meanwhile: not committed.
		if e.notCommitted {
			return tryAgain, e
		}
		return tryUncertain, e
	}
	return tryDone, nil
}

// confirmed ends the transaction that found an interrupted COMMIT of this
// holder's write gone through. Where the server shows a commit before it is
// durable, that COMMIT may still be waiting for its log flush: the
// transaction then writes the row, so that its own COMMIT returns only once
// the write it confirms is durable ([idemdriver.EarlyVisibility]).
func (l Lease) confirmed(ctx context.Context, tx leaseTx) (tryResult, error) {
	lr := l.lr
	if lr.ls.Touch == "" || !visibleBeforeDurable(tx) {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return tryDone, nil
	}
	if _, err := tx.Exec(ctx, lr.ls.Touch, l.Key); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return tryUncertain, lr.s.dbError(ctx, "confirm", l.Key, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return tryUncertain, lr.s.commitError(ctx, "confirm: commit", l.Key, err, true)
	}
	return tryDone, nil
}

// worthAnotherTry reports whether a statement's error is one that another
// transaction may well not meet: the try's own time ran out (its caller
// checks ctx's parent), the connection broke, the database refused, ended
// or aborted the transaction, a lock or statement time-out, or a driver
// error that says nothing was sent (pgconn's SafeToRetry).
func (lr *leaser) worthAnotherTry(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	switch lr.s.classify(err) {
	case idemdriver.KindRetryable, idemdriver.KindTxEnded, idemdriver.KindConnLost, idemdriver.KindTxAborted, idemdriver.KindLockTimeout, idemdriver.KindStatementTimeout:
		return true
	}
	var safe interface{ SafeToRetry() bool }
	return errors.As(err, &safe) && safe.SafeToRetry()
}

// ranOut is the error of a write that the lease's end stopped. Its class
// says what is known: the write is not in the database ([ErrLeaseLost]),
// or whether it is cannot be told ([ErrCommitUnknown]).
func (l Lease) ranOut(w fencedWrite, uncertain bool, last error) error {
	cause := last // the driver's error, without the class of the last try
	var e *Error
	if errors.As(last, &e) && e.Err != nil {
		cause = e.Err
	}
	if errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
		// The try's own time-out, not the caller's: no class of its own.
		cause = errors.New(cause.Error())
	}
	if uncertain && w.ours != nil {
		return &Error{Op: w.op + ": commit", Key: l.Key, Kind: ErrCommitUnknown,
			Err: fmt.Errorf("the lease ran out by the local clock before the fate of an interrupted COMMIT could be learned: %w", cause)}
	}
	return &Error{Op: w.op, Key: l.Key, Kind: ErrLeaseLost,
		Err: fmt.Errorf("the lease ran out by the local clock before the %s could be written: %w", w.op, cause)}
}

// withoutClass is err once ctx ended during it: the context's error is its
// class, none of the library's; the driver's error stays reachable.
func withoutClass(err, cerr error) error {
	var e *Error
	if !errors.As(err, &e) {
		if err == nil {
			return cerr
		}
		return errors.Join(err, cerr)
	}
	inner := e.Err
	if !errors.Is(inner, cerr) {
		inner = errors.Join(inner, cerr)
	}
	return &Error{Op: e.Op, Key: e.Key, Err: inner}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func lostError(op, key string, attempt int64) error {
	return &Error{Op: op, Key: key, Kind: ErrLeaseLost,
		Err: fmt.Errorf("attempt %d no longer holds the key", attempt)}
}

// runHeld runs fn under l and records its outcome.
//
// The outcome is recorded even if ctx ended meanwhile (the effect happened,
// or failed), with the tries of [Lease.Complete], for as long as the lease
// holds. What comes back says what happened to the record: a heartbeat
// that could not renew the lease (and so cancelled fn) matters no more once
// a fenced write went through, since then no other holder had the key.
func runHeld[T any](ctx context.Context, l Lease, fn func(context.Context, Claim) (T, error)) (Result[T], error) {
	var res Result[T]
	var v T
	var fnErr error
	lost, definite := l.hold(ctx, func(ctx context.Context) { v, fnErr = fn(ctx, l.Claim) })
	if definite { // the refused renewal reported the loss
		return res, joinErrs(lost, fnErr)
	}
	wctx := context.WithoutCancel(ctx)
	if fnErr != nil {
		if class, ok := IsPermanent(fnErr); ok && l.lr.cfg.recordFailures {
			msg := truncateUTF8(fnErr.Error(), maxErrorMessage)
			if err := l.Fail(wctx, class, msg); err != nil {
				return res, joinErrs(fnErr, err)
			}
			fe := &Error{Op: "fail", Key: l.Key, Kind: ErrFailureRecorded, Class: truncateUTF8(class, maxErrorClass), Message: msg, Err: fnErr}
			l.lr.observe(ctx, EventFailureRecorded, l.Key, l.Attempt, fe)
			return res, fe
		}
		if l.Attempt == 1 && errors.Is(fnErr, notbegun.Err) {
			// idemhttp.NotBegun, under a claim no one held before.
			if _, err := l.withdraw(wctx); err != nil {
				return res, joinErrs(fnErr, err)
			}
			return res, fnErr
		}
		if _, err := l.end(wctx, "fn failed: "+fnErr.Error()); err != nil {
			return res, joinErrs(fnErr, err)
		}
		if lost != nil {
			// fn was cancelled by a heartbeat that could not renew; the
			// release went through, so no one else held the key.
			return res, fmt.Errorf("%w (fn was cancelled: %s; its lease was then released)", fnErr, lost.Error())
		}
		return res, fnErr
	}
	encoded, err := encode(v, &l.lr.cfg, isInterface[T]())
	if err != nil {
		if ferr := l.Fail(wctx, UnencodableClass, err.Error()); ferr != nil {
			return res, alsoFailed(ferr, err)
		}
		return res, err
	}
	if _, err := l.complete(wctx, encoded); err != nil {
		return res, err
	}
	l.lr.observe(ctx, EventCompleted, l.Key, l.Attempt, nil)
	res.Value = v
	return res, nil
}

// alsoFailed is the error of a write (recording) made after an earlier
// error (first): the write's class, which says what became of the key, with
// first's message.
func alsoFailed(recording, first error) error {
	var e *Error
	if !errors.As(recording, &e) {
		return fmt.Errorf("%v; recording that failed: %w", first, recording)
	}
	return &Error{Op: e.Op, Key: e.Key, Kind: e.Kind, Err: fmt.Errorf("%v; recording that failed: %w", first, e.Err)}
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
