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
	"time"

	"github.com/idemsql/idemsql/idemdriver"
)

// leaser is one lease-mode call's view of a store.
type leaser struct {
	s     *core
	ls    idemdriver.LeaseStatements
	cfg   settings
	begin func(context.Context) (leaseTx, error)
	start time.Time // when the call began, for the observer's durations
	// beginHousekeeping begins the transactions of Sweep and Purge, at the
	// dialect's isolation level where it has one.
	beginHousekeeping func(context.Context) (leaseTx, error)
}

type leaseTx interface {
	idemdriver.Executor
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

func newLeaser[X any](st *Store[X], opts []Options) (*leaser, error) {
	if st == nil {
		return nil, errNoStore
	}
	s := &st.core
	ld, ok := s.dialect.(idemdriver.LeaseDialect)
	if !ok {
		return nil, fmt.Errorf("%w: dialect %s has no lease mode", ErrInvalidOption, s.dialect.Name())
	}
	lr := &leaser{s: s, ls: ld.LeaseStatements(s.table()), cfg: s.defaults, start: time.Now()}
	if err := applyOptions(&lr.cfg, opts, inLease); err != nil {
		return nil, err
	}
	if 2*lr.cfg.lease.heartbeatEvery() > lr.cfg.lease.leaseDuration() {
		return nil, fmt.Errorf("%w: heartbeat %v is more than half the lease %v",
			ErrInvalidOption, lr.cfg.lease.heartbeatEvery(), lr.cfg.lease.leaseDuration())
	}
	beginAt := func(level sql.IsolationLevel) func(context.Context) (leaseTx, error) {
		return func(ctx context.Context) (leaseTx, error) {
			tx, err := st.driver.Begin(ctx, level)
			if err != nil {
				return nil, err
			}
			return tx, nil
		}
	}
	lr.begin = beginAt(lr.cfg.isolation)
	lr.beginHousekeeping = lr.begin
	if lr.ls.Isolation != sql.LevelDefault {
		lr.beginHousekeeping = beginAt(lr.ls.Isolation)
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
// the start when the database asks for a retry or BEGIN failed (nothing was
// sent then: pgx's pools hand out connections the server has closed, and
// their first statement fails), at most [Options.MaxAttempts] times. f returns
// errors already wrapped by dbError, and whether it wrote: the COMMIT of a
// transaction that wrote nothing cannot leave anything unknown, so one
// that fails is retried too.
func (lr *leaser) inTx(ctx context.Context, op, key string, f func(ex idemdriver.Executor) (wrote bool, err error)) error {
	return lr.inTxWith(ctx, lr.begin, op, key, f)
}

// inHousekeepingTx is inTx for Sweep and Purge, whose transactions run at
// the dialect's isolation level.
func (lr *leaser) inHousekeepingTx(ctx context.Context, op string, f func(ex idemdriver.Executor) error) error {
	return lr.inTxWith(ctx, lr.beginHousekeeping, op, "", func(ex idemdriver.Executor) (bool, error) { return true, f(ex) })
}

func (lr *leaser) inTxWith(ctx context.Context, begin func(context.Context) (leaseTx, error), op, key string, f func(ex idemdriver.Executor) (bool, error)) error {
	for attempt := 1; ; attempt++ {
		err := lr.txOnce(ctx, begin, op, key, f)
		var e *Error
		again := errors.Is(err, ErrRetryable) || errors.As(err, &e) && e.Op == "begin"
		if err == nil || !again || attempt >= lr.cfg.maxAttempts {
			return err
		}
		if werr := sleep(ctx, backoff(attempt, lr.cfg.backoffBase, lr.cfg.backoffMax)); werr != nil {
			return withoutClass(err, werr)
		}
	}
}

func (lr *leaser) txOnce(ctx context.Context, begin func(context.Context) (leaseTx, error), op, key string, f func(ex idemdriver.Executor) (bool, error)) error {
	tx, err := begin(ctx)
	if err != nil {
		return lr.s.dbError(ctx, "begin", key, err)
	}
	wrote, err := f(tx)
	if err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if e := lr.s.commit(ctx, tx, op+": commit", key, wrote); e != nil {
		return e
	}
	return nil
}

// leaseRow is a row as lease mode reads it.
type leaseRow struct {
	storedRow
	live       bool // lease_until is in the future
	generation int64
}

func (lr *leaser) read(ctx context.Context, ex idemdriver.Executor, key string) (r leaseRow, found bool, err error) {
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

// replays reports whether the row answers a call with fingerprint fp by
// a replay: an outcome recorded and kept.
func (r *leaseRow) replays(fp []byte) bool {
	return r.status != StatusInProgress && !r.expired && bytes.Equal(r.fingerprint, fp)
}

// lease is the Lease of a claim whose lease_until was set by a statement
// sent just after since.
func (lr *leaser) lease(key string, attempt, generation int64, token string, since time.Time) Lease {
	return Lease{Claim: Claim{Key: key, Attempt: attempt, Owner: token,
		DownstreamKey: key + ":" + strconv.FormatInt(generation, 10),
		clock:         newLeaseClock(since, lr.cfg.lease.leaseDuration())}, Held: true, lr: lr}
}

// maxLeaseContention bounds how often a call without [Options.LeaseWait]
// retries after losing a race for the row (another caller claimed,
// re-claimed or is taking it over at the same moment) before it answers
// ErrInProgress.
const maxLeaseContention = 20

// acquire claims key, re-claims it after its retention ran out, or takes it
// over from a holder whose lease ran out. When the key completed or failed
// it returns the row for a replay instead.
func (lr *leaser) acquire(ctx context.Context, key string) (held bool, l Lease, row storedRow, err error) {
	cfg := &lr.cfg
	contended := 0
	for {
		if err := ctx.Err(); err != nil {
			return false, l, row, &Error{Op: "claim", Key: key, Err: err} // the context's class alone
		}
		var r leaseRow
		var found bool
		if err := lr.inTx(ctx, "read", key, func(ex idemdriver.Executor) (wrote bool, err error) {
			r, found, err = lr.read(ctx, ex, key)
			if err != nil || !found || !r.replays(cfg.fingerprint) || lr.ls.Touch == "" || !visibleBeforeDurable(ex) {
				return false, err
			}
			// The replay must not answer before the outcome it read is
			// durable: with a write, this transaction's COMMIT waits for it.
			// The write changes nothing a retry minds, so a COMMIT of it
			// that broke is still worth retrying (wrote stays false).
			n, err := ex.Exec(ctx, lr.ls.Touch, key)
			if err != nil {
				return false, lr.s.dbError(ctx, "read", key, err)
			}
			found = n == 1
			return false, nil
		}); err != nil {
			return false, l, row, err
		}
		var got bool
		switch {
		case !found:
			got, l, err = lr.tryClaim(ctx, key)
			if got {
				lr.observe(ctx, EventClaimed, key, l.Attempt, nil)
			}
		case r.expired && r.status != StatusInProgress:
			// A recorded outcome past its retention: the key is free. An
			// in_progress row never is, expired or not: it may stand for an
			// effect that happened, and is taken over below instead, under
			// the same downstream key.
			got, l, err = lr.tryReclaim(ctx, key, r.attempt)
			if got {
				lr.observe(ctx, EventClaimed, key, l.Attempt, nil)
			}
		case !bytes.Equal(r.fingerprint, cfg.fingerprint):
			e := &Error{Op: "claim", Key: key, Kind: ErrFingerprintMismatch}
			lr.observe(ctx, EventFingerprintMismatch, key, r.attempt, e)
			return false, l, row, e
		case r.status != StatusInProgress:
			return false, l, r.storedRow, nil
		case !r.leased:
			// A committed claim without a lease is not lease mode's: an
			// atomic-mode claim whose transaction committed without an
			// outcome. Its effects may have committed; Sweep resolves it.
			e := &Error{Op: "claim", Key: key, Kind: ErrAbandoned,
				Err: fmt.Errorf("claimed at attempt %d by %s and committed without a lease or an outcome", r.attempt, r.owner.String)}
			lr.observe(ctx, EventAbandoned, key, r.attempt, e)
			return false, l, row, e
		case !r.live:
			got, l, err = lr.tryTakeOver(ctx, key, r)
			if got {
				lr.observe(ctx, EventTakenOver, key, l.Attempt, nil)
			}
		default: // held by a live lease
			ipErr := &Error{Op: "claim", Key: key, Kind: ErrInProgress,
				Err: fmt.Errorf("held by a lease at attempt %d (owner %s)", r.attempt, r.owner.String)}
			if cfg.lease.poll <= 0 {
				lr.observe(ctx, EventInProgress, key, r.attempt, ipErr)
				return false, l, row, ipErr
			}
			if werr := sleep(ctx, cfg.lease.poll); werr != nil {
				// The wait ended with ctx: its class is ctx's error.
				return false, l, row, withoutClass(ipErr, werr)
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
			return false, l, row, &Error{Op: "claim", Key: key, Kind: ErrInProgress,
				Err: errors.New("the key is being claimed by another caller")}
		}
		if werr := sleep(ctx, backoff(min(contended, 4), 5*time.Millisecond, 50*time.Millisecond)); werr != nil {
			return false, l, row, &Error{Op: "claim", Key: key, Err: werr}
		}
	}
}

func (lr *leaser) tryClaim(ctx context.Context, key string) (got bool, l Lease, err error) {
	token := lr.newToken()
	err = lr.inTx(ctx, "claim", key, func(ex idemdriver.Executor) (wrote bool, err error) {
		got = false
		since := time.Now() // after BEGIN, which may wait for the database's lock
		n, err := ex.Exec(ctx, lr.ls.Claim, key, lr.cfg.fingerprint, token, lr.leaseMicros(), lr.ttlMicros())
		if err != nil {
			if lr.s.dialect.Classify(err) != idemdriver.KindDuplicateKey {
				return false, lr.s.dbError(ctx, "claim", key, err)
			}
			n = 0
		}
		if n != 1 {
			return false, nil
		}
		r, found, err := lr.read(ctx, ex, key)
		if err != nil {
			return true, err
		}
		if !found || r.owner.String != token {
			return true, &Error{Op: "claim", Key: key, Kind: ErrUnexpectedState, Err: errors.New("claimed row not found")}
		}
		got, l = true, lr.lease(key, r.attempt, r.generation, token, since)
		return true, nil
	})
	return got, l, err
}

func (lr *leaser) tryReclaim(ctx context.Context, key string, attempt int64) (got bool, l Lease, err error) {
	token := lr.newToken()
	err = lr.inTx(ctx, "reclaim", key, func(ex idemdriver.Executor) (wrote bool, err error) {
		got = false
		since := time.Now()
		n, err := ex.Exec(ctx, lr.ls.Reclaim, lr.cfg.fingerprint, token, lr.leaseMicros(), lr.ttlMicros(), key, attempt)
		if err != nil {
			return false, lr.s.dbError(ctx, "reclaim", key, err)
		}
		if n != 1 {
			return false, nil
		}
		r, found, err := lr.read(ctx, ex, key)
		if err != nil {
			return true, err
		}
		if !found || r.attempt != attempt+1 || r.owner.String != token {
			return true, &Error{Op: "reclaim", Key: key, Kind: ErrUnexpectedState, Err: errors.New("re-claimed row changed")}
		}
		got, l = true, lr.lease(key, r.attempt, r.generation, token, since)
		return true, nil
	})
	return got, l, err
}

// tryTakeOver is the one atomic step that moves a stale claim to this
// caller. The UPDATE re-checks attempt and lease_until itself; LockStale,
// where the dialect has SKIP LOCKED, only lets contenders give up at once
// instead of queueing behind the winner.
func (lr *leaser) tryTakeOver(ctx context.Context, key string, r leaseRow) (got bool, l Lease, err error) {
	var since time.Time
	token := lr.newToken()
	err = lr.inTx(ctx, "take over", key, func(ex idemdriver.Executor) (wrote bool, err error) {
		got = false
		if lr.ls.LockStale != "" {
			var a int64
			err := ex.QueryRow(ctx, lr.ls.LockStale, key, r.attempt, r.owner.String).Scan(&a)
			if errors.Is(err, sql.ErrNoRows) {
				return false, nil // another transaction has it, or it changed
			}
			if err != nil {
				return false, lr.s.dbError(ctx, "take over", key, err)
			}
		}
		us := lr.leaseMicros()
		since = time.Now()
		n, err := ex.Exec(ctx, lr.ls.TakeOver, token, us, us, key, r.attempt, r.owner.String)
		if err != nil {
			return false, lr.s.dbError(ctx, "take over", key, err)
		}
		got = n == 1
		return got, nil
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
// its own, a claim on key: an in_progress row with lease_until = the
// database's clock + the lease ([Options.Lease]), an owner token unique to this
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
//     [Options.LeaseWait]). [ErrFingerprintMismatch]: another request used the
//     key. A recorded failure ([ErrFailureRecorded]): a failure recorded earlier (for a stale claim
//     given up by [Sweep], Class is [AbandonedClass]). [ErrAbandoned]: the
//     key holds a claim committed without a lease or an outcome (an
//     atomic-mode claim whose transaction committed anyway), which is never
//     taken over; [Sweep] resolves it.
//
// Options: [Options.Lease], [Options.LeaseWait], [Options.TTL],
// [Options.Fingerprint], [Options.Codec], [Options.MaxResultSize],
// [Options.MaxAttempts], [Options.Backoff], [Options.ResultType].
func ClaimLease[X any](ctx context.Context, s *Store[X], key string, opts ...Options) (Lease, error) {
	if err := ValidateKey(key); err != nil {
		return Lease{}, err
	}
	lr, err := newLeaser(s, opts)
	if err != nil {
		return Lease{}, err
	}
	held, l, row, err := lr.acquire(ctx, key)
	if err != nil {
		return Lease{}, err
	}
	if held {
		return l, nil
	}
	if _, err := replay[struct{}](lr.s, key, row, &settings{fingerprint: lr.cfg.fingerprint, codec: skipCodec{}}); err != nil {
		return Lease{}, err
	}
	return Lease{Result: row.result}, nil
}

// skipCodec lets ClaimLease reuse replay's checks without decoding.
type skipCodec struct{}

func (skipCodec) Marshal(any) ([]byte, error) { return nil, nil }
func (skipCodec) Unmarshal([]byte, any) error { return nil }

// observe reports a lease-mode event of this call.
func (lr *leaser) observe(ctx context.Context, kind string, key string, attempt int64, err error) {
	lr.s.observe(ctx, kind, "lease", key, attempt, lr.start, err)
}
