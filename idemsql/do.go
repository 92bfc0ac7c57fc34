package idemsql

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
)

var emptyResultType = reflect.TypeFor[struct{}]()

// Status values of the status column.
const (
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
)

// Result is what [Do] returns: fn's value, and whether it came from an
// earlier execution instead of from running fn now. A replay is an expected
// outcome, not an error.
type Result[T any] struct {
	Value T
	// Replayed is true when fn did not run in this call and Value is the
	// stored result of the execution that first claimed the key.
	Replayed bool
}

// Do runs fn at most once per key, in the caller's transaction tx, which
// the caller began on the store's pool.
//
// Do first claims the key by inserting its row into the idempotency table,
// in tx, before fn runs. fn does its business writes in the same
// transaction. When fn returns, its result is encoded (JSON) and stored in
// the row, still in tx. So the claim, fn's writes and the stored result
// commit together or vanish together:
//
//   - On commit, every later call with the key replays: it returns the
//     stored value with Replayed set, and does not run fn.
//   - On rollback, for any reason, nothing is left: the key is free again.
//   - A concurrent call with the same key waits on the database's lock until
//     this transaction ends, then replays (after a commit) or runs fn itself
//     (after a rollback). [Options.FailFast] and [Options.LockTimeout] change that.
//   - If fn returns an error, Do returns it and removes its claim; roll the
//     transaction back to undo fn's writes. If the claim could not be
//     removed the error says so ([ErrUnexpectedState]). With
//     [Options.RecordFailures], an error made with [Permanent] is recorded
//     instead: see there.
//   - If the database ended the transaction under fn (a deadlock, a
//     serialization failure, a Galera abort, an interrupted SQLite
//     statement, a broken connection), fn's error comes back matching
//     [ErrRetryable], still wrapping the driver's error, and Do sends
//     nothing more: on MySQL and SQLite a statement sent now would run
//     outside the transaction. Roll back and run the transaction again. So
//     also when fn swallowed such an error: storing the result then finds
//     no claim. Every statement Do sends after the claim matches the row
//     by key and a token of this claim alone, so that even a statement
//     sent outside the transaction cannot touch the row of a duplicate that
//     claimed the key meanwhile.
//   - If ctx ends while fn runs, fn's error comes back as it is. A
//     statement that ctx interrupted ended the transaction (pgx and MySQL
//     close the connection; SQLite may roll the transaction back), and then
//     nothing more is sent; on SQLite, whose driver reports that with the
//     context's error alone, no statement is sent after any context error.
//     A context of fn's own that ends under one of its statements, ctx
//     still live, ends the transaction the same way: that is a lost
//     connection, [ErrRetryable], with the context's error in the text
//     only, so that it is not taken for ctx's.
//   - If fn panics, the claim is marked failed ([PanicClass]) and the panic
//     goes on; roll back.
//   - A key whose retention has passed is treated as absent: it is claimed
//     again in place and its attempt counted. The retention (TTL) runs from
//     the moment fn's result is stored, and a call judges it as of the
//     moment the call started, so a duplicate that waited for the holder's
//     commit replays even if the TTL ran out while it waited. Keep the TTL
//     longer than your transaction stays open after Do returns. A claim
//     whose transaction committed without an outcome is never free by age:
//     see [ErrAbandoned].
//   - A nested Do with a key its own transaction is still inside returns
//     [ErrReentrant]. When fn returns struct{} and the TTL is an hour or
//     more, the row is stored completed with the claim (one statement
//     fewer; not on MySQL), so a nested call replays the empty result
//     instead; its fn does not run either.
//
// On SQLite and MySQL the store's statements run prepared once per
// connection of its pool, which is what makes Do as cheap as a
// hand-written guard there (docs/performance.md). A transaction of another
// *sql.DB than the store's runs them as text (database/sql runs no
// statement prepared on one pool in a transaction of another), and is
// taken to be on the store's server.
//
// fn receives ctx. Errors that reach the database come back as [*Error]
// with exactly one class: [ErrRetryable] (roll back and run the whole
// transaction again), [ErrLockTimeout], [ErrInProgress], ... [Run] does
// the transaction handling and the retries for callers who have no
// transaction of their own. Do does not commit: give the error of your
// COMMIT its class with [Store.CommitError] ([ErrCommitUnknown] when it
// may have committed), not with pgx's pgconn.SafeToRetry, which is true
// for a COMMIT that broke after it went out.
//
// Options: [Options.TTL], [Options.Fingerprint], [Options.ErrorOnDuplicate],
// [Options.FailFast], [Options.LockTimeout], [Options.RecordFailures],
// [Options.Codec], [Options.MaxResultSize].
func Do[X, T any](ctx context.Context, s *Store[X], tx X, key string, fn func(ctx context.Context) (T, error), opts ...Options) (Result[T], error) {
	if s == nil {
		return Result[T]{}, errUnbound
	}
	ex := s.driver.Bind(tx)
	if ex == nil {
		return Result[T]{}, errUnbound
	}
	cfg, err := s.callSettings(key, opts)
	if err != nil {
		return Result[T]{}, err
	}
	if fn == nil {
		return Result[T]{}, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	start := time.Now()
	ctx, call := s.startCall(ctx, "Do", "atomic", key, start)
	defer call.unwinding()
	res, _, err := do(ctx, &s.core, ex, nil, key, fn, &cfg, start)
	call.finish(res.Replayed, err)
	return res, err
}

// callSettings checks the key and merges a call's options over the store's.
func (s *core) callSettings(key string, opts []Options) (settings, error) {
	if err := ValidateKey(key); err != nil {
		return settings{}, err
	}
	cfg := s.defaults
	if len(opts) > 0 {
		if err := applyOptions(&cfg, opts, inAtomic); err != nil {
			return settings{}, err
		}
	}
	if cfg.failFast || cfg.lockTimeout > 0 {
		if _, ok := s.dialect.(idemdriver.ClaimBounder); !ok {
			return settings{}, fmt.Errorf("%w: dialect %s cannot bound lock waits", ErrInvalidOption, s.dialect.Name())
		}
	}
	return cfg, nil
}

// savepoints numbers the savepoints of recorded failures. Each call needs
// a name of its own: with one shared name, a nested call's savepoint would
// shadow the outer one (PostgreSQL, SQLite) or replace it (MySQL), and the
// outer call's ROLLBACK TO would keep the outer fn's earlier writes.
var savepoints atomic.Uint64

func savepointName() string {
	return "idemsql_fn_" + strconv.FormatUint(savepoints.Add(1), 10)
}

// outcome is what one call of do did, and so what its transaction needs.
// [Run] acts on it; it never searches fn's errors to find out.
type outcome uint8

const (
	// outcomeFailed: nothing of the call is worth committing (fn failed, the
	// key is held elsewhere, bad input, a database error): roll back.
	outcomeFailed outcome = iota
	// outcomeRetry: the transaction is lost (the database refused or ended
	// it, or the connection broke): roll back and run it again.
	outcomeRetry
	// outcomeExecuted: fn ran and its result is stored: commit.
	outcomeExecuted
	// outcomeReplayed: a stored result was returned; nothing was written.
	outcomeReplayed
	// outcomeRecorded: fn's permanent failure is stored: commit to keep it.
	outcomeRecorded
	// outcomeCommitted: fn ran, and its result was stored with the COMMIT
	// that ended the transaction (idemdriver.ExecCommitter).
	outcomeCommitted
)

// failedOutcome is the outcome of a call that ended with err before fn ran
// or after it failed.
func failedOutcome(err error) outcome {
	var e *Error
	if errors.As(err, &e) && e.Kind == ErrRetryable {
		return outcomeRetry
	}
	return outcomeFailed
}

// fastPathMinTTL is the shortest TTL for which a known result is stored with
// the claim. Such a row's retention runs from the claim, not from fn's end:
// with a TTL shorter than a transaction may last, a call arriving after the
// TTL but before the commit would wait and then find the row expired.
const fastPathMinTTL = time.Hour

// do is Do's work in ex. start is when the call began (Run's first
// attempt, for a retried transaction): events are timed from it, and an
// outcome is judged expired as of then, so that a retry never counts as
// expired what the call's first attempt would have replayed. With ec (Run,
// on a transaction that pipelines), fn's result is stored by the
// statement that leaves with the COMMIT, and do ends the transaction.
func do[T any](ctx context.Context, s *core, ex idemdriver.Executor, ec idemdriver.ExecCommitter, key string, fn func(context.Context) (T, error), cfg *settings, start time.Time) (Result[T], outcome, error) {
	var res Result[T]
	if err := ctx.Err(); err != nil {
		return res, outcomeFailed, &Error{Op: "claim", Key: key, Err: err} // the context's class alone
	}

	// A result known in advance is stored with the claim, which saves the
	// Complete statement.
	known := reflect.TypeFor[T]() == emptyResultType && !cfg.customCodec && !cfg.recordFailures &&
		s.stmts.ClaimCompleted != "" && cfg.ttl >= fastPathMinTTL
	tok := s.newClaim()
	c, err := s.boundedClaim(ctx, ex, key, cfg, known, tok, start)
	if err != nil {
		if errors.Is(err, ErrInProgress) {
			s.observe(ctx, EventInProgress, "atomic", key, 0, start, err)
		}
		return res, failedOutcome(err), err
	}
	if !c.claimed {
		res, err = replay[T](s, key, c.row, cfg)
		if err == nil || errors.Is(err, ErrDuplicate) {
			s.observe(ctx, EventReplayed, "atomic", key, c.row.attempt, start, err)
			return res, outcomeReplayed, err
		}
		s.observeRefusal(ctx, "atomic", key, c.row.attempt, start, err)
		return res, outcomeFailed, err
	}
	s.observe(ctx, EventClaimed, "atomic", key, c.attempt, start, nil)

	s.enter(tok)
	defer s.leave(tok)
	var savepoint string
	if cfg.recordFailures {
		savepoint = savepointName()
		if _, err := ex.Exec(ctx, "SAVEPOINT "+savepoint); err != nil {
			e := s.dbError(ctx, "savepoint", key, err)
			return res, failedOutcome(e), s.release(ctx, ex, key, tok, e)
		}
	}
	v, err := callFn(ctx, s, ex, key, tok, cfg, fn)
	if err != nil {
		o, err := s.fnFailed(ctx, ex, key, tok, savepoint, cfg, err)
		if o == outcomeRecorded {
			s.observe(ctx, EventFailureRecorded, "atomic", key, c.attempt, start, err)
		}
		return res, o, err
	}
	if known {
		s.observe(ctx, EventCompleted, "atomic", key, c.attempt, start, nil)
		res.Value = v
		return res, outcomeExecuted, nil
	}
	encoded, err := encode(v, cfg, isInterface[T]())
	if err != nil {
		return res, outcomeFailed, s.release(ctx, ex, key, tok, err)
	}
	if ec != nil && ctx.Err() == nil {
		return completeCommit(ctx, s, ec, key, c.attempt, v, encoded, cfg, tok, start)
	}
	n, err := ex.Exec(ctx, s.stmts.Complete, string(encoded), cfg.ttl.Microseconds(), key, tok.owner)
	if err != nil {
		e := s.dbError(ctx, "complete", key, err)
		return res, failedOutcome(e), e
	}
	if n != 1 {
		return res, outcomeRetry, claimLost("complete", key)
	}
	s.observe(ctx, EventCompleted, "atomic", key, c.attempt, start, nil)
	res.Value = v
	return res, outcomeExecuted, nil
}

// completeCommit stores fn's result v and commits, in one round trip. The
// COMMIT leaves before the result's write is known to have found the
// claim: ec fails the transaction when it did not, so that fn's writes
// never commit without the claim's result.
func completeCommit[T any](ctx context.Context, s *core, ec idemdriver.ExecCommitter, key string, attempt int64, v T, encoded []byte, cfg *settings, tok claimToken, start time.Time) (Result[T], outcome, error) {
	var res Result[T]
	if e := s.execCommit(ctx, ec, "complete", "commit", key, s.stmts.Complete, string(encoded), cfg.ttl.Microseconds(), key, tok.owner); e != nil {
		return res, failedOutcome(e), e
	}
	s.observe(ctx, EventCompleted, "atomic", key, attempt, start, nil)
	res.Value = v
	return res, outcomeCommitted, nil
}

// execCommit runs q, a fenced write, and the COMMIT in one round trip
// (ec), and says what became of them: nil when both took effect; the
// write's error (op), or claimLost when it found no claim, when nothing
// was committed and the transaction is to be rolled back; else the
// COMMIT's (commitOp), whose outcome may be unknown.
func (s *core) execCommit(ctx context.Context, ec idemdriver.ExecCommitter, op, commitOp, key, q string, args ...any) error {
	wrote, err, cerr := ec.ExecCommit(ctx, q, args...)
	switch {
	case err != nil:
		return s.dbError(ctx, op, key, err)
	case cerr != nil:
		return s.commitError(ctx, commitOp, key, cerr, true)
	case !wrote:
		return claimLost(op, key)
	}
	return nil
}

// claimLost is the error of a fenced write that found no claim of its own:
// fn ran, but the transaction that held the claim is gone (the database
// rolled it back, and the session went on without it), so nothing of fn's
// writes can commit with a result.
func claimLost(op, key string) error {
	return &Error{Op: op, Key: key, Kind: ErrRetryable,
		Err: errors.New("the claim is gone: the database ended the transaction while fn ran")}
}

// callFn runs fn. If fn panics, the claim is recorded as failed with class
// [PanicClass] before the panic goes on: the caller will normally roll
// back, and then nothing is left; a caller that recovers and commits keeps
// fn's partial writes, and the key then answers with that failure instead of
// running fn a second time.
func callFn[T any](ctx context.Context, s *core, ex idemdriver.Executor, key string, tok claimToken, cfg *settings, fn func(context.Context) (T, error)) (T, error) {
	panicked := true
	defer func() {
		if panicked {
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), panicWriteLimit)
			defer cancel()
			_, _ = ex.Exec(wctx, s.stmts.Fail, PanicClass, "fn panicked; the transaction that claimed the key was committed anyway",
				cfg.ttl.Microseconds(), key, tok.owner)
		}
	}()
	v, err := fn(ctx)
	panicked = false
	return v, err
}

