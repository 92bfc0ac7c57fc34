package idemsql

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// LeaseInfo describes a claim held in lease mode: what fn sees in
// [RunExternal] and a [SweepHandler] sees in [Stale]. It is data only; the
// library records the outcome from fn's return values.
type LeaseInfo struct {
	Key string
	// Attempt is 1 on the first claim and grows by one on every takeover and
	// every new claim after the key's retention ran out.
	Attempt int64
	// Owner is what the owner column holds for this holder: the store's
	// owner (host/pid/id) and a token unique to this claim. With Attempt it
	// fences every write of the holder.
	Owner string
	// DownstreamKey is the key to hand to the external system's own
	// idempotency mechanism (Stripe's Idempotency-Key header, an SMTP
	// Message-ID). It is the same for every holder of one claim: across
	// takeovers, and across retries after fn failed or the lease was
	// released, so a repeated call is deduplicated by the downstream
	// system. It changes only when the key is claimed anew after a recorded
	// outcome (completed or failed) has passed its retention. Its form is
	// Key + ":" + the claim's creation time in unix milliseconds (at most
	// [MaxKeyLen]+21 bytes); hash it if the downstream system takes shorter
	// keys.
	DownstreamKey string
}

// Lease is a claim held in lease mode, as [ClaimLease] returns it; its
// methods record the outcome. Every write through a Lease is fenced by its
// attempt and its per-claim owner token: once the key was taken over,
// resolved or recorded, they change nothing and return [ErrLeaseLost].
type Lease struct {
	LeaseInfo

	lr    *leaser
	since time.Time // local monotonic time before the lease was taken: the heartbeat's conservative deadline starts here
}

// Claim is the outcome of [ClaimLease].
type Claim struct {
	// Held is true when this call holds the key: do the effect, then record
	// the outcome with Lease.Complete, Lease.Fail or Lease.Release.
	Held  bool
	Lease Lease
	// Result is the stored, encoded result when the key completed earlier
	// (Held false). Decode it with the codec it was stored with (JSON by
	// default).
	Result []byte
}

// leaser is one lease-mode call's view of a store and a pool.
type leaser struct {
	s     *Store
	ls    LeaseStatements
	cfg   settings
	begin func(context.Context) (leaseTx, error)
}

type leaseTx interface {
	Executor
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

func newLeaser[X any](db DB[X], opts []Option) (*leaser, error) {
	if db.store == nil || db.pool == nil {
		return nil, errUnboundDB
	}
	s := db.store
	ld, ok := s.dialect.(LeaseDialect)
	if !ok {
		return nil, fmt.Errorf("%w: dialect %s has no lease mode", ErrInvalidOption, s.dialect.Name())
	}
	lr := &leaser{s: s, ls: ld.LeaseStatements(s.table()), cfg: s.defaults}
	if err := applyOptions(&lr.cfg, opts, inLease); err != nil {
		return nil, err
	}
	if 2*lr.cfg.lease.heartbeatEvery() > lr.cfg.lease.leaseDuration() {
		return nil, fmt.Errorf("%w: heartbeat %v is more than half the lease %v",
			ErrInvalidOption, lr.cfg.lease.heartbeatEvery(), lr.cfg.lease.leaseDuration())
	}
	pool := db.pool
	lr.begin = func(ctx context.Context) (leaseTx, error) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return nil, err
		}
		return tx, nil
	}
	return lr, nil
}

func (lr *leaser) leaseMicros() int64 { return lr.cfg.lease.leaseDuration().Microseconds() }

// ttlMicros is the retention of a claim and of its outcome: never shorter
// than the lease.
func (lr *leaser) ttlMicros() int64 {
	return max(lr.cfg.ttl, lr.cfg.lease.leaseDuration()).Microseconds()
}

// newToken is the owner column of one claim: the store's owner and a
// random suffix, so that no two claims of a key, ever, share it.
func (lr *leaser) newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return lr.s.owner + "/" + hex.EncodeToString(b[:])
}

