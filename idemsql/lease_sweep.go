package idemsql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
)

// Stale is a claim that no holder has, handed to a [SweepHandler]: its
// holder's lease ran out, or it released it, or it never had one (Reason).
// The sweeper has already taken it over: Claim is the sweeper's own
// (attempt one higher than the previous holder's, same DownstreamKey),
// renewed by a heartbeat while the handler runs. The handler decides; the
// sweeper records its [Resolution] under that lease.
type Stale struct {
	Claim
	// PreviousOwner is the owner column of the previous holder.
	PreviousOwner string
	// Fingerprint is the request fingerprint the key was claimed with.
	Fingerprint []byte
	// Reason is why the claim had no holder: [StaleLeaseRanOut],
	// [StaleReleased] or [StaleNoLease].
	Reason string
	// Message is the previous holder's reason for a released claim (for
	// fn's error, "fn failed: " and the error's text); empty otherwise.
	Message string
}

// Why a claim handed to a [SweepHandler] had no holder, in Stale.Reason.
const (
	// StaleLeaseRanOut: the holder stopped renewing its lease (it died,
	// hung or lost the database), and the lease ran out.
	StaleLeaseRanOut = "lease_ran_out"
	// StaleReleased: the holder ended its lease without an outcome (fn
	// failed, [Lease.Release]); [Stale].Message says why. Such a claim is
	// its caller's to retry: a sweep takes it once its retention has run
	// out with no call taking it over, or at once where asked to reconcile
	// ([Options.SweepReleased]), so that a request whose caller never
	// retries (a time-out after the charge) is resolved. A claim a handler
	// released ([ResolveReleased]) comes back only once its retention has
	// run out.
	StaleReleased = "released"
	// StaleNoLease: a claim committed without a lease and without an
	// outcome: an atomic-mode claim whose transaction committed although
	// [Do] failed, or that fn committed itself (DDL on MySQL). Callers get
	// [ErrAbandoned] for it; fn's effects may or may not have committed.
	StaleNoLease = "no_lease"
)

// Resolution is what a [SweepHandler] decided for a stale claim.
type Resolution struct {
	// Outcome is [ResolveCompleted], [ResolveAbandoned] or
	// [ResolveReleased].
	Outcome string
	// Result is the key's outcome, for ResolveCompleted. It must be of the
	// type the key's callers decode into (fn's result type in
	// [RunExternal]); give Sweep [Options.ResultType] to have that checked
	// before anything is stored.
	Result any
	// Message says why, for ResolveAbandoned.
	Message string
}

// The outcomes of a [Resolution].
const (
	// ResolveCompleted records Result as the key's outcome, as if the dead
	// holder had finished: the handler resumed the effect (calling the
	// downstream system again with the same DownstreamKey) or found that it
	// had happened.
	ResolveCompleted = "completed"
	// ResolveAbandoned records the key as failed with class
	// [AbandonedClass] and the Message: the handler compensated, or gave
	// up. Duplicates get that failure ([ErrFailureRecorded]) until the
	// key's retention runs out; the claim after that keeps the
	// DownstreamKey, as after any abandoned claim. A released claim's
	// reason is kept after the Message: Message + "; before: " +
	// [Stale].Message.
	ResolveAbandoned = "abandoned"
	// ResolveReleased ends the claim's lease without an outcome, as
	// [Lease.Release] does: the next call with the key takes it over at
	// once and runs again, with the same DownstreamKey. The row stays,
	// marked [ReleasedClass], with the error_message
	// [HandlerReleasedMessage]; sweeps leave it to callers until its
	// retention has run out (a sweep that reconciles released claims does
	// not hand it over again: it would only get the same answer). A claim
	// its holder had released ([StaleReleased]) is handed back as that
	// holder left it, its attempt and owner included, with its reason kept
	// after HandlerReleasedMessage.
	ResolveReleased = "released"
)