// panicWriteLimit bounds the statement that records a panic, so that a
// panicking call cannot hang on a dead connection.
const panicWriteLimit = 5 * time.Second

// fnFailed handles fn's error. A database error that ended the transaction
// comes back matching [ErrRetryable], and nothing more is sent: on MySQL and
// SQLite a statement sent now would run outside the transaction. So does an
// error of fn's own when the dialect shows that the session already left the
// transaction ([idemdriver.TxChecker]): fn swallowed the error that ended
// it, or committed the transaction itself. Otherwise the claim is removed,
// or, for a [Permanent] error under [Options.RecordFailures], recorded. If
// ctx ended, fn's error comes back as it is: the context is its class.
func (s *core) fnFailed(ctx context.Context, ex idemdriver.Executor, key string, tok claimToken, savepoint string, cfg *settings, fnErr error) (outcome, error) {
	if errors.Is(fnErr, ErrRetryable) {
		// fn asks for the transaction to run again, or passes on a nested
		// call's lost transaction: it is rolled back either way.
		return outcomeRetry, fnErr
	}
	k := s.classify(fnErr)
	if k == idemdriver.KindLockTimeout && ctx.Err() == nil {
		if d, ok := s.dialect.(idemdriver.LockTimeoutEnder); ok {
			if ends, err := d.LockTimeoutEndsTx(ctx, ex); err == nil && ends {
				k = idemdriver.KindTxEnded
			}
		}
	}
	if endsTx(k) {
		if ctx.Err() == nil && kindSentinel("fn", k) == ErrRetryable {
			return outcomeRetry, &Error{Op: "fn", Key: key, Kind: ErrRetryable, Err: unclassed(fnErr)}
		}
		return outcomeFailed, fnErr
	}
	if d, ok := s.dialect.(idemdriver.TxChecker); ok && ctx.Err() == nil {
		if in, known := d.InTransaction(ctx, ex); known && !in {
			// fn went on past an error that ended the transaction, or
			// committed or rolled it back itself, and then failed for a
			// reason of its own. The claim went with the transaction,
			// committed or not: a release sent now would run outside it and
			// could delete a committed claim, whose fn's effects may have
			// committed too (ErrAbandoned from then on).
			return outcomeRetry, &Error{Op: "fn", Key: key, Kind: ErrRetryable,
				Err: fmt.Errorf("the session left the transaction under fn: %w", unclassed(fnErr))}
		}
	}
	// A time-out is no answer of the key's, whatever fn called it: the
	// next call may well get through.
	if class, ok := IsPermanent(fnErr); ok && cfg.recordFailures && ctx.Err() == nil && k != idemdriver.KindLockTimeout && k != idemdriver.KindStatementTimeout {
		return s.recordFailure(ctx, ex, key, tok, savepoint, class, cfg, fnErr)
	}
	rerr := s.sendRelease(ctx, ex, key, tok)
	if rerr != nil && ctx.Err() == nil && kindSentinel("release", s.classify(rerr)) == ErrRetryable {
		// The connection or the transaction went while fn ran, although
		// ctx is live: most often a context of fn's own ended under one of
		// its statements, and pgx and go-sql-driver closed the connection,
		// reporting nothing but that context's error.
		return outcomeRetry, &Error{Op: "fn", Key: key, Kind: ErrRetryable,
			Err: fmt.Errorf("the transaction was lost under fn: %w", unclassed(fnErr))}
	}
	return outcomeFailed, s.released(key, rerr, fnErr)
}