// inTx runs f in a short transaction of its own and commits it, again from
// the start when the database asks for a retry. f returns errors already
// wrapped by dbError.
func (lr *leaser) inTx(ctx context.Context, op, key string, f func(ex Executor) error) error {
	for attempt := 1; ; attempt++ {
		err := lr.txOnce(ctx, op, key, f)
		if err == nil || !errors.Is(err, ErrRetryable) || attempt >= lr.cfg.maxAttempts {
			return err
		}
		if werr := sleep(ctx, backoff(attempt, lr.cfg.backoffBase, lr.cfg.backoffMax)); werr != nil {
			return errors.Join(err, werr)
		}
	}
}

func (lr *leaser) txOnce(ctx context.Context, op, key string, f func(ex Executor) error) error {
	tx, err := lr.begin(ctx)
	if err != nil {
		return lr.s.dbError(ctx, "begin", key, err)
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return lr.s.dbError(ctx, op+": commit", key, err)
	}
	return nil
}

// leaseRow is a row as lease mode reads it.
type leaseRow struct {
	storedRow
	live       bool // lease_until is in the future
	generation int64
}

func (lr *leaser) read(ctx context.Context, ex Executor, key string) (r leaseRow, found bool, err error) {
	err = ex.QueryRow(ctx, lr.ls.Read, key).Scan(&r.status, &r.fingerprint, &r.result, &r.attempt, &r.owner,
		&r.expired, &r.leased, &r.live, &r.generation, &r.errorClass, &r.errorMessage)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, lr.s.dbError(ctx, "read", key, err)
	}
	return r, true, nil
}

func (lr *leaser) lease(key string, attempt, generation int64, token string, since time.Time) Lease {
	return Lease{LeaseInfo: LeaseInfo{Key: key, Attempt: attempt, Owner: token,
		DownstreamKey: key + ":" + strconv.FormatInt(generation, 10)}, lr: lr, since: since}
}

func lostError(op, key string, attempt int64) error {
	return &Error{Op: op, Key: key, Kind: ErrLeaseLost,
		Err: fmt.Errorf("attempt %d no longer holds the key", attempt)}
}

// maxLeaseContention bounds how often a call without [WithLeaseWait] retries
// after losing a race for the row (another caller claimed, re-claimed or is
// taking it over at the same moment) before it answers ErrInProgress.
const maxLeaseContention = 20

// acquire claims key, re-claims it after its retention ran out, or takes it
// over from a holder whose lease ran out. When the key completed or failed
// it returns the row for a replay instead.
func (lr *leaser) acquire(ctx context.Context, key string) (held bool, l Lease, row storedRow, err error) {
	cfg := &lr.cfg
	contended := 0
	for {
		if err := ctx.Err(); err != nil {
			return false, l, row, fmt.Errorf("idemsql: %q not claimed: %w", key, err)
		}
		var r leaseRow
		var found bool
		if err := lr.inTx(ctx, "read", key, func(ex Executor) (err error) {
			r, found, err = lr.read(ctx, ex, key)
			return err
		}); err != nil {
			return false, l, row, err
		}
		var got bool
		switch {
		case !found:
			got, l, err = lr.tryClaim(ctx, key)
		case r.expired && r.status != StatusInProgress:
			// A recorded outcome past its retention: the key is free. An
			// in_progress row never is, expired or not: it may stand for an
			// effect that happened, and is taken over below instead, under
			// the same downstream key.
			got, l, err = lr.tryReclaim(ctx, key, r.attempt)
		case !bytes.Equal(r.fingerprint, cfg.fingerprint):
			return false, l, row, fmt.Errorf("%w: key %q", ErrFingerprintMismatch, key)
		case r.status != StatusInProgress:
			return false, l, r.storedRow, nil
		case r.leased && !r.live:
			got, l, err = lr.tryTakeOver(ctx, key, r)
		default: // held: a live lease, or a claim without one
			ipErr := fmt.Errorf("%w: key %q (attempt %d, owner %s)", ErrInProgress, key, r.attempt, r.owner.String)
			if cfg.lease.poll <= 0 {
				return false, l, row, ipErr
			}
			if werr := sleep(ctx, cfg.lease.poll); werr != nil {
				return false, l, row, errors.Join(ipErr, werr)
			}
			continue
		}
		if err != nil {
			return false, l, row, err
		}
		if got {
			return true, l, row, nil
		}
		contended++
		if contended >= maxLeaseContention && cfg.lease.poll <= 0 {
			return false, l, row, fmt.Errorf("%w: key %q is being claimed by another caller", ErrInProgress, key)
		}
		if werr := sleep(ctx, backoff(min(contended, 4), 5*time.Millisecond, 50*time.Millisecond)); werr != nil {
			return false, l, row, fmt.Errorf("idemsql: %q not claimed: %w", key, werr)
		}
	}
}

