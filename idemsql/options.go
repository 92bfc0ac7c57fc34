package idemsql

import (
	"database/sql"
	"fmt"
	"regexp"
	"time"
)

// DefaultTable is the table the shipped migrations create.
const DefaultTable = "idempotency_keys"

// DefaultTTL is how long a key is remembered when no TTL is given.
const DefaultTTL = 24 * time.Hour

// MaxTTL bounds a TTL so that "now + TTL" stays representable on every
// database (MySQL DATETIME ends in year 9999).
const MaxTTL = 100 * 365 * 24 * time.Hour

// Option configures a [Store] (given to the dialect's constructor) or one
// call (given to [Do], [Run], [RunExternal], ...). Options are values made by
// the With* functions. A zero Option, a value out of range, or an option
// given in the wrong place (a store-only option to a call, an atomic-mode
// option to a lease-mode call or the reverse) is rejected with
// [ErrInvalidOption]. An option a function has no use for (a retry option
// given to [Do], which does not retry) is accepted and has no effect, so
// that one option list can serve a store and all its calls.
type Option struct {
	name  string
	scope scope // where the option may be given; 0: everywhere
	apply func(*settings) error
}

// scope is a set of places an option may be given.
type scope uint8

const (
	inStore  scope = 1 << iota // a store's defaults
	inAtomic                   // an atomic-mode call: Do, Run, Wrap, WrapRun
	inLease                    // a lease-mode call: RunExternal, ClaimLease, Sweep, Purge
	inCall   = inAtomic | inLease
	anywhere = inStore | inCall
)

func (o Option) allowed() scope {
	if o.scope == 0 {
		return anywhere
	}
	return o.scope
}

type settings struct {
	table          string
	schema         string
	ttl            time.Duration
	fingerprint    []byte
	hasFingerprint bool

	onDuplicate    DuplicatePolicy
	inFlight       InFlightPolicy
	lockTimeout    time.Duration // 0: the database's own
	recordFailures bool
	codec          Codec
	customCodec    bool
	maxResultSize  int

	isolation   sql.IsolationLevel // Run's and lease mode's transactions
	maxAttempts int
	backoffBase time.Duration
	backoffMax  time.Duration

	lease leaseSettings // lease mode (lease.go)

	observer Observer // store only
}

func defaultSettings() settings {
	return settings{
		table:         DefaultTable,
		ttl:           DefaultTTL,
		codec:         JSON,
		maxResultSize: DefaultMaxResultSize,
		maxAttempts:   DefaultMaxAttempts,
		backoffBase:   10 * time.Millisecond,
		backoffMax:    time.Second,
	}
}

// DefaultMaxResultSize is the largest encoded result stored by default.
const DefaultMaxResultSize = 1 << 20

// DefaultMaxAttempts is how often [Run] tries a transaction by default
// (and lease mode each of its short transactions). With the default
// [WithBackoff] (10 ms doubling, capped at 1 s, each wait drawn at random
// below its cap) the waits between 40 attempts add up to about 16 s on
// average and hardly ever to less than 10 s: enough to ride out the
// restart of a database server, which fails every BEGIN meanwhile. ctx
// ends the attempts sooner.
const DefaultMaxAttempts = 40

// DuplicatePolicy says what a call gets when the key already completed.
type DuplicatePolicy int

const (
	// OnDuplicateReplay returns the stored result with Result.Replayed set.
	OnDuplicateReplay DuplicatePolicy = iota
	// OnDuplicateError returns the stored result with Result.Replayed set and
	// a [*DuplicateError] (errors.Is(err, ErrDuplicate)), for callers that
	// must answer "already done" rather than repeat the answer.
	OnDuplicateError
)

// InFlightPolicy says what a call does when another transaction holds the
// key and has not finished.
type InFlightPolicy int

const (
	// InFlightWait blocks on the database's lock until the holder commits
	// (then replays) or rolls back (then runs fn), bounded by
	// [WithLockTimeout] if given, else by the database's own lock timeout.
	InFlightWait InFlightPolicy = iota
	// InFlightFailFast returns [ErrInProgress] at once and leaves the
	// transaction usable. On PostgreSQL it takes the key's advisory lock
	// without waiting instead of bounding a wait, so that its claim is
	// written in the transaction itself, not in a subtransaction: see
	// docs/guide.md. On MySQL and MariaDB without a binary log, where
	// a duplicate writes the key's row ([idemdriver.EarlyVisibility]), another
	// duplicate's transaction that has not ended holds the key too: a call
	// meeting it gets ErrInProgress rather than the replay.
	InFlightFailFast
)

// WithOnDuplicate chooses what a duplicate of a completed key gets. Store
// or call.
func WithOnDuplicate(p DuplicatePolicy) Option {
	return Option{name: "WithOnDuplicate", apply: func(s *settings) error {
		if p != OnDuplicateReplay && p != OnDuplicateError {
			return fmt.Errorf("%w: unknown DuplicatePolicy %d", ErrInvalidOption, p)
		}
		s.onDuplicate = p
		return nil
	}}
}