// isInterface reports whether T is an interface type.
func isInterface[T any]() bool { return reflect.TypeFor[T]().Kind() == reflect.Interface }

// unclassed is fn's error to wrap in an error of class ErrRetryable: as it
// is, unless it holds a class of its own (a nested call's ErrLockTimeout,
// say, or the error of a context of fn's own that ended: ctx is live
// wherever this is called), which would make two; then its text only.
func unclassed(fnErr error) error {
	if classed(fnErr) || errors.Is(fnErr, context.Canceled) || errors.Is(fnErr, context.DeadlineExceeded) {
		return errors.New(fnErr.Error())
	}
	return fnErr
}

// encode encodes fn's result v. held says that the result type is an
// interface type: a replay decodes into it what encoding/json makes of
// JSON without a type, which the built-in codecs check v against.
func encode(v any, cfg *settings, held bool) ([]byte, error) {
	encoded, err := cfg.codec.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %T: %w", ErrEncode, v, err)
	}
	if held && !cfg.customCodec {
		if err := checkJSONLossHeld(v, encoded, "result", true, true); err != nil {
			return nil, fmt.Errorf("%w: %T: %w", ErrEncode, v, err)
		}
	}
	if cfg.customCodec && !json.Valid(encoded) {
		return nil, fmt.Errorf("%w: the codec's output for %T is not JSON", ErrEncode, v)
	}
	if len(encoded) > cfg.maxResultSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrResultTooLarge, len(encoded), cfg.maxResultSize)
	}
	return encoded, nil
}