func (lr *leaser) tryClaim(ctx context.Context, key string) (got bool, l Lease, err error) {
	since := time.Now()
	token := lr.newToken()
	err = lr.inTx(ctx, "claim", key, func(ex Executor) error {
		got = false
		n, err := ex.Exec(ctx, lr.ls.Claim, key, lr.cfg.fingerprint, token, lr.leaseMicros(), lr.ttlMicros())
		if err != nil {
			if lr.s.dialect.Classify(err) != KindDuplicateKey {
				return lr.s.dbError(ctx, "claim", key, err)
			}
			n = 0
		}
		if n != 1 {
			return nil
		}
		r, found, err := lr.read(ctx, ex, key)
		if err != nil {
			return err
		}
		if !found || r.owner.String != token {
			return &Error{Op: "claim", Key: key, Kind: ErrUnexpectedState, Err: errors.New("claimed row not found")}
		}
		got, l = true, lr.lease(key, r.attempt, r.generation, token, since)
		return nil
	})
	return got, l, err
}

func (lr *leaser) tryReclaim(ctx context.Context, key string, attempt int64) (got bool, l Lease, err error) {
	since := time.Now()
	token := lr.newToken()
	err = lr.inTx(ctx, "reclaim", key, func(ex Executor) error {
		got = false
		n, err := ex.Exec(ctx, lr.ls.Reclaim, lr.cfg.fingerprint, token, lr.leaseMicros(), lr.ttlMicros(), key, attempt)
		if err != nil {
			return lr.s.dbError(ctx, "reclaim", key, err)
		}
		if n != 1 {
			return nil
		}
		r, found, err := lr.read(ctx, ex, key)
		if err != nil {
			return err
		}
		if !found || r.attempt != attempt+1 || r.owner.String != token {
			return &Error{Op: "reclaim", Key: key, Kind: ErrUnexpectedState, Err: errors.New("re-claimed row changed")}
		}
		got, l = true, lr.lease(key, r.attempt, r.generation, token, since)
		return nil
	})
	return got, l, err
}

// tryTakeOver is the one atomic step that moves a stale claim to this
// caller. The UPDATE re-checks attempt and lease_until itself; LockStale,
// where the dialect has SKIP LOCKED, only lets contenders give up at once
// instead of queueing behind the winner.
func (lr *leaser) tryTakeOver(ctx context.Context, key string, r leaseRow) (got bool, l Lease, err error) {
	since := time.Now()
	token := lr.newToken()
	err = lr.inTx(ctx, "take over", key, func(ex Executor) error {
		got = false
		if lr.ls.LockStale != "" {
			var a int64
			err := ex.QueryRow(ctx, lr.ls.LockStale, key, r.attempt, r.owner.String).Scan(&a)
			if errors.Is(err, sql.ErrNoRows) {
				return nil // another transaction has it, or it changed
			}
			if err != nil {
				return lr.s.dbError(ctx, "take over", key, err)
			}
		}
		us := lr.leaseMicros()
		n, err := ex.Exec(ctx, lr.ls.TakeOver, token, us, us, key, r.attempt, r.owner.String)
		if err != nil {
			return lr.s.dbError(ctx, "take over", key, err)
		}
		got = n == 1
		return nil
	})
	if got {
		// A takeover keeps created_at, hence the generation; the UPDATE
		// matched the attempt and owner token read together with it, so it
		// took over exactly the claim whose generation was read.
		l = lr.lease(key, r.attempt+1, r.generation, token, since)
	}
	return got, l, err
}

