package idemsql

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"
)

// Lease mode guards effects outside the database: an HTTP call to a payment
// provider, an e-mail. The claim cannot share a transaction with such an
// effect, so it is committed first, as an in_progress row with a lease
// deadline taken from the database's clock; the effect runs; the outcome is
// recorded. See [RunExternal].

// ErrLeaseLost: the caller's lease on a key no longer holds it: another
// caller took the key over (or a sweeper resolved it) after the lease ran
// out, or the holder's outcome was already recorded. Nothing was recorded by
// this call: every write of a holder is fenced by its attempt and its
// per-claim owner token. The external effect may have happened; the new
// holder, calling the downstream system with the same
// [Claim.DownstreamKey], gets that system's own replay.
var ErrLeaseLost = errors.New("idemsql: lease lost")

// Error classes lease mode records.
const (
	// AbandonedClass is the error_class [Sweep] records for a stale claim it
	// gives up on (no handler, or a handler that returns
	// [ResolveAbandoned]). Duplicates of the key then get a failure
	// ([ErrFailureRecorded]) of this class. It is not an outcome of fn: once its
	// retention has run out, the next claim of the key keeps the abandoned
	// claim's [Claim.DownstreamKey].
	AbandonedClass = "abandoned"
	// UnencodableClass is the error_class recorded when fn succeeded but its
	// result could not be encoded ([ErrEncode], [ErrResultTooLarge]). The
	// effect happened and must not run again, so the key is recorded as failed:
	// duplicates get a recorded failure ([ErrFailureRecorded]) with this class.
	UnencodableClass = "unencodable_result"
	// ReleasedClass marks, in error_class, an in_progress row whose holder
	// ended its lease on purpose (fn failed, [Lease.Release],
	// [ResolveReleased]) instead of recording an outcome. The next call
	// takes the key over at once, with the same downstream key. error_message
	// says why, and lease_until holds the end of the claim's retention.
	// [Sweep] leaves such a row to callers until its retention has run
	// out, unless asked to hand it to its handler at once
	// ([Options.SweepReleased]).
	ReleasedClass = "released"
)

// Lease-mode defaults.
const (
	// DefaultLease is how long a claim in lease mode is held without a
	// heartbeat. The heartbeat renews it every third of that.
	DefaultLease = 30 * time.Second
	// DefaultBatchSize is how many rows [Sweep] and [Purge] handle per
	// transaction.
	DefaultBatchSize = 100
)

// Bounds of the lease-mode options.
const (
	MinLease = 10 * time.Millisecond
	MaxLease = 24 * time.Hour
)

type leaseSettings struct {
	duration  time.Duration // 0: DefaultLease
	heartbeat time.Duration // 0: duration / 3
	poll      time.Duration // > 0: wait for a live holder, polling this often
	batch     int           // 0: DefaultBatchSize
	result    reflect.Type  // nil: any; else the keys' result type (Options.ResultType)
	released  bool          // Sweep takes released claims at once (Options.SweepReleased)
}

func (l leaseSettings) leaseDuration() time.Duration {
	if l.duration == 0 {
		return DefaultLease
	}
	return l.duration
}

func (l leaseSettings) heartbeatEvery() time.Duration {
	if l.heartbeat == 0 {
		return l.leaseDuration() / 3
	}
	return l.heartbeat
}

func (l leaseSettings) batchSize() int {
	if l.batch == 0 {
		return DefaultBatchSize
	}
	return l.batch
}

// apply applies the lease-mode fields of o.
func (l *leaseSettings) apply(o Options) error {
	if err := cmp.Or(
		inRange("Lease", o.Lease, MinLease, MaxLease, &l.duration),
		inRange("Heartbeat", o.Heartbeat, time.Millisecond, MaxLease, &l.heartbeat),
		inRange("LeaseWait", o.LeaseWait, time.Millisecond, time.Minute, &l.poll),
		inRange("BatchSize", o.BatchSize, 1, 10000, &l.batch),
	); err != nil {
		return err
	}
	if o.ResultType != nil {
		l.result = o.ResultType
	}
	l.released = l.released || o.SweepReleased
	return nil
}

// checkResult refuses a result that Options.ResultType says the key's readers
// cannot decode.
func (l leaseSettings) checkResult(result any) error {
	if l.result == nil {
		return nil
	}
	t := reflect.TypeOf(result)
	if t == l.result || t != nil && t.Kind() == reflect.Pointer && t.Elem() == l.result && !reflect.ValueOf(result).IsNil() {
		return nil
	}
	return fmt.Errorf("%w: a result of type %v where the key's results are %v (Options.ResultType)", ErrEncode, t, l.result)
}

// Claim describes a claim held in lease mode: what fn sees in
// [RunExternal] and a [SweepHandler] sees in [Stale]. It is data only; the
// library records the outcome from fn's return values.
type Claim struct {
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
	// system. It changes only when the key is claimed anew after an outcome
	// (completed, or failed by fn or with [UnencodableClass]) has passed its
	// retention, or after [Forget] deleted the key's row. A claim that [Sweep] abandoned ([AbandonedClass]) is not an
	// outcome: it may hide an effect the dead holder performed, so the key's
	// next claim, after the abandoned row's retention, keeps the downstream
	// key and the downstream system can still absorb a repeat. Its form is
	// Key + ":" + the claim's creation time in unix milliseconds (at most
	// [MaxKeyLen]+21 bytes); hash it if the downstream system takes shorter
	// keys.
	DownstreamKey string
	// Step is the name of the step that fn runs, in a [Step] of
	// [RunSteps]: DownstreamKey is then the claim's + "/" + Step, the same
	// for every run of the step. PriorRuns counts the runs of that step
	// begun before this one (by holders that died, or failed with a
	// retryable error): the effect may have happened already.
	Step      string
	PriorRuns int

	clock *leaseClock
}