// storedRow is the part of a row that decides a duplicate's outcome.
type storedRow struct {
	status       string
	fingerprint  []byte
	result       []byte
	attempt      int64
	owner        sql.NullString
	expired      bool
	leased       bool
	errorClass   sql.NullString
	errorMessage sql.NullString
}

func (r *storedRow) scanDest() []any {
	return []any{&r.status, &r.fingerprint, &r.result, &r.attempt, &r.owner, &r.expired, &r.leased, &r.errorClass, &r.errorMessage}
}

type claimOutcome struct {
	claimed bool
	attempt int64     // when claimed
	row     storedRow // when not claimed
}

// boundedClaim claims under the in-flight policy. Whether a replay must
// write is ex's to tell: the executor a dialect wraps ex in to bound the
// claim (MariaDB's per-statement setting) knows nothing of the server.
func (s *core) boundedClaim(ctx context.Context, ex idemdriver.Executor, key string, cfg *settings, known bool, tok claimToken, start time.Time) (claimOutcome, error) {
	early := visibleBeforeDurable(ex)
	failFast := cfg.failFast
	if !failFast && cfg.lockTimeout == 0 {
		return s.claim(ctx, ex, key, cfg, known, early, tok, start)
	}
	if failFast && s.stmts.TryLock != "" {
		return s.claimUnlessLocked(ctx, ex, key, cfg, known, early, tok, start)
	}
	var c claimOutcome
	var claimErr error
	timedOut, err := s.dialect.(idemdriver.ClaimBounder).BoundClaim(ctx, ex, cfg.lockTimeout, failFast, func(bex idemdriver.Executor) error {
		c, claimErr = s.claim(ctx, bex, key, cfg, known, early, tok, start)
		var e *Error
		if errors.As(claimErr, &e) && e.Err != nil {
			return e.Err // the driver's error, for the dialect to read
		}
		return claimErr
	})
	if ctx.Err() != nil {
		// database/sql may have rolled the transaction back under the
		// claim, before the dialect could put a session setting back.
		if d, ok := ex.(idemdriver.SessionDropper); ok {
			d.DropSession()
		}
	}
	switch {
	case timedOut:
		kind := ErrLockTimeout
		if failFast {
			kind = ErrInProgress
		}
		if ctx.Err() != nil {
			return c, s.dbError(ctx, "claim", key, err)
		}
		return c, &Error{Op: "claim", Key: key, Kind: kind, Err: err}
	case claimErr != nil:
		return c, claimErr
	case err != nil:
		return c, s.dbError(ctx, "claim", key, err)
	}
	return c, nil
}

