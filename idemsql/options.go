package idemsql

import (
	"cmp"
	"database/sql"
	"fmt"
	"reflect"
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

// DefaultMaxResultSize is the largest encoded result stored by default.
const DefaultMaxResultSize = 1 << 20

// DefaultMaxAttempts is how often [Run] tries a transaction by default
// (and lease mode each of its short transactions). With the default
// backoff (10 ms doubling, capped at 1 s, each wait drawn at random below
// its cap) the waits between 40 attempts add up to about 16 s on average
// and hardly ever to less than 10 s: enough to ride out the restart of a
// database server, which fails every BEGIN meanwhile. ctx ends the
// attempts sooner.
const DefaultMaxAttempts = 40

// Options configure a store (given to [New]: the defaults of every call)
// or one call (given to [Do], [Run], [RunExternal], ...: over the store's
// defaults). A field left zero takes the store's default, or the
// library's. At most one Options is given to a call.
//
// A field given where it cannot apply is refused with [ErrInvalidOption],
// as is a value out of range: a field of the store alone (Table, Schema,
// Observers) given to a call, a field of one call (Fingerprint,
// ResultType) given to [New], a field of atomic mode (FailFast,
// LockTimeout) given to a lease-mode call, or one of lease mode (Lease,
// Heartbeat, LeaseWait, BatchSize, ResultType) given to [Do] or [Run]. A
// field a function has no use for (MaxAttempts given to [Do], which does
// not retry) is accepted and has no effect, so that one Options can serve
// a store and all its calls.
type Options struct {
	// Table names the idempotency table (default [DefaultTable]). The name
	// must be a lowercase SQL identifier: a lowercase letter or underscore,
	// then lowercase letters, digits or underscores, at most 48 bytes, so
	// that the index names derived from it fit every database. The
	// statements and the migrations quote it, so a reserved word (order,
	// user) works; only lowercase names mean the same table quoted or not
	// (PostgreSQL folds an unquoted name to lowercase; SQLite, and MySQL on
	// some file systems, ignore case), so SQL of your own may name it
	// either way. Store only.
	Table string
	// Schema puts the idempotency table in a schema of its own: a
	// PostgreSQL schema, or a MySQL/MariaDB database (which MySQL calls a
	// schema). Every statement, the migrations and their version table then
	// name the table as schema.table. The schema must exist; the migrations
	// do not create it. The name follows Table's rules. SQLite has no
	// schemas (an attached database is not shared by a pool's
	// connections): a SQLite store refuses it. Without it, the table is
	// found where the connection looks first (PostgreSQL's search_path, the
	// DSN's database). Store only.
	Schema string
	// Observers see every step of every call of the store, each of them
	// every event (idemslog's logger and the otel module's spans, say).
	// Store only.
	Observers []Observer

	// TTL is how long a key's outcome is remembered after it is stored
	// (when fn's result or recorded failure is written, or, for a struct{}
	// result stored with the claim, from the claim): until then every
	// duplicate replays; after it the key runs again. Default
	// [DefaultTTL]. A duplicate judges the row's age as of its own start,
	// so one that waited behind a slow holder still replays. Keep the TTL
	// well above the longest transaction: a duplicate that starts more
	// than a TTL after the result was stored, while the holder's
	// transaction is still open, runs again. Between 1ms and [MaxTTL].
	TTL time.Duration
	// Fingerprint is the request, whose hash is stored with the claim. A
	// later call with the same key and a different request fails with
	// [ErrFingerprintMismatch] and runs nothing, instead of silently
	// replaying another request's outcome. A []byte or string is hashed as
	// given (an HTTP body, say); any other value is hashed in the canonical
	// form [DeriveKey] uses, so map order and struct layout do not matter
	// ([Fingerprint]). A call without one has the empty fingerprint. Call
	// only.
	Fingerprint any
	// ErrorOnDuplicate makes a duplicate of a completed key fail with an
	// [*Error] of class [ErrDuplicate], Result.Value and Result.Replayed
	// still set, for callers that must answer "already done" rather than
	// repeat the answer. By default a duplicate replays: the stored value
	// with Result.Replayed set.
	ErrorOnDuplicate bool
	// FailFast makes a call that finds another transaction holding the key
	// fail with [ErrInProgress] at once, leaving the transaction usable,
	// instead of waiting on the database's lock until the holder commits
	// (then replaying) or rolls back (then running fn), bounded by
	// LockTimeout if given, else by the database's own lock timeout. On
	// PostgreSQL it takes the key's advisory lock without waiting instead
	// of bounding a wait, so that its claim is written in the transaction
	// itself, not in a subtransaction: see docs/guide.md. On MySQL and
	// MariaDB without a binary log, where a duplicate writes the key's row
	// ([idemdriver.EarlyVisibility]), another duplicate's transaction that
	// has not ended holds the key too: a call meeting it gets
	// ErrInProgress rather than the replay. On SQLite with _txlock=immediate
	// (as idemsqlite.DSN sets) a duplicate never meets the holder in the
	// claim: its BEGIN waits for the single writer first, up to the busy
	// timeout, so FailFast changes nothing there. Store or atomic-mode
	// call.
	FailFast bool
	// LockTimeout bounds how long a call waits for another holder of the
	// key; past it the call fails with [ErrLockTimeout]. The database's
	// setting is changed for the claim only: for the transaction on
	// PostgreSQL, for each statement of the claim on MariaDB, for the
	// session on MySQL 8 and SQLite, put back after the claim
	// (docs/guide.md says when it cannot be, and what Run does then).
	// PostgreSQL rounds to milliseconds and aborts the transaction on a
	// lock time-out; MySQL and MariaDB round up to whole seconds and roll
	// back only the statement; SQLite uses it as the busy timeout (with
	// _txlock=immediate in the DSN, as idemsqlite.DSN sets, the wait
	// happens in BEGIN, before Do, so it has no effect there). Store or
	// atomic-mode call; between 1ms and 1h.
	LockTimeout time.Duration
	// RecordFailures turns on recorded failures: when fn returns an error
	// made with [Permanent], fn's writes are rolled back to a savepoint
	// taken before fn ran, the row is stored as failed with the error's
	// class and message, and every duplicate gets that failure back as an
	// [*Error] of class [ErrFailureRecorded] without running fn. The claim
	// commits with the caller's transaction, so commit after such an error
	// ([Run] does).
	//
	// It costs a savepoint per call. On PostgreSQL a savepoint is a
	// subtransaction; past 64 in one transaction every snapshot taken by
	// every session gets slower. Leave it off for calls made many times in
	// one long transaction.
	RecordFailures bool
	// Codec replaces the JSON codec for results: [LenientJSON] for result
	// types that lose fields on purpose between deployments, or a codec of
	// your own. The encoded result goes into a JSON column, so the codec
	// must produce JSON (a faster JSON library, protojson); anything else
	// fails with [ErrEncode].
	Codec Codec
	// MaxResultSize limits the encoded result's size in bytes (default
	// [DefaultMaxResultSize]); a larger one fails with [ErrResultTooLarge]
	// and nothing is stored. At most 64 MiB.
	MaxResultSize int
	// Isolation is the isolation level of the transactions the library
	// begins: [Run]'s, and lease mode's short ones (default
	// sql.LevelDefault, the server's own). [Sweep] and [Purge] run at the
	// dialect's level where it has one (READ COMMITTED on PostgreSQL and
	// MySQL/MariaDB, whose locking scans would take gap locks under
	// REPEATABLE READ). [Do] runs in the caller's transaction, whose level
	// is the caller's.
	Isolation sql.IsolationLevel
	// MaxAttempts is how many times [Run] tries the transaction when the
	// database asks for a retry (default [DefaultMaxAttempts]), and lease
	// mode each of its short transactions; between 1 and 1000.
	MaxAttempts int
	// Backoff and MaxBackoff set the wait between attempts: a random
	// duration up to Backoff·2^(attempt-1), capped at MaxBackoff (defaults
	// 10ms and 1s; 0 < Backoff <= MaxBackoff <= 1m).
	Backoff, MaxBackoff time.Duration

	// Lease is how long a claim in lease mode stays held without a
	// heartbeat (default [DefaultLease]). While fn runs, [RunExternal]
	// renews it every Heartbeat; if the holder dies, the key can be taken
	// over once the lease has run out. Pick it longer than a few
	// heartbeats and than a stall you want to tolerate (a GC pause, a slow
	// database). Store or lease-mode call; between [MinLease] and
	// [MaxLease].
	Lease time.Duration
	// Heartbeat is how often [RunExternal] and [Sweep] renew a lease while
	// fn runs (default a third of the lease). It must be at most half the
	// lease, so that one late or failed renewal does not lose it. Store or
	// lease-mode call.
	Heartbeat time.Duration
	// LeaseWait makes a lease-mode call that finds the key held by a live
	// lease wait instead of failing with [ErrInProgress]: it reads the row
	// every LeaseWait until the holder completes (then replays), fails, or
	// its lease runs out (then takes over), bounded by ctx. Store or
	// lease-mode call; between 1ms and 1m.
	LeaseWait time.Duration
	// ResultType declares the type of the results of the keys a lease-mode
	// call handles, for the results stored without fn: a [SweepHandler]'s
	// completed [Resolution] and [Lease.Complete]. Every later call with
	// the key decodes the stored result into its own type; a result of
	// another type would make each of them fail with [ErrDecode]. With
	// ResultType such a result is refused before anything is stored: the
	// handler's claim counts as failed and its lease runs out (Sweep), or
	// Complete returns the error (Lease); either error matches
	// [ErrEncode]. A value of the type or a non-nil pointer to one is
	// accepted. [RunExternal] stores fn's own T, and refuses another type
	// ([ErrInvalidOption]).
	//
	//	idemsql.Sweep(ctx, store, reconcile, idemsql.Options{ResultType: reflect.TypeFor[Charge]()})
	//
	// Lease-mode call only.
	ResultType reflect.Type
	// SweepReleased makes a [Sweep] with a handler also take the claims
	// whose holders released them (fn failed, [Lease.Release]) at once,
	// rather than leave them to callers until their retention has run out:
	// for a handler that reconciles a request whose caller never retries
	// (a time-out after the charge), with the downstream system and the
	// claim's DownstreamKey. A caller that retries such a key while the
	// handler runs gets [ErrInProgress]. Sweep or [SweepEvery] with a
	// handler only: without one, a sweep would abandon claims their
	// callers are still to retry.
	SweepReleased bool
	// BatchSize is how many rows [Sweep] and [Purge] handle in one
	// transaction (default [DefaultBatchSize]); each batch's locks are held
	// only for that transaction. Store or lease-mode call; between 1 and
	// 10000.
	BatchSize int
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

type settings struct {
	table          string
	schema         string
	ttl            time.Duration
	fingerprint    []byte
	hasFingerprint bool

	errorOnDuplicate bool
	failFast         bool
	lockTimeout      time.Duration // 0: the database's own
	recordFailures   bool
	codec            Codec
	customCodec      bool
	maxResultSize    int

	isolation   sql.IsolationLevel // Run's and lease mode's transactions
	maxAttempts int
	backoffBase time.Duration
	backoffMax  time.Duration

	lease leaseSettings // lease mode (lease.go)

	observers []Observer // store only
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

var identifierRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// applyOptions applies opts given at where (one of inStore, inAtomic,
// inLease) over s.
func applyOptions(s *settings, opts []Options, where scope) error {
	switch len(opts) {
	case 0:
		return nil
	case 1:
	default:
		return fmt.Errorf("%w: %d Options given; give one, with every field set", ErrInvalidOption, len(opts))
	}
	o := opts[0]
	// check refuses a field that is set where it may not be given.
	check := func(name string, set bool, allowed scope) error {
		if set && allowed&where == 0 {
			return fmt.Errorf("%w: Options.%s %s", ErrInvalidOption, name, misplaced(allowed, where))
		}
		return nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: Options."+format, append([]any{ErrInvalidOption}, args...)...)
	}
	for _, c := range []struct {
		name    string
		set     bool
		allowed scope
	}{
		{"Table", o.Table != "", inStore},
		{"Schema", o.Schema != "", inStore},
		{"Observers", o.Observers != nil, inStore},
		{"Fingerprint", o.Fingerprint != nil, inCall},
		{"FailFast", o.FailFast, inStore | inAtomic},
		{"LockTimeout", o.LockTimeout != 0, inStore | inAtomic},
		{"Lease", o.Lease != 0, inStore | inLease},
		{"Heartbeat", o.Heartbeat != 0, inStore | inLease},
		{"LeaseWait", o.LeaseWait != 0, inStore | inLease},
		{"BatchSize", o.BatchSize != 0, inStore | inLease},
		{"ResultType", o.ResultType != nil, inLease},
		{"SweepReleased", o.SweepReleased, inLease},
	} {
		if err := check(c.name, c.set, c.allowed); err != nil {
			return err
		}
	}
	if o.Table != "" {
		if !identifierRE.MatchString(o.Table) {
			return bad("Table %q is not a lowercase identifier ([a-z_][a-z0-9_]{0,47})", o.Table)
		}
		s.table = o.Table
	}
	if o.Schema != "" {
		if !identifierRE.MatchString(o.Schema) {
			return bad("Schema %q is not a lowercase identifier ([a-z_][a-z0-9_]{0,47})", o.Schema)
		}
		s.schema = o.Schema
	}
	for i, obs := range o.Observers {
		if obs == nil {
			return bad("Observers[%d] is nil", i)
		}
	}
	if len(o.Observers) > 0 {
		s.observers = append([]Observer(nil), o.Observers...)
	}
	if err := cmp.Or(
		inRange("TTL", o.TTL, time.Millisecond, MaxTTL, &s.ttl),
		inRange("LockTimeout", o.LockTimeout, time.Millisecond, time.Hour, &s.lockTimeout),
		inRange("MaxResultSize", o.MaxResultSize, 1, 64<<20, &s.maxResultSize),
		inRange("MaxAttempts", o.MaxAttempts, 1, 1000, &s.maxAttempts),
	); err != nil {
		return err
	}
	if o.Fingerprint != nil {
		fp, err := Fingerprint(o.Fingerprint)
		if err != nil {
			return err
		}
		s.fingerprint, s.hasFingerprint = fp, true
	}
	s.errorOnDuplicate = s.errorOnDuplicate || o.ErrorOnDuplicate
	s.failFast = s.failFast || o.FailFast
	s.recordFailures = s.recordFailures || o.RecordFailures
	if o.Codec != nil {
		_, builtin := o.Codec.(jsonCodec)
		s.codec, s.customCodec = o.Codec, !builtin
	}
	if o.Isolation != sql.LevelDefault {
		if o.Isolation < sql.LevelDefault || o.Isolation > sql.LevelLinearizable {
			return bad("Isolation: unknown isolation level %d", o.Isolation)
		}
		s.isolation = o.Isolation
	}
	if o.Backoff != 0 || o.MaxBackoff != 0 {
		base, limit := s.backoffBase, s.backoffMax
		if o.Backoff != 0 {
			base = o.Backoff
		}
		if o.MaxBackoff != 0 {
			limit = o.MaxBackoff
		}
		if o.Backoff < 0 || o.MaxBackoff < 0 || limit < base || limit > time.Minute {
			return bad("Backoff %v, MaxBackoff %v: want 0 < Backoff <= MaxBackoff <= 1m", base, limit)
		}
		s.backoffBase, s.backoffMax = base, limit
	}
	return s.lease.apply(o)
}

// inRange sets *dst to v if v is given (not zero) and lies in [lo, hi].
func inRange[T int | time.Duration](name string, v, lo, hi T, dst *T) error {
	if v == 0 {
		return nil
	}
	if v < lo || v > hi {
		return fmt.Errorf("%w: Options.%s %v is outside [%v, %v]", ErrInvalidOption, name, v, lo, hi)
	}
	*dst = v
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