// ClaimLease is the first step of lease mode for callers who drive the steps
// themselves; most use [RunExternal]. It commits, in a short transaction of
// its own on db, a claim on key: an in_progress row with lease_until = the
// database's clock + the lease ([WithLease]), an owner token unique to this
// claim and an attempt number. A key whose holder's lease ran out (or was
// released) is taken over (attempt+1, same downstream key); a key whose
// recorded outcome passed its retention is claimed anew.
//
// Then:
//   - Held: do the effect, passing Lease.DownstreamKey to the external
//     system; keep the lease with Lease.Renew more often than it runs out;
//     record the outcome with Lease.Complete, Lease.Fail or Lease.Release.
//   - Not held, nil error: the key completed earlier; Result is its stored
//     result.
//   - [ErrInProgress]: another holder's lease is live (unless
//     [WithLeaseWait]). [ErrFingerprintMismatch]: another request used the
//     key. A [*FailureError]: a failure recorded earlier (for a stale claim
//     given up by [Sweep], Class is [AbandonedClass]).
//
// Options: [WithLease], [WithLeaseWait], [WithTTL], [WithFingerprint],
// [WithCodec], [WithMaxResultSize], [WithMaxAttempts], [WithBackoff].
func ClaimLease[X any](ctx context.Context, db DB[X], key string, opts ...Option) (Claim, error) {
	if err := ValidateKey(key); err != nil {
		return Claim{}, err
	}
	lr, err := newLeaser(db, opts)
	if err != nil {
		return Claim{}, err
	}
	held, l, row, err := lr.acquire(ctx, key)
	if err != nil {
		return Claim{}, err
	}
	if held {
		return Claim{Held: true, Lease: l}, nil
	}
	if _, err := replay[struct{}](lr.s, key, row, &settings{fingerprint: lr.cfg.fingerprint, codec: skipCodec{}}); err != nil {
		return Claim{}, err
	}
	return Claim{Result: row.result}, nil
}

// skipCodec lets ClaimLease reuse replay's checks without decoding.
type skipCodec struct{}

func (skipCodec) Marshal(any) ([]byte, error) { return nil, nil }
func (skipCodec) Unmarshal([]byte, any) error { return nil }

var errUnboundLease = fmt.Errorf("%w: Lease was not made by ClaimLease", ErrInvalidOption)

// Renew extends the lease to the database's clock + the lease duration. It
// returns [ErrLeaseLost] when the lease no longer holds the key.
func (l Lease) Renew(ctx context.Context) error {
	if l.lr == nil {
		return errUnboundLease
	}
	us := l.lr.leaseMicros()
	return l.finish(ctx, "renew", func(ex Executor) (int64, error) {
		return ex.Exec(ctx, l.lr.ls.Renew, us, us, l.Key, l.Attempt, l.Owner)
	})
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
// returns [ErrLeaseLost] when the lease no longer holds the key.
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

// hold runs fn while a heartbeat renews the lease every heartbeat interval.
// When a renewal finds the lease gone (definite), or no renewal succeeded
// for a whole lease by the local monotonic clock (the database may be
// unreachable), fn's context is cancelled with the cause, an error that
// matches [ErrLeaseLost]. The local deadline starts at l.since, a moment
// before the lease was taken, or at the start of the last successful
// renewal: it ends before the database's.
//
// The heartbeat stops when fn returns, when ctx ends, and when fn panics:
// then the panic goes on up and the lease simply runs out, so that the key
// is taken over later (fn may have done the effect before panicking).
func (l Lease) hold(ctx context.Context, fn func(ctx context.Context)) (lost error, definite bool) {
	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	dur, every := l.lr.cfg.lease.leaseDuration(), l.lr.cfg.lease.heartbeatEvery()
	stop := make(chan struct{})
	var hbLost error
	var hbDefinite bool
	var wg sync.WaitGroup
	var once sync.Once
	stopHeartbeat := func() { once.Do(func() { close(stop); wg.Wait() }) }
	defer stopHeartbeat()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		renewed := l.since
		for {
			select {
			case <-stop:
				return
			case <-hctx.Done():
				return
			case <-t.C:
			}
			at := time.Now()
			left := dur - at.Sub(renewed)
			var err error
			if left > 0 {
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), left)
				err = l.Renew(rctx)
				rcancel()
				if err == nil {
					renewed = at
					continue
				}
				if errors.Is(err, ErrLeaseLost) {
					hbLost, hbDefinite = err, true
					cancel(err)
					return
				}
			}
			if time.Since(renewed) >= dur {
				if err == nil {
					err = errors.New("the heartbeat ran late")
				}
				hbLost = &Error{Op: "renew", Key: l.Key, Kind: ErrLeaseLost,
					Err: fmt.Errorf("no renewal succeeded for a whole lease (%v): %w", dur, err)}
				cancel(hbLost)
				return
			}
		}
	}()
	fn(hctx)
	stopHeartbeat()
	return hbLost, hbDefinite
}