// claimUnlessLocked is a fail-fast claim through the dialect's TryLock:
// when another transaction holds the key's lock, it answers from the
// committed row, without waiting, or ErrInProgress.
func (s *core) claimUnlessLocked(ctx context.Context, ex idemdriver.Executor, key string, cfg *settings, known, early bool, tok claimToken, start time.Time) (claimOutcome, error) {
	var got bool
	if err := ex.QueryRow(ctx, s.stmts.TryLock, key).Scan(&got); err != nil {
		return claimOutcome{}, s.dbError(ctx, "claim", key, err)
	}
	if got {
		return s.claim(ctx, ex, key, cfg, known, early, tok, start)
	}
	// The holder may be claiming the key, or replaying it: a committed
	// outcome replays as any duplicate's would. An expired one is being
	// claimed again.
	var r storedRow
	err := ex.QueryRow(ctx, s.stmts.Read, micros(time.Since(start)), key).Scan(r.scanDest()...)
	switch {
	case err == nil && (!r.expired || r.status == StatusInProgress):
		return claimOutcome{row: r}, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return claimOutcome{}, s.dbError(ctx, "read", key, err)
	}
	return claimOutcome{}, &Error{Op: "claim", Key: key, Kind: ErrInProgress, Err: errors.New("another transaction holds the key")}
}