// SweepHandler decides what becomes of a stale claim. An error leaves the
// claim as it is; its lease runs out again and a later sweep retries it. So
// does a panic, which the sweeper recovers: it counts as Failed and comes
// back, with its stack, in Sweep's error (and SweepEvery's report).
type SweepHandler func(ctx context.Context, s Stale) (Resolution, error)

// SweepStats counts what one [Sweep] did.
type SweepStats struct {
	Batches   int // transactions that took claims, committed
	Found     int // stale claims taken over (with a handler) or abandoned (without)
	Completed int // resolved with ResolveCompleted
	Abandoned int // marked failed with class AbandonedClass
	Released  int // lease ended with ResolveReleased
	Lost      int // taken from the sweeper before its resolution was recorded
	Failed    int // the handler returned an error or panicked, or recording failed
}

// Sweep finds in_progress claims that no holder has and resolves each one
// once: claims whose lease ran out (their holders died or hung), and claims
// committed without a lease (atomic-mode claims whose transaction committed
// without an outcome, see [ErrAbandoned]). A claim whose lease was ended on
// purpose ([ReleasedClass]: fn failed, a release) is its caller's to retry:
// Sweep leaves it to callers, who take it over, until its retention has
// run out, and then resolves it too. These are the rows [ListFilter]'s
// Sweepable lists and [TableStats].Sweepable counts. With a handler and
// [Options.SweepReleased], Sweep also takes released claims at once, to
// reconcile requests whose callers never retry.
//
// Rows are taken in batches ([Options.BatchSize]), each in a short transaction
// at the dialect's isolation level (idemdriver.LeaseStatements.Isolation:
// READ COMMITTED on PostgreSQL and MySQL/MariaDB), so that a batch locks
// only its rows. A batch
// locks its rows with one statement per kind of claim, through an index
// scan bounded by the database's clock: live and released leases outside
// the range are never walked, except by the scan for released claims of
// Options.SweepReleased, which also passes the live leases and the claims
// the handler released itself. On PostgreSQL and MySQL/MariaDB with FOR
// UPDATE SKIP LOCKED, so any number of sweepers (and callers taking keys
// over) run side by side without waiting on each other, and a claim of a
// transaction still running is never touched (invisible, or locked and
// skipped); on SQLite one writer at a time. Each row is then moved by an
// UPDATE that re-checks it.
//
// Without a handler (h nil), each row is marked failed with class
// [AbandonedClass] at once; the handler is not required because an
// abandoned claim keeps its generation: once that failure's retention has
// run out, the key's next claim runs with the previous holder's
// DownstreamKey, so that the downstream system can absorb an effect it may
// have performed. With a handler, each row is taken over like a caller
// would (attempt+1, a new lease of [Options.Lease]), the transaction commits,
// and h runs for it ([Stale] says why it had no holder), concurrently for a
// batch, with a heartbeat; its [Resolution] is recorded under the
// sweeper's fence, with the tries of [Lease.Complete].
//
// Sweep returns after one pass: when no such row is left, or the next ones
// are rows this pass already resolved. A row that a concurrent writer
// changed between the sweeper's read and its update is skipped. The error
// joins the handlers' errors and any database error. When ctx ends, the
// pass ends before its next batch (a batch whose statements ctx
// interrupts is rolled back) and the error holds ctx's: each batch is a
// transaction of its own, so nothing is left half done. An observer
// hears of each batch once its resolutions are recorded ([EventSwept]):
// ending ctx there stops the pass between two batches. [SweepEvery] runs
// it in a loop.
func Sweep[X any](ctx context.Context, s *Store[X], h SweepHandler, opts ...Options) (SweepStats, error) {
	lr, err := newSweeper(s, h, opts)
	if err != nil {
		return SweepStats{}, err
	}
	return lr.sweep(ctx, h)
}

