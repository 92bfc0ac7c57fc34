package idemsql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/idemsql/idemsql/idemdriver"
)

// Sentinel errors. Test for them with [errors.Is]; the driver's own error,
// where there is one, stays wrapped and can be reached with [errors.As].
var (
	// ErrInvalidKey: the key is empty, longer than [MaxKeyLen] bytes, not
	// valid UTF-8, or contains a NUL byte. Nothing was written.
	ErrInvalidKey = errors.New("idemsql: invalid key")

	// ErrInvalidOption: a field of [Options] is out of range or not allowed
	// where it was given (a store option passed to Do, an atomic-mode
	// option passed to a lease-mode call or the reverse), or a call was
	// given more than one Options. Also a nil store or driver, and a
	// method of a [Lease] that was not held.
	ErrInvalidOption = errors.New("idemsql: invalid option")

	// ErrFingerprintMismatch: the key was used before with a different
	// request fingerprint. This is misuse of the key, never a replay: fn did
	// not run. HTTP APIs answer 422 here.
	ErrFingerprintMismatch = errors.New("idemsql: key reused with a different request fingerprint")

	// ErrInProgress: another holder has the key and has not finished: a
	// transaction, under the [Options.FailFast] policy, or a claim held
	// outside any transaction. fn did not run.
	ErrInProgress = errors.New("idemsql: key is in progress")

	// ErrRetryable: the transaction is lost and must be run again from the
	// start: the database refused it (a serialization failure 40001, a
	// deadlock 40P01 or MySQL 1213, a snapshot conflict MariaDB 1020, a
	// Galera certification failure, a busy SQLite database), rolled it back
	// under fn, or lost the connection before COMMIT. Roll back and run the
	// whole transaction again; the retry replays if another transaction
	// won the key meanwhile. [Run] does this for you. fn's own database
	// error of one of these kinds matches it too, still wrapped. So does a
	// COMMIT that certainly did not commit ([Store.CommitError]).
	ErrRetryable = errors.New("idemsql: transaction must be retried")

	// ErrCommitUnknown: the connection was lost while COMMIT was under way
	// (or, on SQLite, COMMIT met an I/O error), so whether the transaction
	// committed is unknown. Call again with the same key: the call replays
	// the outcome if it committed and runs fn if it did not. [Run] and lease
	// mode return it rather than guessing; [Store.CommitError] gives it for
	// the COMMIT of a [Do] caller. [Do] itself never does: it does not
	// commit.
	ErrCommitUnknown = errors.New("idemsql: commit outcome unknown")

	// ErrLockTimeout: waiting for another transaction that holds the key took
	// longer than the database's lock timeout ([Options.LockTimeout]) or
	// statement timeout (PostgreSQL statement_timeout, MariaDB
	// max_statement_time, MySQL max_execution_time). fn did not run. On
	// PostgreSQL the transaction is aborted; on MySQL/MariaDB only the
	// statement was rolled back, unless the server runs with
	// innodb_rollback_on_timeout=ON.
	ErrLockTimeout = errors.New("idemsql: timed out waiting for the key's lock")

	// ErrEncode: fn's result could not be encoded by the codec, or the JSON
	// codec found that a replay would not return it as it is (invalid
	// UTF-8, unexported fields: see [JSON]). Atomic mode:
	// fn's business writes are in the transaction: roll it back; the claim
	// was removed. Lease mode: the effect happened, so the key is recorded
	// as failed with class [UnencodableClass].
	ErrEncode = errors.New("idemsql: cannot encode result")

	// ErrDecode: a stored result could not be decoded into the requested type
	// (the result type changed between deployments, a stored field the type
	// no longer has — see [LenientJSON] —, or a different codec).
	ErrDecode = errors.New("idemsql: cannot decode stored result")

	// ErrResultTooLarge: the encoded result is larger than
	// [Options.MaxResultSize] allows. Like ErrEncode: roll back (atomic mode),
	// recorded as [UnencodableClass] (lease mode).
	ErrResultTooLarge = errors.New("idemsql: result too large")

	// ErrDuplicate: with [Options.ErrorOnDuplicate], the key already
	// completed. The error is an [*Error]; the call's Result still carries
	// the stored value, with Replayed set.
	ErrDuplicate = errors.New("idemsql: key already completed")

	// ErrFailureRecorded: the key's outcome is a recorded permanent failure
	// ([Options.RecordFailures]). The error is an [*Error] with the
	// failure's Class and Message.
	ErrFailureRecorded = errors.New("idemsql: permanent failure recorded")

	// ErrReentrant: the same transaction already claimed the key and is still
	// inside its fn (a nested Do with the same key). fn did not run.
	ErrReentrant = errors.New("idemsql: key already claimed by this transaction and not finished")

	// ErrAbandoned: the key holds a committed claim without an outcome and
	// without a lease: a transaction committed after [Do] had told it to
	// roll back (fn failed and the claim could not be removed), or fn
	// committed the transaction itself (DDL on MySQL commits implicitly).
	// fn's effects may or may not have committed with it, so the key is
	// never run again on its own: fn did not run. [Sweep] resolves such
	// claims (as [AbandonedClass] failures, or through its handler).
	ErrAbandoned = errors.New("idemsql: key holds an abandoned claim")

	// ErrStoreUnusable: the database refused one of the library's own
	// statements for a reason that is about the store, not the key: its
	// table (or the table's schema, or a column a newer migration adds)
	// does not exist, the connection's user lacks a privilege on it, or
	// the server cannot run the statement (too old a version). Create or
	// migrate the table with migrations.Up, or `idemsql migrate up` from a
	// shell, with the store's Options.Table and Options.Schema. Nothing was
	// done; another try meets the same error. An error of fn's own
	// statements never has this class: it comes back as fn returned it.
	ErrStoreUnusable = errors.New("idemsql: the store's table is missing, not migrated, or refused the library's statement (run migrations.Up or `idemsql migrate up`)")

	// ErrUnexpectedState: the row is in a state this version cannot handle
	// (an unknown status, or a claim that vanished under the caller). The
	// transaction should be rolled back.
	ErrUnexpectedState = errors.New("idemsql: unexpected idempotency row state")
)

