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

// Do runs fn at most once per key, in the caller's transaction tx.
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
//     (after a rollback). [WithInFlight] and [WithLockTimeout] change that.
//   - If fn returns an error, Do returns that error unchanged and removes
//     its claim; roll the transaction back to undo fn's writes. If the claim
//     could not be removed the error says so, and the transaction must be
//     rolled back. With [WithRecordedFailures], an error made with
//     [Permanent] is recorded instead: see there.
//   - A key whose TTL has passed is treated as absent: it is claimed again
//     in place and its attempt counted.
//   - A nested Do with a key its own transaction is still inside returns
//     [ErrReentrant]. When fn returns struct{}, the row is stored completed
//     with the claim (one statement fewer), so a nested call replays the
//     empty result instead; its fn does not run either.
//
// fn receives ctx. Errors that reach the database come back as [*Error]
// wrapping a sentinel such as [ErrRetryable] (roll back and run the whole
// transaction again) or [ErrLockTimeout]. [Run] does the transaction
// handling and the retries for callers who have no transaction of their own.
//
// Options: [WithTTL], [WithFingerprint], [WithOnDuplicate], [WithInFlight],
// [WithLockTimeout], [WithRecordedFailures], [WithCodec],
// [WithMaxResultSize].
func Do[T any](ctx context.Context, tx Tx, key string, fn func(ctx context.Context) (T, error), opts ...Option) (Result[T], error) {
	if tx.store == nil || tx.exec == nil {
		return Result[T]{}, errUnbound
	}
	cfg, err := tx.store.callSettings(key, opts)
	if err != nil {
		return Result[T]{}, err
	}
	if fn == nil {
		return Result[T]{}, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	return do(ctx, tx.store, tx.exec, key, fn, &cfg)
}

// callSettings checks the key and merges a call's options over the store's.
func (s *Store) callSettings(key string, opts []Option) (settings, error) {
	if err := ValidateKey(key); err != nil {
		return settings{}, err
	}
	cfg := s.defaults
	if len(opts) > 0 {
		if err := applyOptions(&cfg, opts, inAtomic); err != nil {
			return settings{}, err
		}
	}
	if cfg.inFlight == InFlightFailFast || cfg.lockTimeout > 0 {
		if _, ok := s.dialect.(ClaimBounder); !ok {
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

func do[T any](ctx context.Context, s *Store, ex Executor, key string, fn func(context.Context) (T, error), cfg *settings) (Result[T], error) {
	var res Result[T]
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("idemsql: %q not started: %w", key, err)
	}

	// A result known in advance is stored with the claim, which saves the
	// Complete statement.
	known := reflect.TypeFor[T]() == emptyResultType && !cfg.customCodec && !cfg.recordFailures &&
		s.stmts.ClaimCompleted != ""
	c, err := s.boundedClaim(ctx, ex, key, cfg, known)
	if err != nil {
		return res, err
	}
	if !c.claimed {
		return replay[T](key, c.row, cfg)
	}

	var savepoint string
	if cfg.recordFailures {
		savepoint = savepointName()
		if _, err := ex.Exec(ctx, "SAVEPOINT "+savepoint); err != nil {
			return res, s.release(ctx, ex, key, c.attempt, s.dbError(ctx, "savepoint", key, err))
		}
	}
	v, err := fn(ctx)
	if err != nil {
		if class, ok := IsPermanent(err); ok && cfg.recordFailures {
			return res, s.recordFailure(ctx, ex, key, c.attempt, savepoint, class, err)
		}
		return res, s.release(ctx, ex, key, c.attempt, err)
	}
	if known {
		res.Value = v
		return res, nil
	}
	encoded, err := encode(v, cfg)
	if err != nil {
		return res, s.release(ctx, ex, key, c.attempt, err)
	}
	n, err := ex.Exec(ctx, s.stmts.Complete, string(encoded), key, c.attempt)
	if err != nil {
		return res, s.dbError(ctx, "complete", key, err)
	}
	if n != 1 {
		return res, &Error{Op: "complete", Key: key, Kind: ErrUnexpectedState,
			Err: fmt.Errorf("claim at attempt %d is gone; roll the transaction back", c.attempt)}
	}
	res.Value = v
	return res, nil
}

func encode(v any, cfg *settings) ([]byte, error) {
	encoded, err := cfg.codec.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %T: %w", ErrEncode, v, err)
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
	expired      bool
	leased       bool
	errorClass   sql.NullString
	errorMessage sql.NullString
}

type claimOutcome struct {
	claimed bool
	attempt int64     // when claimed
	row     storedRow // when not claimed
}

// boundedClaim claims under the in-flight policy.
func (s *Store) boundedClaim(ctx context.Context, ex Executor, key string, cfg *settings, known bool) (claimOutcome, error) {
	failFast := cfg.inFlight == InFlightFailFast
	if !failFast && cfg.lockTimeout == 0 {
		return s.claim(ctx, ex, key, cfg, known)
	}
	var c claimOutcome
	var claimErr error
	timedOut, err := s.dialect.(ClaimBounder).BoundClaim(ctx, ex, cfg.lockTimeout, failFast, func() error {
		c, claimErr = s.claim(ctx, ex, key, cfg, known)
		return claimErr
	})
	switch {
	case timedOut && failFast:
		return c, &Error{Op: "claim", Key: key, Kind: ErrInProgress, Err: err}
	case timedOut:
		return c, &Error{Op: "claim", Key: key, Kind: ErrLockTimeout, Err: err}
	case err != nil:
		if claimErr == nil {
			return c, s.dbError(ctx, "claim", key, err)
		}
		return c, err
	}
	return c, nil
}

// maxClaimRounds bounds the loop below. A round only repeats when the row
// changed between two statements (purged, or re-claimed by another
// transaction), which needs a concurrent writer each time.
const maxClaimRounds = 4

// claim claims the key, or reads the row that holds it. With known, a claim
// stores the row completed with the empty result.
func (s *Store) claim(ctx context.Context, ex Executor, key string, cfg *settings, known bool) (claimOutcome, error) {
	ttl := cfg.ttl.Microseconds()
	claimSQL, claimOrReadSQL, reclaimSQL := s.stmts.Claim, s.stmts.ClaimOrRead, s.stmts.Reclaim
	if known {
		claimSQL, claimOrReadSQL, reclaimSQL = s.stmts.ClaimCompleted, s.stmts.ClaimOrReadCompleted, s.stmts.ReclaimCompleted
	}
	for round := 0; round < maxClaimRounds; round++ {
		var r storedRow
		found := false
		if claimOrReadSQL != "" {
			var claimed bool
			err := ex.QueryRow(ctx, claimOrReadSQL, key, cfg.fingerprint, s.owner, ttl).Scan(
				&claimed, &r.status, &r.fingerprint, &r.result, &r.attempt, &r.expired, &r.leased, &r.errorClass, &r.errorMessage)
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
			n, err := ex.Exec(ctx, claimSQL, key, cfg.fingerprint, s.owner, ttl)
			if err != nil {
				if s.dialect.Classify(err) != KindDuplicateKey {
					return claimOutcome{}, s.dbError(ctx, "claim", key, err)
				}
				n = 0
			}
			if n == 1 {
				return claimOutcome{claimed: true, attempt: 1}, nil
			}
		}

		if !found {
			err := ex.QueryRow(ctx, s.stmts.Read, key).Scan(
				&r.status, &r.fingerprint, &r.result, &r.attempt, &r.expired, &r.leased, &r.errorClass, &r.errorMessage)
			if errors.Is(err, sql.ErrNoRows) {
				continue // deleted since the claim saw it: claim again
			}
			if err != nil {
				return claimOutcome{}, s.dbError(ctx, "read", key, err)
			}
		}
		// An in_progress lease-mode claim may hide an external effect that
		// happened: only lease mode may take it over, however old it is.
		if !r.expired || (r.status == StatusInProgress && r.leased) {
			return claimOutcome{row: r}, nil
		}

		n, err := ex.Exec(ctx, reclaimSQL, cfg.fingerprint, s.owner, ttl, key, r.attempt)
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

func replay[T any](key string, r storedRow, cfg *settings) (Result[T], error) {
	var res Result[T]
	if !bytes.Equal(r.fingerprint, cfg.fingerprint) {
		return res, &Error{Op: "claim", Key: key, Kind: ErrFingerprintMismatch}
	}
	switch r.status {
	case StatusCompleted:
		if err := cfg.codec.Unmarshal(r.result, &res.Value); err != nil {
			return res, fmt.Errorf("%w: key %q into %T: %w", ErrDecode, key, res.Value, err)
		}
		res.Replayed = true
		if cfg.onDuplicate == OnDuplicateError {
			return res, &DuplicateError{Key: key, Result: r.result}
		}
		return res, nil
	case StatusFailed:
		return res, &FailureError{Key: key, Class: r.errorClass.String, Message: r.errorMessage.String, Replayed: true}
	case StatusInProgress:
		// A claim made inside a transaction has no lease and is invisible
		// to every other transaction until it completes: one seen here is
		// this transaction's own.
		if !r.leased {
			return res, &Error{Op: "claim", Key: key, Kind: ErrReentrant}
		}
		return res, &Error{Op: "claim", Key: key, Kind: ErrInProgress, Err: fmt.Errorf("held at attempt %d", r.attempt)}
	}
	return res, &Error{Op: "read", Key: key, Kind: ErrUnexpectedState, Err: fmt.Errorf("unknown status %q", r.status)}
}

// recordFailure undoes fn's writes back to the savepoint and stores the
// failure in the claim.
func (s *Store) recordFailure(ctx context.Context, ex Executor, key string, attempt int64, savepoint, class string, cause error) error {
	ctx = context.WithoutCancel(ctx) // the failure is fn's answer; record it even if ctx ended
	if _, err := ex.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
		return errors.Join(cause, s.dbError(ctx, "record failure", key, err))
	}
	class = truncateUTF8(class, maxErrorClass)
	msg := truncateUTF8(cause.Error(), maxErrorMessage)
	n, err := ex.Exec(ctx, s.stmts.Fail, class, msg, key, attempt)
	if err != nil {
		return errors.Join(cause, s.dbError(ctx, "record failure", key, err))
	}
	if n != 1 {
		return errors.Join(cause, &Error{Op: "record failure", Key: key, Kind: ErrUnexpectedState,
			Err: fmt.Errorf("claim at attempt %d is gone", attempt)})
	}
	return &FailureError{Key: key, Class: class, Message: msg, Err: cause}
}

// release removes the claim after fn failed, so that a caller who commits
// anyway leaves the key free. It runs even when ctx is already cancelled.
// If the transaction is already aborted (PostgreSQL), it cannot commit
// either, so that failure is not worth reporting.
func (s *Store) release(ctx context.Context, ex Executor, key string, attempt int64, cause error) error {
	_, err := ex.Exec(context.WithoutCancel(ctx), s.stmts.Release, key, attempt)
	if err == nil || errors.Is(err, sql.ErrTxDone) || s.dialect.Classify(err) == KindTxAborted {
		return cause
	}
	return errors.Join(cause, &Error{Op: "release", Key: key, Kind: ErrUnexpectedState,
		Err: fmt.Errorf("claim not removed, roll the transaction back: %w", err)})
}
