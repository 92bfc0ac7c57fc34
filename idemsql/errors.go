package idemsql

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors. Test for them with [errors.Is]; the driver's own error,
// where there is one, stays wrapped and can be reached with [errors.As].
var (
	// ErrInvalidKey: the key is empty, longer than [MaxKeyLen] bytes, not
	// valid UTF-8, or contains a NUL byte. Nothing was written.
	ErrInvalidKey = errors.New("idemsql: invalid key")

	// ErrInvalidOption: an option is unknown (a zero Option), out of range,
	// or not allowed where it was given (a store option passed to Do, an
	// atomic-mode option passed to a lease-mode call or the reverse).
	ErrInvalidOption = errors.New("idemsql: invalid option")

	// ErrFingerprintMismatch: the key was used before with a different
	// request fingerprint. This is misuse of the key, never a replay: fn did
	// not run. HTTP APIs answer 422 here.
	ErrFingerprintMismatch = errors.New("idemsql: key reused with a different request fingerprint")

	// ErrInProgress: another holder has the key and has not finished: a
	// transaction, under the [InFlightFailFast] policy, or a claim held
	// outside any transaction. fn did not run.
	ErrInProgress = errors.New("idemsql: key is in progress")

	// ErrRetryable: the database refused the transaction in a way that means
	// "run the whole transaction again": a serialization failure (40001), a
	// deadlock (40P01, MySQL 1213), a snapshot conflict (MariaDB 1020) or a
	// busy SQLite database. Roll back and retry; a retry replays if another
	// transaction won the key in the meantime.
	ErrRetryable = errors.New("idemsql: transaction must be retried")

	// ErrLockTimeout: waiting for another transaction that holds the key took
	// longer than the database's lock timeout. On PostgreSQL the transaction
	// is aborted; on MySQL/MariaDB only the statement was rolled back.
	ErrLockTimeout = errors.New("idemsql: timed out waiting for the key's lock")

	// ErrEncode: fn's result could not be encoded by the codec. Atomic mode:
	// fn's business writes are in the transaction: roll it back; the claim
	// was removed. Lease mode: the effect happened, so the key is recorded
	// as failed with class [UnencodableClass].
	ErrEncode = errors.New("idemsql: cannot encode result")

	// ErrDecode: a stored result could not be decoded into the requested type
	// (the result type changed between deployments, or a different codec).
	ErrDecode = errors.New("idemsql: cannot decode stored result")

	// ErrResultTooLarge: the encoded result is larger than
	// [WithMaxResultSize] allows. Like ErrEncode: roll back (atomic mode),
	// recorded as [UnencodableClass] (lease mode).
	ErrResultTooLarge = errors.New("idemsql: result too large")

	// ErrDuplicate: under the [OnDuplicateError] policy, the key already
	// completed. The error is a [*DuplicateError] and the call's Result still
	// carries the stored value.
	ErrDuplicate = errors.New("idemsql: key already completed")

	// ErrFailureRecorded: the key's outcome is a recorded permanent failure
	// ([WithRecordedFailures]). The error is a [*FailureError] with the
	// failure's class and message.
	ErrFailureRecorded = errors.New("idemsql: permanent failure recorded")

	// ErrReentrant: the same transaction already claimed the key and is still
	// inside its fn (a nested Do with the same key). fn did not run.
	ErrReentrant = errors.New("idemsql: key already claimed by this transaction and not finished")

	// ErrUnexpectedState: the row is in a state this version cannot handle
	// (an unknown status, or a claim that vanished under the caller). The
	// transaction should be rolled back.
	ErrUnexpectedState = errors.New("idemsql: unexpected idempotency row state")
)

// Error is returned for every failure that reached the database. It carries
// the sentinel that says what the failure means (Kind), the key, the
// operation, and the driver's error (Err).
//
//	var e *idemsql.Error
//	if errors.As(err, &e) { log.Println(e.Op, e.Key) }
//	var pgErr *pgconn.PgError
//	if errors.As(err, &pgErr) { log.Println(pgErr.Code) }
type Error struct {
	// Op is the step that failed. Atomic mode: "begin", "claim", "read",
	// "reclaim", "savepoint", "complete", "record failure", "release",
	// "commit". Lease mode: "begin", "read", "claim", "reclaim", "take over",
	// "renew", "complete", "fail", "release", "sweep", "purge", and any of
	// them + ": commit" when the commit of its transaction failed.
	Op string
	// Key is the key concerned; empty for a step of Sweep or Purge that is
	// about no one key.
	Key  string
	Kind error // one of the sentinels above, or nil when the failure has no special meaning
	Err  error // the underlying error, typically the driver's
}

func (e *Error) Error() string {
	msg := "idemsql: " + e.Op
	if e.Key != "" {
		msg += " " + fmt.Sprintf("%q", e.Key)
	}
	if e.Kind != nil {
		msg += ": " + trimPrefix(e.Kind.Error())
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap makes both the meaning and the driver error reachable:
// errors.Is(err, ErrRetryable) and errors.As(err, &pgErr) both hold.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func trimPrefix(s string) string {
	const p = "idemsql: "
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

// ErrorKind is what a [Dialect] says a driver error means.
type ErrorKind int

const (
	KindOther ErrorKind = iota
	// KindDuplicateKey: a plain INSERT hit the primary key (MySQL 1062). Only
	// meaningful for dialects whose claim reports duplicates as errors.
	KindDuplicateKey
	KindRetryable
	KindLockTimeout
	// KindTxAborted: the transaction can no longer run statements
	// (PostgreSQL 25P02) and will roll back whatever the caller does.
	KindTxAborted
)

func (k ErrorKind) sentinel() error {
	switch k {
	case KindRetryable:
		return ErrRetryable
	case KindLockTimeout:
		return ErrLockTimeout
	}
	return nil
}

// dbError wraps a driver error with its meaning. A cancelled or expired
// context always shows through, whatever the driver made of it.
func (s *Store) dbError(ctx context.Context, op, key string, err error) error {
	kind := s.dialect.Classify(err)
	e := &Error{Op: op, Key: key, Kind: kind.sentinel(), Err: err}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		e.Err = errors.Join(err, cerr)
	}
	return e
}