// Error is returned for every failure that reached the database, for the
// other failures of a step about a key (a context that ended before the
// claim or during Run's wait, a stored result that does not decode, a
// sweep handler's error), for a duplicate that asked for an error
// ([Options.ErrorOnDuplicate]: Kind [ErrDuplicate]) and for a recorded
// failure ([Options.RecordFailures]: Kind [ErrFailureRecorded], with its
// Class and Message). It carries the sentinel that says what the failure
// means (Kind), the key, the operation, and the underlying error (Err).
//
//	var e *idemsql.Error
//	if errors.As(err, &e) { log.Println(e.Op, e.Key, e.Class) }
//	var pgErr *pgconn.PgError
//	if errors.As(err, &pgErr) { log.Println(pgErr.Code) }
//
// The key is in the Key field only, never in the message: a key may hold
// what logs must not (an e-mail address), and a message is copied, by
// fmt.Errorf, into the errors that wrap it, into recorded failures and into
// logs and spans, where nothing can take it out again. So the library's
// error texts never name a key, a nested call's neither, and leaving keys
// out of logs is a matter of the key attribute alone (idemslog's
// Options.Key, the otel module's OmitKey). Take the key from the field where
// you want it.
type Error struct {
	// Op is the step that failed. Atomic mode: "begin", "claim", "read",
	// "reclaim", "savepoint", "fn" (the transaction ended under fn),
	// "complete", "record failure", "release", "commit", "decode" (a
	// replayed result), "retry" (ctx ended while Run waited to run
	// again). Lease mode: "begin", "read", "claim", "reclaim", "take over",
	// "renew", "complete", "fail", "release", "sweep", "purge", and any of
	// them + ": commit" when the commit of its transaction failed.
	// [RunSteps]: those of lease mode, "steps" (reading the progress),
	// "step" and "step: commit" (a step's progress or transaction), "fn"
	// (a StepTx's transaction lost under fn), "input" (a stored input
	// that does not decode, in [Completer]). Read
	// API: "lookup", "list", "stats", "decode" ([Record.Decode]). [Forget]:
	// "forget", and "forget: commit". A
	// duplicate's error, and a failure recorded earlier, come from
	// "claim"; a failure recorded by this call from "record failure"
	// (atomic mode) or "fail" (lease mode).
	Op string
	// Key is the key concerned; empty for a step of Sweep or Purge that is
	// about no one key.
	Key  string
	Kind error // one of the sentinels above, or nil when the failure has no special meaning
	// Err is the underlying error: the driver's, or, for a failure this
	// call recorded, fn's (nil for a failure recorded earlier).
	Err error
	// Class and Message are a recorded failure's (Kind
	// [ErrFailureRecorded]): its class, for machines ("card_declined", or
	// one of the library's: [AbandonedClass], [UnencodableClass],
	// [PanicClass]), and its message, for people. Result.Replayed tells a
	// failure recorded earlier from one this call recorded.
	Class, Message string
	// swallowed: the transaction was found aborted after fn returned (fn
	// went on past an error); Run retries that once.
	swallowed bool
	// notCommitted: a failed COMMIT that certainly did not commit.
	notCommitted bool
}