// WithInFlight chooses what a call does while another transaction holds
// the key. Store or atomic-mode call.
func WithInFlight(p InFlightPolicy) Option {
	return Option{name: "WithInFlight", scope: inStore | inAtomic, apply: func(s *settings) error {
		if p != InFlightWait && p != InFlightFailFast {
			return fmt.Errorf("%w: unknown InFlightPolicy %d", ErrInvalidOption, p)
		}
		s.inFlight = p
		return nil
	}}
}

// WithLockTimeout bounds how long [InFlightWait] waits for another holder
// of the key; past it the call fails with [ErrLockTimeout]. The database's
// setting is changed for the claim only: for the transaction on
// PostgreSQL, for each statement of the claim on MariaDB, for the session
// on MySQL 8 and SQLite, put back after the claim (docs/guide.md says when
// it cannot be, and what Run does then). PostgreSQL rounds to
// milliseconds and aborts the transaction on a lock time-out; MySQL and
// MariaDB round up to whole seconds and roll back only the statement;
// SQLite uses it as the busy timeout (with _txlock=immediate in the DSN,
// as sqlite.DSN sets, the wait happens in BEGIN, before Do, so it has no
// effect there). Store or atomic-mode call; between 1ms and 1h.
func WithLockTimeout(d time.Duration) Option {
	return Option{name: "WithLockTimeout", scope: inStore | inAtomic, apply: func(s *settings) error {
		if d < time.Millisecond || d > time.Hour {
			return fmt.Errorf("%w: lock timeout %v is outside [1ms, 1h]", ErrInvalidOption, d)
		}
		s.lockTimeout = d
		return nil
	}}
}

// WithRecordedFailures turns on recorded failures: when fn returns an error
// made with [Permanent], fn's writes are rolled back to a savepoint taken
// before fn ran, the row is stored as failed with the error's class and
// message, and every duplicate gets that failure back as a
// [*FailureError] without running fn. The claim commits with the caller's
// transaction, so commit after a [*FailureError] ([Run] does).
//
// It costs a savepoint per call. On PostgreSQL a savepoint is a
// subtransaction; past 64 in one transaction every snapshot taken by every
// session gets slower. Leave it off for calls made many times in one long
// transaction. Store or call.
func WithRecordedFailures(on bool) Option {
	return Option{name: "WithRecordedFailures", apply: func(s *settings) error {
		s.recordFailures = on
		return nil
	}}
}

// WithCodec replaces the JSON codec for results: [LenientJSON] for result
// types that lose fields on purpose between deployments, or a codec of your
// own. The encoded result goes into a JSON column, so the codec must
// produce JSON (a faster JSON library, protojson); anything else fails with
// [ErrEncode]. Store or call.
func WithCodec(c Codec) Option {
	return Option{name: "WithCodec", apply: func(s *settings) error {
		if c == nil {
			return fmt.Errorf("%w: nil codec", ErrInvalidOption)
		}
		_, builtin := c.(jsonCodec)
		s.codec, s.customCodec = c, !builtin
		return nil
	}}
}

// WithMaxResultSize limits the encoded result's size in bytes (default
// [DefaultMaxResultSize]); a larger one fails with [ErrResultTooLarge] and
// nothing is stored. At most 64 MiB. Store or call.
func WithMaxResultSize(n int) Option {
	return Option{name: "WithMaxResultSize", apply: func(s *settings) error {
		if n < 1 || n > 64<<20 {
			return fmt.Errorf("%w: max result size %d is outside [1, 64 MiB]", ErrInvalidOption, n)
		}
		s.maxResultSize = n
		return nil
	}}
}

// WithMaxAttempts sets how many times [Run] tries the transaction when the
// database asks for a retry (default [DefaultMaxAttempts]). Store or call.
func WithMaxAttempts(n int) Option {
	return Option{name: "WithMaxAttempts", apply: func(s *settings) error {
		if n < 1 || n > 1000 {
			return fmt.Errorf("%w: max attempts %d is outside [1, 1000]", ErrInvalidOption, n)
		}
		s.maxAttempts = n
		return nil
	}}
}

// WithIsolation sets the isolation level of the transactions the library
// begins: [Run]'s, and lease mode's short ones (default
// sql.LevelDefault, the server's own). [Sweep] and [Purge] run at the
// dialect's level where it has one (READ COMMITTED on PostgreSQL and
// MySQL/MariaDB, whose locking scans would take gap locks under REPEATABLE
// READ). [Do] runs in the caller's transaction, whose level is the
// caller's. Store or call.
func WithIsolation(level sql.IsolationLevel) Option {
	return Option{name: "WithIsolation", apply: func(s *settings) error {
		if level < sql.LevelDefault || level > sql.LevelLinearizable {
			return fmt.Errorf("%w: unknown isolation level %d", ErrInvalidOption, level)
		}
		s.isolation = level
		return nil
	}}
}