// maxClaimRounds bounds the loop below. A round only repeats when the row
// changed between two statements (purged, or re-claimed by another
// transaction), which needs a concurrent writer each time.
const maxClaimRounds = 4

func micros(d time.Duration) int64 { return d.Microseconds() }

// claim claims the key, or reads the row that holds it. With known, a claim
// stores the row completed with the empty result; with early (the server
// may show a commit before it is durable), a claim of a key that exists
// writes its row.
func (s *core) claim(ctx context.Context, ex idemdriver.Executor, key string, cfg *settings, known, early bool, tok claimToken, start time.Time) (claimOutcome, error) {
	ttl := cfg.ttl.Microseconds()
	claimSQL, claimOrReadSQL, reclaimSQL := s.stmts.Claim, s.stmts.ClaimOrRead, s.stmts.Reclaim
	if known {
		claimSQL, claimOrReadSQL, reclaimSQL = s.stmts.ClaimCompleted, s.stmts.ClaimOrReadCompleted, s.stmts.ReclaimCompleted
	} else if s.stmts.ClaimOrTouch != "" && early {
		// A replay must not answer before the outcome it read is durable.
		claimSQL = s.stmts.ClaimOrTouch
	}
	for round := 0; round < maxClaimRounds; round++ {
		var r storedRow
		found := false
		if claimOrReadSQL != "" {
			var claimed bool
			err := ex.QueryRow(ctx, claimOrReadSQL, key, cfg.fingerprint, tok.owner, ttl, micros(time.Since(start))).Scan(
				append([]any{&claimed}, r.scanDest()...)...)
			switch {
			case err == nil && claimed:
				return claimOutcome{claimed: true, attempt: 1}, nil
			case err == nil:
				found = true
			case !errors.Is(err, sql.ErrNoRows):
				return claimOutcome{}, s.dbError(ctx, "claim", key, err)
			}
			// No row: the claim waited for another transaction's claim of
			// the key, which the statement's snapshot cannot see. Read it.
		} else {
			n, err := ex.Exec(ctx, claimSQL, key, cfg.fingerprint, tok.owner, ttl)
			if err != nil {
				if s.classify(err) != idemdriver.KindDuplicateKey {
					return claimOutcome{}, s.dbError(ctx, "claim", key, err)
				}
				n = 0
			}
			if n == 1 {
				return claimOutcome{claimed: true, attempt: 1}, nil
			}
		}

		if !found {
			err := ex.QueryRow(ctx, s.stmts.Read, micros(time.Since(start)), key).Scan(r.scanDest()...)
			if errors.Is(err, sql.ErrNoRows) {
				continue // deleted since the claim saw it: claim again
			}
			if err != nil {
				return claimOutcome{}, s.dbError(ctx, "read", key, err)
			}
		}
		// An in_progress row is never free by age: it may stand for an
		// effect that happened.
		if !r.expired || r.status == StatusInProgress {
			return claimOutcome{row: r}, nil
		}

		n, err := ex.Exec(ctx, reclaimSQL, cfg.fingerprint, tok.owner, ttl, key, r.attempt, micros(time.Since(start)))
		if err != nil {
			return claimOutcome{}, s.dbError(ctx, "reclaim", key, err)
		}
		if n == 1 {
			return claimOutcome{claimed: true, attempt: r.attempt + 1}, nil
		}
		// Another transaction re-claimed it first; read what it left.
	}
	return claimOutcome{}, &Error{Op: "claim", Key: key, Kind: ErrUnexpectedState,
		Err: fmt.Errorf("the row changed under %d consecutive claims", maxClaimRounds)}
}

