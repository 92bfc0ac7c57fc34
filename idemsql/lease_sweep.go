package idemsql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"
)

// Stale is a claim whose holder's lease ran out, handed to a [SweepHandler].
// The sweeper has already taken it over: LeaseInfo is the sweeper's own
// (attempt one higher than the dead holder's, same DownstreamKey), renewed
// by a heartbeat while the handler runs. The handler decides; the sweeper
// records its [Resolution] under that lease.
type Stale struct {
	LeaseInfo
	// PreviousOwner is the owner column of the holder whose lease ran out.
	PreviousOwner string
	// Fingerprint is the request fingerprint the key was claimed with.
	Fingerprint []byte
}

// Resolution is what a [SweepHandler] decided for a stale claim.
type Resolution struct {
	kind    resolutionKind
	result  any
	message string
}

type resolutionKind int

const (
	resolveNone resolutionKind = iota
	resolveCompleted
	resolveAbandoned
	resolveReleased
)

// ResolveCompleted records result as the key's outcome, as if the dead
// holder had finished: the handler resumed the effect (calling the
// downstream system again with the same DownstreamKey) or found that it had
// happened.
func ResolveCompleted(result any) Resolution {
	return Resolution{kind: resolveCompleted, result: result}
}

// ResolveAbandoned records the key as failed with class [AbandonedClass] and
// the message: the handler compensated, or gave up. Duplicates get a
// [*FailureError] until the key's retention runs out; the claim after that
// keeps the DownstreamKey, as after any abandoned claim.
func ResolveAbandoned(message string) Resolution {
	return Resolution{kind: resolveAbandoned, message: message}
}

// ResolveReleased ends the claim's lease without an outcome, as
// [Lease.Release] does: the next call with the key takes it over at once and
// runs again, with the same DownstreamKey. The row stays, marked
// [ReleasedClass]; sweeps leave it alone until its retention has run out.
func ResolveReleased() Resolution { return Resolution{kind: resolveReleased} }

// SweepHandler decides what becomes of a stale claim. An error leaves the
// claim as it is; its lease runs out again and a later sweep retries it. So
// does a panic, which the sweeper recovers: it counts as Failed and comes
// back, with its stack, in Sweep's error (and SweepEvery's report).
type SweepHandler func(ctx context.Context, s Stale) (Resolution, error)

// SweepStats counts what one [Sweep] did.
type SweepStats struct {
	Found     int // stale claims taken over (with a handler) or abandoned (without)
	Completed int // resolved with ResolveCompleted
	Abandoned int // marked failed with class AbandonedClass
	Released  int // lease ended with ResolveReleased
	Lost      int // taken from the sweeper before its resolution was recorded
	Failed    int // the handler returned an error or panicked, or recording failed
}

// Sweep finds in_progress claims whose lease ran out (their holders died or
// hung) and resolves each one once. A claim whose lease was ended on purpose
// ([ReleasedClass]: fn failed, a release) is left to callers, who take it
// over, until its retention has run out; then Sweep resolves it too.
//
// Rows are taken in batches ([WithBatchSize]), each in a short transaction
// at the dialect's isolation level ([LeaseStatements].Isolation) where the
// pool is an [IsolationPool], so that a batch locks only its rows:
// on PostgreSQL and MySQL/MariaDB with FOR UPDATE SKIP LOCKED, so any number
// of sweepers (and callers taking keys over) run side by side without
// waiting on each other; on SQLite one writer at a time, each row moved by
// an UPDATE that re-checks its lease. Without a handler (h nil), each row is
// marked failed with class [AbandonedClass] at once; the handler is not
// required because an abandoned claim keeps its generation: once that
// failure's retention has run out, the key's next claim runs with the dead
// holder's DownstreamKey, so that the downstream system can absorb an
// effect the dead holder may have performed. With one, each row is
// taken over like a caller would (attempt+1, a new lease of [WithLease]),
// the transaction commits, and h runs for it, concurrently for a batch,
// with a heartbeat; its [Resolution] is recorded under the sweeper's fence.
//
// Sweep returns after one pass: when no stale row is left, or the next one
// is a row this pass already resolved. A row that a concurrent writer
// changed between the sweeper's read and its update ends that batch only.
// The error joins the handlers' errors and any database error.
// [SweepEvery] runs it in a loop.
func Sweep[X any](ctx context.Context, db DB[X], h SweepHandler, opts ...Option) (SweepStats, error) {
	lr, err := newLeaser(db, opts)
	if err != nil {
		return SweepStats{}, err
	}
	return lr.sweep(ctx, h)
}

// maxSweepContention bounds how many batches in a row may end on a row a
// concurrent writer changed, with nothing swept, before a pass gives up.
const maxSweepContention = 10

// swept is one stale row a sweeper took over.
type swept struct {
	lease Lease
	stale Stale
}