// Deadline is when the lease ends at the latest unless it is renewed, by
// this process's monotonic clock: the moment before the statement that set
// or last renewed the lease's end in the database was sent, plus the lease.
// The database's own end of the lease is never earlier (its clock read the
// time after that moment), so a call that fn cannot cancel and that would
// run past Deadline may outlive the lease: another holder may take the key
// over meanwhile. The heartbeat of [RunExternal] and [Sweep] moves it on
// with every renewal, and so does [Lease.Renew]. The zero Claim's
// Deadline is the zero Time.
func (c Claim) Deadline() time.Time {
	if c.clock == nil {
		return time.Time{}
	}
	return c.clock.deadline()
}

// Lease is what [ClaimLease] returns: a claim held by hand, whose methods
// record the outcome, or, when the key completed earlier, its stored
// result. Every write through a Lease is fenced by its attempt and its
// per-claim owner token: once the key was taken over, resolved or
// recorded, they change nothing and return [ErrLeaseLost].
type Lease struct {
	Claim // zero when not Held
	// Held is true when this call holds the key: do the effect, then record
	// the outcome with Complete, Fail or Release.
	Held bool
	// Result is the stored, encoded result when the key completed earlier
	// (Held false). Decode it with the codec it was stored with (JSON by
	// default).
	Result []byte

	lr *leaser
}

// RunExternal runs fn at most once at a time per key, for an effect outside
// the database (a payment API, an e-mail), and records its result so that
// every later call with the key replays it. Like [Run] it takes a pool, not
// a transaction: the claim and the outcome are each committed in a short
// transaction of their own, and fn runs outside any transaction.
//
// It claims the key (see [ClaimLease]) and commits the claim before fn runs:
// an in_progress row with a lease from the database's clock. While fn runs,
// a heartbeat renews the lease every third of it ([Options.Lease],
// [Options.Heartbeat]); if a renewal finds the key taken over, or none succeeds
// before the lease's end by the local clock ([Claim.Deadline]), fn's
// context is cancelled with a cause matching [ErrLeaseLost] (see
// [context.Cause]). ctx bounds the claim (and [Options.LeaseWait]'s wait) and
// cancels fn's context, but not the heartbeat: fn may still be acting on
// the external system after ctx ended, and the lease holds until fn
// returns.
//
// When fn returns, its outcome is recorded under the same fence, in another
// short transaction, even if ctx ended: tried again after a broken
// connection or a transaction the database refused, for as long as the
// lease holds, as [Lease.Complete] says. The call returns what happened to
// the record: once it went through, a heartbeat that could not renew no
// longer matters.
//
//   - A duplicate of a completed key replays: Result.Replayed, fn does not
//     run. One of a key held by a live lease gets [ErrInProgress], or waits
//     with [Options.LeaseWait]. One of a key that holds a claim committed
//     without a lease (atomic mode's, see [ErrAbandoned]) gets
//     ErrAbandoned: fn does not run.
//   - If the holder dies, its lease runs out and the next call takes the key
//     over (attempt+1, same DownstreamKey) and runs fn; so does [Sweep].
//     Two contenders never both win.
//   - A holder that lost its lease (paused past it, cut off from the
//     database) records nothing and gets an error matching [ErrLeaseLost],
//     joined with fn's error if any. So does one whose lease ran out by
//     the local clock before the outcome could be written; one whose lease
//     ran out before it could learn whether an interrupted COMMIT of the
//     outcome went through gets [ErrCommitUnknown].
//   - If fn returns an error, RunExternal returns it and ends the lease
//     without an outcome: the next call takes the key over at once and runs
//     fn again, with the same DownstreamKey, so a downstream system that
//     saw the first call (a time-out after the charge) deduplicates the
//     second. With [Options.RecordFailures], an error made with [Permanent] is
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
// Options: those of [ClaimLease], and [Options.Heartbeat],
// [Options.ErrorOnDuplicate], [Options.RecordFailures].
func RunExternal[X, T any](ctx context.Context, s *Store[X], key string, fn func(ctx context.Context, c Claim) (T, error), opts ...Options) (Result[T], error) {
	var res Result[T]
	if err := ValidateKey(key); err != nil {
		return res, err
	}
	if fn == nil {
		return res, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	lr, err := newLeaser(s, opts)
	if err != nil {
		return res, err
	}
	if want := lr.cfg.lease.result; want != nil && want != reflect.TypeFor[T]() {
		return res, fmt.Errorf("%w: Options.ResultType[%v] given to RunExternal, whose fn returns %v", ErrInvalidOption, want, reflect.TypeFor[T]())
	}
	ctx, call := lr.s.startCall(ctx, "RunExternal", "lease", key, lr.start)
	defer call.unwinding()
	res, err = runExternal(ctx, lr, key, fn)
	call.finish(res.Replayed, err)
	return res, err
}

func runExternal[T any](ctx context.Context, lr *leaser, key string, fn func(ctx context.Context, c Claim) (T, error)) (Result[T], error) {
	held, l, row, err := lr.acquire(ctx, key)
	if err != nil {
		return Result[T]{}, err
	}
	if !held {
		res, err := replay[T](lr.s, key, row, &lr.cfg)
		if err == nil || errors.Is(err, ErrDuplicate) || errors.Is(err, ErrFailureRecorded) {
			lr.observe(ctx, EventReplayed, key, row.attempt, err)
		}
		return res, err
	}
	return runHeld(ctx, l, fn)
}
