package idemsql

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

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
//     (after a rollback).
//   - If fn returns an error, Do returns that error unchanged and removes
//     its claim; roll the transaction back to undo fn's writes. If the claim
//     could not be removed the error says so, and the transaction must be
//     rolled back.
//   - A key whose TTL has passed is treated as absent: it is claimed again
//     in place and its attempt counted.
//
// fn receives ctx. Errors that reach the database come back as [*Error]
// wrapping a sentinel such as [ErrRetryable] (roll back and run the whole
// transaction again) or [ErrLockTimeout]. Options: [WithTTL],
// [WithFingerprint].
func Do[T any](ctx context.Context, tx Tx, key string, fn func(ctx context.Context) (T, error), opts ...Option) (Result[T], error) {
	var res Result[T]
	s := tx.store
	if s == nil || tx.exec == nil {
		return res, errUnbound
	}
	if fn == nil {
		return res, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	if err := ValidateKey(key); err != nil {
		return res, err
	}
	cfg := s.defaults
	if len(opts) > 0 {
		if err := applyOptions(&cfg, opts, true); err != nil {
			return res, err
		}
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("idemsql: %q not started: %w", key, err)
	}

	c, err := s.claim(ctx, tx.exec, key, &cfg)
	if err != nil {
		return res, err
	}
	if !c.claimed {
		return replay[T](key, c.row, cfg.fingerprint)
	}

	v, err := fn(ctx)
	if err != nil {
		return res, s.release(ctx, tx.exec, key, c.attempt, err)
	}
	encoded, err := json.Marshal(v)
	if err != nil {
		return res, s.release(ctx, tx.exec, key, c.attempt, fmt.Errorf("%w: %w", ErrEncode, err))
	}
	n, err := tx.exec.Exec(ctx, s.stmts.Complete, string(encoded), key, c.attempt)
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

// storedRow is the part of a row that decides a duplicate's outcome.
type storedRow struct {
	status       string
	fingerprint  []byte
	result       []byte
	attempt      int64
	expired      bool
	errorClass   sql.NullString
	errorMessage sql.NullString
}

type claimOutcome struct {
	claimed bool
	attempt int64     // when claimed
	row     storedRow // when not claimed
}

// maxClaimRounds bounds the loop below. A round only repeats when the row
// changed between two statements (purged, or re-claimed by another
// transaction), which needs a concurrent writer each time.
const maxClaimRounds = 4

func (s *Store) claim(ctx context.Context, ex Executor, key string, cfg *settings) (claimOutcome, error) {
	ttl := cfg.ttl.Microseconds()
	for round := 0; round < maxClaimRounds; round++ {
		n, err := ex.Exec(ctx, s.stmts.Claim, key, cfg.fingerprint, s.owner, ttl)
		if err != nil {
			if s.dialect.Classify(err) != KindDuplicateKey {
				return claimOutcome{}, s.dbError(ctx, "claim", key, err)
			}
			n = 0
		}
		if n == 1 {
			return claimOutcome{claimed: true, attempt: 1}, nil
		}

		var r storedRow
		err = ex.QueryRow(ctx, s.stmts.Read, key).Scan(
			&r.status, &r.fingerprint, &r.result, &r.attempt, &r.expired, &r.errorClass, &r.errorMessage)
		if errors.Is(err, sql.ErrNoRows) {
			continue // deleted since the claim saw it: claim again
		}
		if err != nil {
			return claimOutcome{}, s.dbError(ctx, "read", key, err)
		}
		if !r.expired {
			return claimOutcome{row: r}, nil
		}

		n, err = ex.Exec(ctx, s.stmts.Reclaim, cfg.fingerprint, s.owner, ttl, key, r.attempt)
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

func replay[T any](key string, r storedRow, fingerprint []byte) (Result[T], error) {
	var res Result[T]
	if !bytes.Equal(r.fingerprint, fingerprint) {
		return res, fmt.Errorf("%w: key %q", ErrFingerprintMismatch, key)
	}
	switch r.status {
	case StatusCompleted:
		if err := json.Unmarshal(r.result, &res.Value); err != nil {
			return res, fmt.Errorf("%w: key %q into %T: %w", ErrDecode, key, res.Value, err)
		}
		res.Replayed = true
		return res, nil
	case StatusInProgress:
		return res, fmt.Errorf("%w: key %q (attempt %d)", ErrInProgress, key, r.attempt)
	case StatusFailed:
		return res, &Error{Op: "read", Key: key, Kind: ErrUnexpectedState,
			Err: fmt.Errorf("recorded failure %s: %s", r.errorClass.String, r.errorMessage.String)}
	}
	return res, &Error{Op: "read", Key: key, Kind: ErrUnexpectedState, Err: fmt.Errorf("unknown status %q", r.status)}
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