// RunExternal runs fn at most once at a time per key, for an effect outside
// the database (a payment API, an e-mail), and records its result so that
// every later call with the key replays it. Like [Run] it takes a pool, not
// a transaction: the claim and the outcome are each committed in a short
// transaction of their own, and fn runs outside any transaction.
//
// It claims the key (see [ClaimLease]) and commits the claim before fn runs:
// an in_progress row with a lease from the database's clock. While fn runs,
// a heartbeat renews the lease every third of it ([WithLease],
// [WithHeartbeat]); if a renewal finds the key taken over, or none succeeds
// for a whole lease, fn's context is cancelled with a cause matching
// [ErrLeaseLost] (see [context.Cause]). When fn returns, its outcome is
// recorded under the same fence, in another short transaction.
//
//   - A duplicate of a completed key replays: Result.Replayed, fn does not
//     run. One of a key held by a live lease gets [ErrInProgress], or waits
//     with [WithLeaseWait].
//   - If the holder dies, its lease runs out and the next call takes the key
//     over (attempt+1, same DownstreamKey) and runs fn; so does [Sweep].
//     Two contenders never both win.
//   - A holder that lost its lease (paused past it, cut off from the
//     database) records nothing and gets an error matching [ErrLeaseLost],
//     joined with fn's error if any.
//   - If fn returns an error, RunExternal returns it and ends the lease
//     without an outcome: the next call takes the key over at once and runs
//     fn again, with the same DownstreamKey, so a downstream system that
//     saw the first call (a time-out after the charge) deduplicates the
//     second. With [WithRecordedFailures], an error made with [Permanent] is
//     recorded instead and replayed to every duplicate.
//   - If fn succeeded but its result cannot be encoded ([ErrEncode],
//     [ErrResultTooLarge]), the effect happened: the key is recorded as
//     failed with class [UnencodableClass] and the encoding error returned.
//   - If fn panics, the heartbeat stops, nothing is recorded and the panic
//     goes on; the lease runs out and the key is taken over later.
//
// What it cannot promise: the external effect may happen twice, when a
// holder dies after the effect and before recording it, and a takeover
// repeats it. Pass l.DownstreamKey to the external system's idempotency key
// (Stripe's Idempotency-Key header): it is the same for every run of one
// claim, so the external system absorbs the repeat.
//
// Options: those of [ClaimLease], and [WithHeartbeat], [WithOnDuplicate],
// [WithRecordedFailures].
func RunExternal[X, T any](ctx context.Context, db DB[X], key string, fn func(ctx context.Context, l LeaseInfo) (T, error), opts ...Option) (Result[T], error) {
	var res Result[T]
	if err := ValidateKey(key); err != nil {
		return res, err
	}
	if fn == nil {
		return res, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	lr, err := newLeaser(db, opts)
	if err != nil {
		return res, err
	}
	held, l, row, err := lr.acquire(ctx, key)
	if err != nil {
		return res, err
	}
	if !held {
		return replay[T](lr.s, key, row, &lr.cfg)
	}
	return runHeld(ctx, l, fn)
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