// Error is "idemsql: " + Op, then Kind's and Err's texts (for a recorded
// failure, its class and message); never the key.
func (e *Error) Error() string {
	msg := "idemsql: " + e.Op
	if e.Kind != nil {
		msg += ": " + trimPrefix(e.Kind.Error())
	}
	if e.Class != "" {
		return msg + " (" + e.Class + "): " + e.Message
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

// endsTx reports whether, after an error of this kind, the transaction is
// gone or cannot commit: a cleanup statement would be pointless, and on
// MySQL and SQLite it would run outside the transaction.
func endsTx(k idemdriver.ErrorKind) bool {
	switch k {
	case idemdriver.KindRetryable, idemdriver.KindTxEnded, idemdriver.KindConnLost, idemdriver.KindTxAborted:
		return true
	}
	return false
}

// classify is the dialect's classification, with the meanings every
// database/sql driver shares: a broken connection, a transaction that is
// already over.
func (s *core) classify(err error) idemdriver.ErrorKind {
	if k := s.dialect.Classify(err); k != idemdriver.KindOther {
		return k
	}
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return idemdriver.KindConnLost
	case errors.Is(err, sql.ErrTxDone):
		return idemdriver.KindTxAborted
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return idemdriver.KindConnLost
	}
	return idemdriver.KindOther
}

// dbError wraps a driver error of step op with its one meaning. A context
// that ended is its own class: the error matches ctx's error and no
// sentinel of the library, whatever the driver made of it.
func (s *core) dbError(ctx context.Context, op, key string, err error) *Error {
	e := &Error{Op: op, Key: key, Err: err}
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			e.Err = errors.Join(err, cerr)
		}
		return e
	}
	k := s.classify(err)
	e.Kind = kindSentinel(op, k)
	e.swallowed = k == idemdriver.KindTxAborted && afterFnOps[op]
	return e
}

// kindSentinel is the class of a driver error of kind k at step op. A
// COMMIT's error is commitError's to class.
func kindSentinel(op string, k idemdriver.ErrorKind) error {
	switch k {
	case idemdriver.KindRetryable, idemdriver.KindTxEnded, idemdriver.KindConnLost:
		return ErrRetryable
	case idemdriver.KindLockTimeout:
		return ErrLockTimeout
	case idemdriver.KindStoreUnusable:
		// A COMMIT's error is not the library's statement; neither is fn's.
		if op != "commit" && op != "fn" {
			return ErrStoreUnusable
		}
	case idemdriver.KindStatementTimeout:
		if claimOps[op] {
			return ErrLockTimeout // waiting behind the key's holder
		}
	case idemdriver.KindTxAborted:
		// Before fn, an aborted transaction is the caller's: an error of
		// theirs came first, and running again would meet it again. After
		// fn, it is an error fn swallowed: nothing commits, and if it was a
		// deadlock or a serialization failure, running again succeeds. Run
		// tries that once: an error that comes back is fn's own doing.
		if afterFnOps[op] {
			return ErrRetryable
		}
	}
	return nil
}

// afterFnOps are the steps that run after fn returned.
var afterFnOps = map[string]bool{"complete": true, "record failure": true, "commit": true}

// claimOps are the steps that may wait for another holder of the key.
var claimOps = map[string]bool{"claim": true, "read": true, "reclaim": true}

// classed reports whether err holds an error of the library's with a
// class: an [*Error] with a Kind, anywhere in its tree.
func classed(err error) bool {
	switch x := err.(type) {
	case nil:
		return false
	case *Error:
		if x.Kind != nil {
			return true
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return classed(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if classed(e) {
				return true
			}
		}
	}
	return false
}