func replay[T any](s *core, key string, r storedRow, cfg *settings) (Result[T], error) {
	var res Result[T]
	if !bytes.Equal(r.fingerprint, cfg.fingerprint) {
		return res, &Error{Op: "claim", Key: key, Kind: ErrFingerprintMismatch}
	}
	switch r.status {
	case StatusCompleted:
		if err := cfg.codec.Unmarshal(r.result, &res.Value); err != nil {
			return res, &Error{Op: "decode", Key: key, Kind: ErrDecode, Err: fmt.Errorf("into %T: %w", res.Value, err)}
		}
		res.Replayed = true
		if cfg.errorOnDuplicate {
			return res, &Error{Op: "claim", Key: key, Kind: ErrDuplicate}
		}
		return res, nil
	case StatusFailed:
		res.Replayed = true
		return res, &Error{Op: "claim", Key: key, Kind: ErrFailureRecorded, Class: r.errorClass.String, Message: r.errorMessage.String}
	case StatusInProgress:
		switch {
		case r.leased:
			return res, &Error{Op: "claim", Key: key, Kind: ErrInProgress, Err: fmt.Errorf("held by a lease at attempt %d", r.attempt)}
		case s != nil && s.running(r.owner.String):
			// A claim made in a transaction is invisible to every other
			// transaction until it commits: one whose fn still runs is this
			// transaction's own.
			return res, &Error{Op: "claim", Key: key, Kind: ErrReentrant}
		}
		return res, &Error{Op: "claim", Key: key, Kind: ErrAbandoned,
			Err: fmt.Errorf("claimed at attempt %d by %s and committed without an outcome", r.attempt, r.owner.String)}
	}
	return res, &Error{Op: "read", Key: key, Kind: ErrUnexpectedState, Err: fmt.Errorf("unknown status %q", r.status)}
}

