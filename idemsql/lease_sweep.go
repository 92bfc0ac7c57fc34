package idemsql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Stale is a claim whose holder's lease ran out, handed to a [SweepHandler].
// The sweeper has already taken it over: Lease is the sweeper's own (attempt
// one higher than the dead holder's, same DownstreamKey), renewed by a
// heartbeat while the handler runs.
type Stale struct {
	Lease
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
// [*FailureError] until the key's retention runs out.
func ResolveAbandoned(message string) Resolution {
	return Resolution{kind: resolveAbandoned, message: message}
}

// ResolveReleased deletes the claim: the next call with the key runs again.
func ResolveReleased() Resolution { return Resolution{kind: resolveReleased} }

// SweepHandler decides what becomes of a stale claim. An error leaves the
// claim as it is; its lease runs out again and a later sweep retries it.
type SweepHandler func(ctx context.Context, s Stale) (Resolution, error)

// SweepStats counts what one [Sweep] did.
type SweepStats struct {
	Found     int // stale claims taken over (with a handler) or abandoned (without)
	Completed int // resolved with ResolveCompleted
	Abandoned int // marked failed with class AbandonedClass
	Released  int // deleted with ResolveReleased
	Lost      int // taken from the sweeper before its resolution was recorded
	Failed    int // the handler returned an error, or recording failed
}

// Sweep finds in_progress claims whose lease ran out (their holders died or
// hung) and resolves each one once.
//
// Rows are taken in batches ([WithBatchSize]), each in a short transaction:
// on PostgreSQL and MySQL/MariaDB with FOR UPDATE SKIP LOCKED, so any number
// of sweepers (and callers taking keys over) run side by side without
// waiting on each other; on SQLite one writer at a time, each row moved by
// an UPDATE that re-checks its lease. Without a handler (h nil), each row is
// marked failed with class [AbandonedClass] at once. With one, each row is
// taken over like a caller would (attempt+1, a new lease of [WithLease]),
// the transaction commits, and h runs for it, concurrently for a batch,
// with a heartbeat; its [Resolution] is recorded under the sweeper's fence.
//
// Sweep returns after one pass: when a batch comes back short. The error
// joins the handlers' errors and any database error. [SweepEvery] runs it
// in a loop.
func Sweep[X any](ctx context.Context, db DB[X], h SweepHandler, opts ...Option) (SweepStats, error) {
	lr, err := newLeaser(db, opts)
	if err != nil {
		return SweepStats{}, err
	}
	return lr.sweep(ctx, h)
}

func (lr *leaser) sweep(ctx context.Context, h SweepHandler) (SweepStats, error) {
	var stats SweepStats
	var errs []error
	batch := lr.cfg.lease.batchSize()
	us := lr.leaseMicros()
	for {
		if err := ctx.Err(); err != nil {
			return stats, errors.Join(append(errs, err)...)
		}
		var taken []Stale
		n, abandoned := 0, 0
		since := time.Now()
		err := lr.inTx(ctx, "sweep", "", func(ex Executor) error {
			taken, n, abandoned = taken[:0], 0, 0
			for n < batch {
				var key string
				var attempt, gen int64
				var owner sql.NullString
				var fp []byte
				err := ex.QueryRow(ctx, lr.ls.SweepNext).Scan(&key, &attempt, &owner, &fp, &gen)
				if errors.Is(err, sql.ErrNoRows) {
					return nil
				}
				if err != nil {
					return lr.s.dbError(ctx, "sweep", key, err)
				}
				var changed int64
				if h == nil {
					msg := fmt.Sprintf("the lease of %s at attempt %d ran out; abandoned by %s", owner.String, attempt, lr.s.owner)
					changed, err = ex.Exec(ctx, lr.ls.Abandon, AbandonedClass, truncateUTF8(msg, maxErrorMessage), lr.s.owner, key, attempt)
				} else {
					changed, err = ex.Exec(ctx, lr.ls.TakeOver, lr.s.owner, us, us, key, attempt)
				}
				if err != nil {
					return lr.s.dbError(ctx, "sweep", key, err)
				}
				if changed != 1 {
					return nil // a concurrent writer got it; the next pass looks again
				}
				n++
				if h == nil {
					abandoned++
				} else {
					taken = append(taken, Stale{Lease: lr.lease(key, attempt+1, gen, since), PreviousOwner: owner.String, Fingerprint: fp})
				}
			}
			return nil
		})
		if err != nil {
			return stats, errors.Join(append(errs, err)...)
		}
		stats.Found += n
		stats.Abandoned += abandoned
		if len(taken) > 0 {
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, st := range taken {
				wg.Add(1)
				go func() {
					defer wg.Done()
					outcome, err := resolve(ctx, h, st)
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
		if n < batch {
			return stats, errors.Join(errs...)
		}
	}
}

// resolve runs the handler for one stale claim and records its resolution.
func resolve(ctx context.Context, h SweepHandler, st Stale) (count func(*SweepStats), err error) {
	var res Resolution
	var herr error
	lost, definite := st.hold(ctx, func(ctx context.Context) { res, herr = h(ctx, st) })
	if definite {
		return func(s *SweepStats) { s.Lost++ }, nil
	}
	if herr != nil {
		return func(s *SweepStats) { s.Failed++ }, fmt.Errorf("idemsql: sweep %q: %w", st.Key, errors.Join(herr, lost))
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(st.lr.cfg.lease.leaseDuration(), 10*time.Second))
	defer cancel()
	switch res.kind {
	case resolveCompleted:
		err, count = st.Complete(wctx, res.result), func(s *SweepStats) { s.Completed++ }
	case resolveAbandoned:
		err, count = st.Fail(wctx, AbandonedClass, res.message), func(s *SweepStats) { s.Abandoned++ }
	case resolveReleased:
		err, count = st.Release(wctx), func(s *SweepStats) { s.Released++ }
	default:
		return func(s *SweepStats) { s.Failed++ }, fmt.Errorf("%w: sweep handler for %q returned the zero Resolution", ErrInvalidOption, st.Key)
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

func runEvery(ctx context.Context, every time.Duration, pass func()) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		pass()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// PurgeStats counts what one [Purge] did.
type PurgeStats struct {
	Deleted int64 // rows deleted
	Batches int   // transactions committed
}

// Purge deletes rows whose retention (expires_at, by the database's clock)
// has passed, in batches of [WithBatchSize], each in a short transaction. It
// never deletes a claim with a live lease, even past its retention, nor a
// row another transaction holds (PostgreSQL, MySQL/MariaDB: SKIP LOCKED; an
// atomic-mode call re-claiming an expired key holds its row). Expired rows
// are treated as absent by every call anyway; Purge only keeps the table
// small. It returns after one pass: when a batch comes back short.
func Purge[X any](ctx context.Context, db DB[X], opts ...Option) (PurgeStats, error) {
	lr, err := newLeaser(db, opts)
	if err != nil {
		return PurgeStats{}, err
	}
	return lr.purge(ctx)
}

func (lr *leaser) purge(ctx context.Context) (PurgeStats, error) {
	var stats PurgeStats
	batch := int64(lr.cfg.lease.batchSize())
	for {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		var n int64
		err := lr.inTx(ctx, "purge", "", func(ex Executor) error {
			n = 0
			if lr.ls.Purge != "" {
				var err error
				if n, err = ex.Exec(ctx, lr.ls.Purge, batch); err != nil {
					return lr.s.dbError(ctx, "purge", "", err)
				}
				return nil
			}
			for n < batch {
				var key string
				err := ex.QueryRow(ctx, lr.ls.PurgeNext).Scan(&key)
				if errors.Is(err, sql.ErrNoRows) {
					return nil
				}
				if err != nil {
					return lr.s.dbError(ctx, "purge", "", err)
				}
				d, err := ex.Exec(ctx, lr.ls.PurgeOne, key)
				if err != nil {
					return lr.s.dbError(ctx, "purge", key, err)
				}
				if d != 1 {
					return nil
				}
				n++
			}
			return nil
		})
		if err != nil {
			return stats, err
		}
		stats.Batches++
		stats.Deleted += n
		if n < batch {
			return stats, nil
		}
	}
}

// PurgeEvery runs [Purge] at once and then every interval until ctx ends,
// then returns nil. report, if not nil, gets each pass's outcome.
func PurgeEvery[X any](ctx context.Context, db DB[X], every time.Duration, report func(PurgeStats, error), opts ...Option) error {
	if every <= 0 {
		return fmt.Errorf("%w: purge interval %v", ErrInvalidOption, every)
	}
	lr, err := newLeaser(db, opts)
	if err != nil {
		return err
	}
	return runEvery(ctx, every, func() {
		stats, err := lr.purge(ctx)
		if report != nil && ctx.Err() == nil {
			report(stats, err)
		}
	})
}