// WithBackoff sets [Run]'s wait between attempts: a random duration up to
// base·2^(attempt-1), capped at max (defaults 10ms and 1s). Store or call.
func WithBackoff(base, max time.Duration) Option {
	return Option{name: "WithBackoff", apply: func(s *settings) error {
		if base <= 0 || max < base || max > time.Minute {
			return fmt.Errorf("%w: backoff base %v, max %v: want 0 < base <= max <= 1m", ErrInvalidOption, base, max)
		}
		s.backoffBase, s.backoffMax = base, max
		return nil
	}}
}

// WithTable names the idempotency table (default [DefaultTable]). The name
// must be a lowercase SQL identifier: a lowercase letter or underscore, then
// lowercase letters, digits or underscores, at most 48 bytes, so that the
// index names derived from it fit every database. The statements and the
// migrations quote it, so a reserved word (order, user) works; only
// lowercase names mean the same table quoted or not (PostgreSQL folds an
// unquoted name to lowercase; SQLite, and MySQL on some file systems,
// ignore case), so SQL of your own may name it either way. Store only.
func WithTable(name string) Option {
	return Option{name: "WithTable", scope: inStore, apply: func(s *settings) error {
		if !identifierRE.MatchString(name) {
			return fmt.Errorf("%w: table name %q is not a lowercase identifier ([a-z_][a-z0-9_]{0,47})", ErrInvalidOption, name)
		}
		s.table = name
		return nil
	}}
}

// WithSchema puts the idempotency table in a schema of its own: a
// PostgreSQL schema, or a MySQL/MariaDB database (which MySQL calls a
// schema). Every statement, the migrations and their version table then
// name the table as schema.table. The schema must exist; the migrations do
// not create it. The name follows [WithTable]'s rules. SQLite has no
// schemas (an attached database is not shared by a pool's connections): a
// SQLite store refuses the option. Without it, the table is found where the
// connection looks first (PostgreSQL's search_path, the DSN's database).
// Store only.
func WithSchema(name string) Option {
	return Option{name: "WithSchema", scope: inStore, apply: func(s *settings) error {
		if !identifierRE.MatchString(name) {
			return fmt.Errorf("%w: schema name %q is not a lowercase identifier ([a-z_][a-z0-9_]{0,47})", ErrInvalidOption, name)
		}
		s.schema = name
		return nil
	}}
}

var identifierRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// WithTTL sets how long a key's outcome is remembered after it is stored
// (when fn's result or recorded failure is written, or, for a struct{}
// result stored with the claim, from the claim): until then every
// duplicate replays; after it the key runs again. A duplicate judges the
// row's age as of its own start, so one that waited behind a slow holder
// still replays. Keep the TTL well above the longest transaction: a
// duplicate that starts more than a TTL after the result was stored, while
// the holder's transaction is still open, runs again. On a store it is the
// default for every call; on a call it overrides the store's. Between 1ms
// and [MaxTTL].
func WithTTL(ttl time.Duration) Option {
	return Option{name: "WithTTL", apply: func(s *settings) error {
		if ttl < time.Millisecond || ttl > MaxTTL {
			return fmt.Errorf("%w: TTL %v is outside [1ms, %v]", ErrInvalidOption, ttl, MaxTTL)
		}
		s.ttl = ttl
		return nil
	}}
}

// WithFingerprint stores a hash of the request with the claim. A later call
// with the same key and a different request fails with
// [ErrFingerprintMismatch] and runs nothing, instead of silently replaying
// another request's outcome. A []byte or string is hashed as given (an HTTP
// body, say); any other value is hashed in the canonical form [DeriveKey]
// uses, so map order and struct layout do not matter. A call without
// WithFingerprint has the empty fingerprint. Call only.
func WithFingerprint(request any) Option {
	return Option{name: "WithFingerprint", scope: inCall, apply: func(s *settings) error {
		fp, err := Fingerprint(request)
		if err != nil {
			return err
		}
		s.fingerprint, s.hasFingerprint = fp, true
		return nil
	}}
}

// applyOptions applies opts given at where (one of inStore, inAtomic,
// inLease).
func applyOptions(s *settings, opts []Option, where scope) error {
	for i, o := range opts {
		if o.apply == nil {
			return fmt.Errorf("%w: option %d is the zero Option; use the With* functions", ErrInvalidOption, i)
		}
		if o.allowed()&where == 0 {
			return fmt.Errorf("%w: %s %s", ErrInvalidOption, o.name, misplaced(o.allowed(), where))
		}
		if err := o.apply(s); err != nil {
			return err
		}
	}
	return nil
}

func misplaced(allowed, where scope) string {
	switch {
	case where == inStore:
		return "describes one call and cannot be given to a store"
	case allowed&inCall == 0:
		return "configures a store and cannot be given to a call"
	case where == inLease:
		return "applies to atomic mode (Do, Run) and cannot be given to a lease-mode call"
	default:
		return "applies to lease mode (RunExternal, ClaimLease, Sweep, Purge) and cannot be given to Do or Run"
	}
}