// newSweeper is the leaser of Sweep and SweepEvery.
func newSweeper[X any](s *Store[X], h SweepHandler, opts []Options) (*leaser, error) {
	lr, err := newLeaser(s, opts)
	if err != nil {
		return nil, err
	}
	if h == nil && lr.cfg.lease.released {
		return nil, fmt.Errorf("%w: Options.SweepReleased without a handler would abandon claims their callers are still to retry", ErrInvalidOption)
	}
	return lr, nil
}

// maxSweepContention bounds how many batches in a row may find only rows a
// concurrent writer changed, with nothing swept, before a pass gives up.
const maxSweepContention = 10

// swept is one stale row a sweeper took over.
type swept struct {
	lease Lease
	stale Stale
}

// staleRow is a row as the sweep statements return it.
type staleRow struct {
	key          string
	attempt      int64
	owner        sql.NullString
	fingerprint  []byte
	generation   int64
	errorClass   sql.NullString
	errorMessage sql.NullString
	leased       bool
}

func (r staleRow) reason() string {
	switch {
	case r.errorClass.Valid:
		return StaleReleased
	case !r.leased:
		return StaleNoLease
	}
	return StaleLeaseRanOut
}

// sweepBatch is what one batch's transaction did.
type sweepBatch struct {
	keys      []string // rows moved: abandoned, or taken over for the handler
	taken     []swept  // rows taken over for the handler
	abandoned int
	more      bool // rows may be left: the pass goes on
}