// recordFailure undoes fn's writes back to the savepoint and stores the
// failure in the claim.
func (s *core) recordFailure(ctx context.Context, ex idemdriver.Executor, key string, tok claimToken, savepoint, class string, cfg *settings, cause error) (outcome, error) {
	ctx = context.WithoutCancel(ctx) // the failure is fn's answer; record it even if ctx ended
	if _, err := ex.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
		return s.recordFailed(ctx, key, cause, err)
	}
	class = truncateUTF8(class, maxErrorClass)
	msg := truncateUTF8(cause.Error(), maxErrorMessage)
	n, err := ex.Exec(ctx, s.stmts.Fail, class, msg, cfg.ttl.Microseconds(), key, tok.owner)
	if err != nil {
		return s.recordFailed(ctx, key, cause, err)
	}
	if n != 1 {
		return outcomeRetry, errors.Join(cause, claimLost("record failure", key))
	}
	return outcomeRecorded, &Error{Op: "record failure", Key: key, Kind: ErrFailureRecorded, Class: class, Message: msg, Err: cause}
}

func (s *core) recordFailed(ctx context.Context, key string, cause, err error) (outcome, error) {
	e := s.dbError(ctx, "record failure", key, err)
	if endsTx(s.classify(err)) {
		if o := failedOutcome(e); o == outcomeRetry {
			return o, errors.Join(unclassed(cause), e)
		}
		return outcomeFailed, errors.Join(cause, e)
	}
	e.Kind = ErrUnexpectedState
	e.Err = fmt.Errorf("failure not recorded, roll the transaction back: %w", err)
	return outcomeFailed, errors.Join(cause, e)
}

// release removes the claim after fn failed, so that a caller who commits
// anyway leaves the key free. It runs even when ctx is already cancelled.
// If the transaction can no longer commit, the claim goes with it, and that
// is not worth reporting.
func (s *core) release(ctx context.Context, ex idemdriver.Executor, key string, tok claimToken, cause error) error {
	return s.released(key, s.sendRelease(ctx, ex, key, tok), cause)
}

func (s *core) sendRelease(ctx context.Context, ex idemdriver.Executor, key string, tok claimToken) error {
	_, err := ex.Exec(context.WithoutCancel(ctx), s.stmts.Release, key, tok.owner)
	return err
}

// released is cause, after a release that failed with err (if not nil).
func (s *core) released(key string, err, cause error) error {
	if err == nil || endsTx(s.classify(err)) {
		return cause
	}
	return errors.Join(cause, &Error{Op: "release", Key: key, Kind: ErrUnexpectedState,
		Err: fmt.Errorf("claim not removed, roll the transaction back: %w", err)})
}