func (lr *leaser) sweep(ctx context.Context, h SweepHandler) (SweepStats, error) {
	var stats SweepStats
	var errs []error
	batch := lr.cfg.lease.batchSize()
	us := lr.leaseMicros()
	seen := map[string]bool{} // keys this pass resolved
	contended := 0
	for {
		if err := ctx.Err(); err != nil {
			return stats, errors.Join(append(errs, err)...)
		}
		var taken []swept
		var keys []string
		abandoned, done := 0, false
		err := lr.inHousekeepingTx(ctx, "sweep", func(ex Executor) error {
			taken, keys, abandoned, done = taken[:0], keys[:0], 0, false
			for len(keys) < batch {
				var key string
				var attempt, gen int64
				var owner sql.NullString
				var fp []byte
				err := ex.QueryRow(ctx, lr.ls.SweepNext).Scan(&key, &attempt, &owner, &fp, &gen)
				if errors.Is(err, sql.ErrNoRows) {
					done = true
					return nil
				}
				if err != nil {
					return lr.s.dbError(ctx, "sweep", key, err)
				}
				if seen[key] {
					// Resolved earlier in this pass and stale again (a
					// handler released it): the next pass looks again.
					done = true
					return nil
				}
				token := lr.newToken()
				var changed int64
				var since time.Time
				if h == nil {
					msg := fmt.Sprintf("the lease of %s at attempt %d ran out; abandoned by %s", owner.String, attempt, token)
					changed, err = ex.Exec(ctx, lr.ls.Abandon, AbandonedClass, truncateUTF8(msg, maxErrorMessage), token, lr.ttlMicros(), key, attempt, owner.String)
				} else {
					since = time.Now()
					changed, err = ex.Exec(ctx, lr.ls.TakeOver, token, us, us, key, attempt, owner.String)
				}
				if err != nil {
					return lr.s.dbError(ctx, "sweep", key, err)
				}
				if changed != 1 {
					return nil // a concurrent writer got it: this batch ends, the pass goes on
				}
				keys = append(keys, key)
				if h == nil {
					abandoned++
				} else {
					l := lr.lease(key, attempt+1, gen, token, since)
					taken = append(taken, swept{lease: l, stale: Stale{LeaseInfo: l.LeaseInfo, PreviousOwner: owner.String, Fingerprint: fp}})
				}
			}
			return nil
		})
		if err != nil {
			return stats, errors.Join(append(errs, err)...)
		}
		for _, k := range keys {
			seen[k] = true
		}
		stats.Found += len(keys)
		stats.Abandoned += abandoned
		if len(taken) > 0 {
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, sw := range taken {
				wg.Add(1)
				go func() {
					defer wg.Done()
					outcome, err := resolve(ctx, h, sw)
					mu.Lock()
					defer mu.Unlock()
					outcome(&stats)
					if err != nil {
						errs = append(errs, err)
					}
				}()
			}
			wg.Wait()
		}
		if done {
			return stats, errors.Join(errs...)
		}
		if len(keys) == 0 {
			if contended++; contended >= maxSweepContention {
				return stats, errors.Join(errs...)
			}
		} else {
			contended = 0
		}
	}
}

// resolve runs the handler for one stale claim and records its resolution.
// A handler that panics is recovered: the claim counts as failed, the panic
// comes back as an error with its stack, and nothing is recorded, so the
// sweeper's lease runs out and the claim is stale again.
func resolve(ctx context.Context, h SweepHandler, sw swept) (count func(*SweepStats), err error) {
	var res Resolution
	var herr error
	var panicked any
	var stack []byte
	l := sw.lease
	if _, definite := l.hold(ctx, func(ctx context.Context) {
		defer func() {
			if r := recover(); r != nil {
				panicked, stack = r, debug.Stack()
			}
		}()
		res, herr = h(ctx, sw.stale)
	}); definite {
		return func(s *SweepStats) { s.Lost++ }, nil
	}
	if stack != nil {
		return func(s *SweepStats) { s.Failed++ }, fmt.Errorf("idemsql: sweep %q: the handler panicked: %v\n%s", l.Key, panicked, stack)
	}
	if herr != nil {
		return func(s *SweepStats) { s.Failed++ }, fmt.Errorf("idemsql: sweep %q: %w", l.Key, herr)
	}
	// Recorded even if ctx ended meanwhile, with the tries of Complete, for
	// as long as the sweeper's lease holds.
	wctx := context.WithoutCancel(ctx)
	switch res.kind {
	case resolveCompleted:
		err, count = l.Complete(wctx, res.result), func(s *SweepStats) { s.Completed++ }
	case resolveAbandoned:
		err, count = l.Fail(wctx, AbandonedClass, res.message), func(s *SweepStats) { s.Abandoned++ }
	case resolveReleased:
		err, count = l.end(wctx, "released by a sweep handler"), func(s *SweepStats) { s.Released++ }
	default:
		return func(s *SweepStats) { s.Failed++ }, fmt.Errorf("%w: sweep handler for %q returned the zero Resolution", ErrInvalidOption, l.Key)
	}
	switch {
	case errors.Is(err, ErrLeaseLost):
		return func(s *SweepStats) { s.Lost++ }, nil
	case err != nil:
		return func(s *SweepStats) { s.Failed++ }, err
	}
	return count, nil
}

// SweepEvery runs [Sweep] at once and then every interval until ctx ends,
// then returns nil. report, if not nil, gets each pass's outcome. It
// returns an error at once only for a bad argument or option.
//
//	go idemsql.SweepEvery(ctx, store.DB(db, nil), time.Minute, nil, logSweep)
func SweepEvery[X any](ctx context.Context, db DB[X], every time.Duration, h SweepHandler, report func(SweepStats, error), opts ...Option) error {
	if every <= 0 {
		return fmt.Errorf("%w: sweep interval %v", ErrInvalidOption, every)
	}
	lr, err := newLeaser(db, opts)
	if err != nil {
		return err
	}
	return runEvery(ctx, every, func() {
		stats, err := lr.sweep(ctx, h)
		if report != nil && ctx.Err() == nil {
			report(stats, err)
		}
	})
}