func (lr *leaser) sweep(ctx context.Context, h SweepHandler) (SweepStats, error) {
	var stats SweepStats
	var errs []error
	stmts := []sweepStmt{{q: lr.ls.SweepUnleased}, {q: lr.ls.SweepStale}}
	if h != nil && lr.cfg.lease.released {
		stmts = append(stmts, sweepStmt{q: lr.ls.SweepReleased, before: []any{HandlerReleasedMessage}})
	}
	seen := map[string]bool{} // keys this pass resolved
	contended := 0
	for {
		if err := ctx.Err(); err != nil {
			return stats, errors.Join(append(errs, err)...)
		}
		var b sweepBatch
		err := lr.inHousekeepingTx(ctx, "sweep", func(ex idemdriver.Executor) error {
			b = sweepBatch{}
			return lr.sweepBatch(ctx, ex, h, stmts, seen, &b)
		})
		if err != nil {
			return stats, errors.Join(append(errs, err)...)
		}
		for _, k := range b.keys {
			seen[k] = true
		}
		if len(lr.s.defaults.observers) > 0 {
			if h == nil {
				for _, k := range b.keys {
					lr.observe(ctx, EventAbandoned, k, 0, nil)
				}
			}
			for _, sw := range b.taken {
				lr.observe(ctx, EventTakenOver, sw.lease.Key, sw.lease.Attempt, nil)
			}
		}
		stats.Found += len(b.keys)
		stats.Abandoned += b.abandoned
		if len(b.taken) > 0 {
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, sw := range b.taken {
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
		stats.Batches++
		// One event per batch that found claims, once they are resolved; a
		// pass that found nothing says so once.
		if len(lr.s.defaults.observers) > 0 && (len(b.keys) > 0 || stats.Batches == 1) {
			lr.s.emit(ctx, Event{Kind: EventSwept, Mode: "lease", Dialect: lr.s.dialect.Name(),
				Duration: time.Since(lr.start), Count: int64(len(b.keys))})
		}
		if !b.more {
			return stats, errors.Join(errs...)
		}
		if len(b.keys) == 0 {
			if contended++; contended >= maxSweepContention {
				return stats, errors.Join(errs...)
			}
		} else {
			contended = 0
		}
	}
}

// sweepBatch locks up to a batch of rows with the statements, in order, and
// abandons them (no handler) or takes them over (for h). Rows seen earlier
// in the pass are left alone: a handler released them again, and the next
// pass looks at them. Nothing more is sent after an error: the transaction
// is rolled back.
func (lr *leaser) sweepBatch(ctx context.Context, ex idemdriver.Executor, h SweepHandler, stmts []sweepStmt, seen map[string]bool, b *sweepBatch) error {
	limit := lr.cfg.lease.batchSize()
	for _, stmt := range stmts {
		for {
			want := limit - len(b.keys)
			if want <= 0 {
				b.more = true
				return nil
			}
			rows, many, err := lr.lockStale(ctx, ex, stmt, want)
			if err != nil {
				return err
			}
			moved, changed := 0, 0
			for _, r := range rows {
				if seen[r.key] {
					continue
				}
				ok, err := lr.sweepRow(ctx, ex, h, r, b)
				if err != nil {
					return err
				}
				if ok {
					moved++
				} else {
					changed++
				}
			}
			// A page shorter than asked does not mean that no row is left:
			// the dialect may pick candidates before it locks them, and
			// skip those another sweeper locked meanwhile. So the pass
			// goes on while batches move rows, and after rows a concurrent
			// writer changed.
			if moved > 0 || changed > 0 {
				b.more = true
			}
			if many || moved == 0 {
				break // one statement per batch; or nothing left to move
			}
		}
	}
	return nil
}

// sweepStmt is a sweep statement and the arguments it takes before limit.
type sweepStmt struct {
	q      string
	before []any
}

// HandlerReleasedMessage begins the error_message of a claim a sweep
// handler released ([ResolveReleased]): all of it, or, where the claim's
// holder had released it, followed by "; before: " and the holder's reason.
// Sweeps that reconcile released claims leave such a claim to callers
// instead of handing it to a handler again.
const HandlerReleasedMessage = "released by a sweep handler"

// keptReason is a reason a sweep records on a row that has one already:
// both, the new one first, so that the audit trail keeps the first.
func keptReason(reason, before string) string {
	if before == "" {
		return reason
	}
	return reason + "; before: " + before
}

// lockStale runs a sweep statement for up to limit rows, all at once where
// the transaction returns many rows (many), else for one.
func (lr *leaser) lockStale(ctx context.Context, ex idemdriver.Executor, stmt sweepStmt, limit int) (rows []staleRow, many bool, err error) {
	scan := func(r idemdriver.Row) error {
		var s staleRow
		if err := r.Scan(&s.key, &s.attempt, &s.owner, &s.fingerprint, &s.generation, &s.errorClass, &s.errorMessage, &s.leased); err != nil {
			return err
		}
		rows = append(rows, s)
		return nil
	}
	args := func(limit int) []any { return append(append([]any{}, stmt.before...), limit) }
	many, err = queryEach(ctx, ex, stmt.q, scan, args(limit)...)
	if !many {
		err = scan(ex.QueryRow(ctx, stmt.q, args(1)...))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, nil
		}
	}
	if err != nil {
		return nil, many, lr.s.dbError(ctx, "sweep", "", err)
	}
	return rows, many, nil
}

// sweepRow abandons r (h nil) or takes it over for h. ok is false when a
// concurrent writer changed the row since it was read.
func (lr *leaser) sweepRow(ctx context.Context, ex idemdriver.Executor, h SweepHandler, r staleRow, b *sweepBatch) (ok bool, err error) {
	token := lr.newToken()
	if h == nil {
		var msg string
		switch r.reason() {
		case StaleNoLease:
			msg = fmt.Sprintf("the claim of %s at attempt %d was committed without a lease or an outcome; abandoned by %s", r.owner.String, r.attempt, token)
		case StaleReleased:
			msg = fmt.Sprintf("released by %s at attempt %d (%s) and not taken over within its retention; abandoned by %s", r.owner.String, r.attempt, r.errorMessage.String, token)
		default:
			msg = fmt.Sprintf("the lease of %s at attempt %d ran out; abandoned by %s", r.owner.String, r.attempt, token)
		}
		n, err := ex.Exec(ctx, lr.ls.Abandon, AbandonedClass, truncateUTF8(msg, maxErrorMessage), token, lr.ttlMicros(), r.key, r.attempt, r.owner.String)
		if err != nil {
			return false, lr.s.dbError(ctx, "sweep", r.key, err)
		}
		if n != 1 {
			return false, nil
		}
		b.keys = append(b.keys, r.key)
		b.abandoned++
		return true, nil
	}
	us := lr.leaseMicros()
	since := time.Now()
	n, err := ex.Exec(ctx, lr.ls.Adopt, token, us, us, r.key, r.attempt, r.owner.String)
	if err != nil {
		return false, lr.s.dbError(ctx, "sweep", r.key, err)
	}
	if n != 1 {
		return false, nil
	}
	l := lr.lease(r.key, r.attempt+1, r.generation, token, since)
	b.keys = append(b.keys, r.key)
	b.taken = append(b.taken, swept{lease: l, stale: Stale{Claim: l.Claim, PreviousOwner: r.owner.String,
		Fingerprint: r.fingerprint, Reason: r.reason(), Message: r.errorMessage.String}})
	return true, nil
}

// queryEach runs a query that returns many rows, calling each for every
// row, where ex can ([idemdriver.RowsQuerier]); ok is false where it
// cannot, and then nothing ran.
func queryEach(ctx context.Context, ex idemdriver.Executor, query string, each func(idemdriver.Row) error, args ...any) (ok bool, err error) {
	q, ok := ex.(idemdriver.RowsQuerier)
	if !ok {
		return false, nil
	}
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return true, err
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return true, err
		}
	}
	return true, rows.Err()
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
		return func(s *SweepStats) { s.Failed++ }, &Error{Op: "sweep", Key: l.Key, Err: fmt.Errorf("the handler panicked: %v\n%s", panicked, stack)}
	}
	if herr != nil {
		return func(s *SweepStats) { s.Failed++ }, &Error{Op: "sweep", Key: l.Key, Err: herr}
	}
	// Recorded even if ctx ended meanwhile, with the tries of Complete, for
	// as long as the sweeper's lease holds.
	wctx := context.WithoutCancel(ctx)
	var refused bool
	switch res.Outcome {
	case ResolveCompleted:
		eerr := l.lr.cfg.lease.checkResult(res.Result)
		var encoded []byte
		if eerr == nil {
			encoded, eerr = encode(res.Result, &l.lr.cfg, false)
		}
		if eerr != nil {
			return func(s *SweepStats) { s.Failed++ }, &Error{Op: "sweep", Key: l.Key, Err: eerr}
		}
		refused, err = l.complete(wctx, encoded)
		count = func(s *SweepStats) { s.Completed++ }
	case ResolveAbandoned:
		refused, err = l.fail(wctx, AbandonedClass, keptReason(res.Message, sw.stale.Message))
		count = func(s *SweepStats) { s.Abandoned++ }
	case ResolveReleased:
		if sw.stale.Reason == StaleReleased {
			// Back to callers as its holder left it: no takeover is
			// recorded, and the holder's reason stays.
			why := sw.stale.Message
			if !strings.HasPrefix(why, HandlerReleasedMessage) {
				why = keptReason(HandlerReleasedMessage, why)
			}
			refused, err = l.restore(wctx, why, sw.stale.Attempt-1, sw.stale.PreviousOwner)
		} else {
			refused, err = l.end(wctx, HandlerReleasedMessage)
		}
		count = func(s *SweepStats) { s.Released++ }
	default:
		return func(s *SweepStats) { s.Failed++ }, &Error{Op: "sweep", Key: l.Key, Kind: ErrInvalidOption, Err: fmt.Errorf("the handler returned a Resolution with Outcome %q", res.Outcome)}
	}
	switch {
	case refused:
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
//	go idemsql.SweepEvery(ctx, store, time.Minute, nil, logSweep)
func SweepEvery[X any](ctx context.Context, s *Store[X], every time.Duration, h SweepHandler, report func(SweepStats, error), opts ...Options) error {
	if every <= 0 {
		return fmt.Errorf("%w: sweep interval %v", ErrInvalidOption, every)
	}
	lr, err := newSweeper(s, h, opts)
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
