package idemdriver

import "database/sql"

// Statements is the SQL of each step, with the dialect's placeholders and
// arguments in the order given (the order in which they appear in the text,
// for dialects with positional placeholders). Times come from the
// database's clock; durations are passed in microseconds.
//
// A claim writes its claim token into the owner column, and every write
// after the claim (Complete, Fail, Release) matches the row by key and that
// token: a statement that runs where it should not — after the database
// ended the transaction, when the session has fallen back to autocommit —
// can then change no row but its own claim's, never the row of a duplicate
// that claimed the key meanwhile.
//
// elapsed is how long ago the call started (microseconds, by the caller's
// monotonic clock). A row counts as expired only if it had expired when the
// call started (expires_at <= now - elapsed): a duplicate that waited for
// the holder's commit replays its outcome even if the retention ran out
// while it waited.
type Statements struct {
	// Claim inserts a new in_progress row with attempt 1.
	// Args: key, fingerprint, token, ttl. Affects 1 row when it claimed; a
	// key that exists gives 0 rows or a KindDuplicateKey error, without
	// aborting the transaction.
	Claim string
	// ClaimOrTouch, if not empty, is Claim for a server that may let a
	// commit be seen before it is durable ([EarlyVisibility]). A key that
	// exists is not an error: the statement waits for the row's lock, as
	// Claim does, and then writes the row without changing its meaning
	// (updated_at), so that the transaction wrote something and its COMMIT
	// waits for the log flush, which also covers the commit of the row a
	// replay then returns. It must report any count but 1 for a key that
	// exists, whatever the driver counts (found or changed rows). Same
	// args.
	ClaimOrTouch string
	// ClaimOrRead, if not empty, is Claim and Read in one statement, so
	// that a duplicate of a committed key costs one round trip: it returns
	// one row, claimed (true when it inserted) followed by Read's columns
	// (of the existing row when claimed is false). It returns no row when
	// the key exists but the statement cannot see it (it waited for another
	// transaction's claim, committed after the statement's snapshot); the
	// core then reads with Read. Args: key, fingerprint, token, ttl, elapsed.
	ClaimOrRead string
	// Read returns status, fingerprint, result, attempt, owner, expired,
	// leased (lease_until is set), error_class, error_message. It must see
	// the latest committed row, even under a snapshot taken earlier in the
	// transaction. Args: elapsed, key.
	Read string
	// Reclaim re-claims an expired completed or failed row in place:
	// in_progress, attempt+1, new fingerprint, token and expiry, no result.
	// It must change nothing unless the row is still expired, still at the
	// given attempt and not in_progress (an in_progress row may stand for an
	// effect that happened: it is never free by age).
	// Args: fingerprint, token, ttl, key, attempt, elapsed.
	Reclaim string
	// Complete stores the encoded result and marks the row completed, its
	// retention running from now (expires_at = now + ttl).
	// Args: result, ttl, key, token.
	Complete string
	// Fail records a permanent failure, its retention running from now.
	// Args: error_class, error_message, ttl, key, token.
	Fail string
	// Release deletes the claim after fn failed. Atomic mode only: lease
	// mode never deletes an in_progress row. Args: key, token.
	Release string

	// ClaimCompleted, ClaimOrReadCompleted and ReclaimCompleted are Claim,
	// ClaimOrRead and Reclaim for a call whose result is known before fn
	// runs (fn returns struct{}: the result is {}). They store the row
	// completed at once, so that no Complete statement is needed: the
	// transaction commits claim and result together either way. Same
	// arguments. ClaimOrReadCompleted is needed exactly when ClaimOrRead is
	// set. A dialect whose transactions can end without the client knowing
	// (MySQL: after a deadlock the session runs in autocommit, and COMMIT
	// succeeds) leaves them empty: there, the fenced Complete is what tells
	// that the claim did not survive fn.
	ClaimCompleted, ClaimOrReadCompleted, ReclaimCompleted string

	// TryLock, if not empty, answers idemsql.Options.FailFast without bounding a
	// wait. It is for a dialect whose every statement that claims a key
	// (Claim, ClaimOrRead and their Completed forms here; a lease-mode
	// claim, re-claim or takeover) first takes a lock on the key in shared
	// mode, held until its transaction ends (PostgreSQL: an advisory lock
	// on a hash of the key). TryLock takes that lock in exclusive mode
	// without waiting and returns true when it got it; a fail-fast claim
	// then claims as usual, and otherwise reads the row with Read, which
	// must not wait for locks either: an outcome already committed
	// replays, anything else is ErrInProgress. Two keys that share a lock
	// can only make a call wait for, or answer ErrInProgress because of,
	// the other key's holder; the key's row decides the rest.
	// idemsql.Forget takes it too, so as never to delete a key that a
	// transaction is claiming. Args: key.
	TryLock string
}

// LeaseStatements is the SQL of lease mode, with the dialect's placeholders
// and arguments in the order given. Every time comes from the database's
// clock; durations are passed in microseconds.
//
// A claim's lease is live while lease_until > now and the claim carries no
// mark in error_class. A holder that ends its lease without an outcome (End)
// marks the claim idemsql.ReleasedClass and moves lease_until to the end of
// the claim's retention: callers may take a marked claim over at once, and a
// idemsql.Sweep without a handler, whose scan of the lease index is bounded
// by lease_until <= now, reaches it only once its retention has run out. So
// released claims never lie in the range that scan walks, on any database,
// without an index of their own. A claim without a lease_until is not lease
// mode's: an atomic-mode claim whose transaction committed without an
// outcome (idemsql.ErrAbandoned); callers never take it over, Sweep resolves
// it.
//
// Every claim writes a per-claim owner token (unique to that claim, also
// across takeovers), and every write of a holder (Renew, Complete, Fail,
// End) is fenced by key, attempt, owner, status = 'in_progress' and
// error_class IS NULL (End's mark, so that ending a lease ends its fence),
// so a holder whose lease was taken, ended or resolved changes nothing, even
// if the key's attempt number were ever to repeat.
//
// Every statement that moves a claim from one holder to another re-checks,
// in its own WHERE clause, that the row is still at the attempt and owner
// the caller read and that its lease is not live. Locking reads with SKIP
// LOCKED only keep contenders from queueing behind one another; correctness
// never rests on them, so an engine that accepts SKIP LOCKED but takes no
// lock still lets only one contender win.
//
// Lease mode never deletes an in_progress row: such a row may stand for an
// effect that happened, and its downstream key must survive until a holder
// records an outcome or idemsql.Sweep resolves it. Only idemsql.Forget, on
// a person's word, deletes one whose lease is not live (ForgetLock,
// Forget).
type LeaseStatements struct {
	// SkipLocked says the locking statements below skip rows that other
	// transactions hold (PostgreSQL, MySQL 8, MariaDB 10.6+).
	SkipLocked bool
	// Isolation is the isolation level of the transactions of idemsql.Sweep
	// and idemsql.Purge, whatever level the store's other transactions run
	// at; sql.LevelDefault leaves the store's. Their locking scans
	// must lock no more than the rows they return: under MySQL's REPEATABLE
	// READ they would also take gap locks, and every claim of a new key
	// whose index entry lands in a locked gap would wait for the batch.
	Isolation sql.IsolationLevel

	// Claim inserts a new in_progress row with attempt 1 and lease_until =
	// now + lease. Args: key, fingerprint, owner, lease, ttl. Affects 1 row
	// when it claimed; a key that exists gives 0 rows or a KindDuplicateKey
	// error.
	Claim string
	// Read returns status, fingerprint, result, attempt, owner, expired
	// (expires_at has passed), leased (lease_until is set), live (the lease
	// is live: lease_until in the future and no mark), generation
	// (created_at in unix milliseconds: it changes only when the row is
	// claimed anew), error_class, error_message. It is always the first
	// statement of its transaction and must see the latest commit. Args:
	// key.
	Read string
	// Touch, if not empty, writes the key's row without changing its
	// meaning (updated_at), for a replay on a server that may let a commit
	// be seen before it is durable ([EarlyVisibility]): it runs in the
	// transaction of Read, so that that transaction's COMMIT waits for the
	// log flush, which also covers the commit of the outcome it read.
	// Affects 1 row, or 0 when the row is gone. Args: key.
	Touch string
	// LockStale, if not empty, locks the row if it is still the claim that
	// was read (attempt and owner token) and it has a lease that is not
	// live, skipping it if another transaction holds it. Returns attempt.
	// Args: key, attempt, owner.
	LockStale string
	// TakeOver hands a claim whose lease is not live (ran out, or ended
	// with a mark) to a new holder: attempt+1, owner, lease_until = now +
	// lease, expires_at at least lease_until, error_class and error_message
	// cleared. created_at is kept. Only if the row is still the claim that
	// was read, in_progress at the attempt with the owner token (attempts
	// alone repeat once a purged key is claimed anew), and it has a lease
	// that is not live; never a claim without a lease_until. Args: new
	// owner, lease, lease, key, attempt, old owner.
	TakeOver string
	// Adopt is TakeOver for a sweeper: it also takes a claim without a
	// lease_until. Same args.
	Adopt string
	// Reclaim claims anew, with a lease, a completed or failed row whose
	// retention (expires_at) has passed, as atomic mode does; never an
	// in_progress row. created_at is set to now (a new generation), except
	// for a row failed with idemsql.AbandonedClass, which keeps it: the abandoned
	// claim may hide an effect, and the next run must repeat it under the
	// same downstream key. Args: fingerprint, owner, lease, ttl, key,
	// attempt.
	Reclaim string
	// Renew extends the holder's lease (lease_until = now + lease, expires_at
	// at least lease_until). Args: lease, lease, key, attempt, owner.
	Renew string
	// Complete stores the result and marks the row completed, keeping it at
	// least ttl from now (expires_at = the greater of expires_at and now +
	// ttl). Args: result, ttl, key, attempt, owner.
	Complete string
	// Fail records a failure like Complete records a result.
	// Args: error_class, error_message, ttl, key, attempt, owner.
	Fail string
	// End ends the holder's lease without an outcome: error_class and
	// error_message set (to idemsql.ReleasedClass and why), expires_at at least
	// now + ttl, and lease_until = that expires_at; status, attempt, owner
	// and created_at kept. The mark in error_class ends the fence (no write
	// of that holder matches the row any more) and lets callers take the
	// claim over at once. Args: error_class, error_message, ttl, key,
	// attempt, owner.
	End string
	// Restore hands a claim that a sweeper took over (Adopt) from a holder
	// who had released it back as that holder left it: attempt and owner
	// as given (the previous holder's), error_class and error_message as
	// given, expires_at at least now + ttl and lease_until = that
	// expires_at, as End leaves a claim; created_at kept. Fenced like End,
	// by the sweeper's key, attempt and owner. Args: error_class,
	// error_message, ttl, previous attempt, previous owner, key, attempt,
	// owner.
	Restore string
	// Abandon marks a claim whose lease is not live, or that has no
	// lease_until, as failed with the given class and message, attempt+1,
	// owner, expires_at at least now + ttl (the failure is kept for the TTL
	// like any outcome: an abandoned claim may hide an effect that
	// happened). Only if the row is still the claim that was read. Args:
	// error_class, error_message, new owner, ttl, key, attempt, old owner.
	Abandon string

	// The sweep statements each return up to limit in_progress claims,
	// locked (skipping rows other transactions hold, where SkipLocked), with
	// the columns idem_key, attempt, owner, fingerprint, generation,
	// error_class, error_message, leased. SweepStale and SweepUnleased must
	// be bounded by an index to the rows they return and few others,
	// however many claims are live or released. SweepReleased, for sweeps
	// that reconcile released claims, reads the lease index in order and skips what it does
	// not want: it walks the live leases and the claims the handler itself
	// released before it (a cost proportional to those, paid once per
	// batch). Args: limit, unless said otherwise. A row taken over or
	// abandoned in the same transaction no longer matches any of them.
	//
	// SweepStale returns the claims a sweep without a handler resolves: a
	// lease that ran out without a mark, oldest first, and a marked claim
	// whose retention (expires_at) has passed.
	SweepStale string
	// SweepUnleased returns the claims that have no lease_until: committed
	// atomic-mode claims without an outcome. A claim of a transaction still
	// running is invisible to it, or locked and skipped.
	SweepUnleased string
	// SweepReleased returns the marked claims, oldest retention first, for
	// a sweep whose handler reconciles released claims, except those whose
	// error_message begins with the text given (a sweep handler's own
	// release, which hands the claim back to callers: asking the handler
	// again every pass would only repeat its answer). Args: that text,
	// limit.
	SweepReleased string

	// Purge, if not empty, deletes up to limit completed or failed rows whose
	// expires_at has passed, oldest expires_at first, skipping rows other
	// transactions hold. Never an in_progress row, nor a claim Sweep
	// abandoned (idemsql.AbandonedClass). Args: limit.
	Purge string
	// PurgeLock and PurgeKeys are used when Purge is empty, for an engine
	// whose DELETE cannot skip locked rows (MySQL, MariaDB). In one
	// transaction, PurgeLock returns the keys of up to limit purgeable rows
	// (as Purge would delete them), oldest expires_at first, locked,
	// skipping rows other transactions hold; then PurgeKeys(n) deletes the
	// rows of n of those keys, re-checking the same conditions. The keys of
	// a batch are locked by one PurgeLock and deleted by PurgeKeys in chunks
	// of at most 500 keys. Over a transaction that returns many rows
	// (an Executor that is a [RowsQuerier]) PurgeLock is run once per
	// batch, and so are the sweep statements;
	// over another they are run with limit 1 for each row.
	PurgeLock string
	PurgeKeys func(n int) string

	// StepsRead returns the steps column (NULL until a holder wrote
	// progress) of the key's row if the holder's fence still holds; no row
	// otherwise. Args: key, attempt, owner.
	StepsRead string
	// StepsSave writes the steps column (the progress of idemsql.RunSteps,
	// a JSON document) and renews the lease as Renew does, fenced as every
	// write of a holder is. Args: steps, lease, lease, key, attempt, owner.
	StepsSave string
	// StepsSwap is StepsSave's checkpoint inside a step's own transaction:
	// it writes the steps column only if the row still holds, besides the
	// fence, the steps text given last (the one the transaction wrote
	// first), so that a transaction the database ended under the step
	// (MySQL then goes on in autocommit) cannot record the step done
	// without its writes. It does not renew the lease. Args: steps, key,
	// attempt, owner, previous steps.
	StepsSwap string

	// ForgetLock reads the key's row for idemsql.Forget and locks it
	// without waiting: attempt, owner, live (in_progress with a live
	// lease: lease_until in the future and no mark); no row when there is
	// none. When another transaction holds the row (a claim or re-claim
	// not yet committed, a takeover, a batch of Sweep or Purge) it fails
	// at once with an error the dialect classifies KindLockTimeout
	// (NOWAIT); a dialect whose transactions hold the database's only
	// write lock (SQLite) needs no lock of the row. Args: key.
	ForgetLock string
	// Forget deletes the key's row if it is still at the attempt and owner
	// given (owner may be NULL). Args: key, attempt, owner.
	Forget string
}

// InspectStatements is the SQL of the read API, with the dialect's
// placeholders and arguments in the order given. Its statements only read,
// without locks (no FOR UPDATE, no LOCK IN SHARE MODE), and each is one
// statement, so that it sees one snapshot without a transaction.
//
// Times are returned as integer unix microseconds (UTC), NULL where the
// column is NULL, whatever the column's type, so that no driver setting
// (MySQL's parseTime) changes them. "now" is the database's clock, read
// once for a row.
//
// A row's columns, in Lookup and List, in this order: idem_key, status,
// attempt, owner, fingerprint, result (NULL in List), error_class,
// error_message, lease, lease_until, created_at, updated_at, completed_at,
// expires_at, now, steps. lease is the row's lease state as a word (idemsql's
// Lease constants):
//
//	none       status <> 'in_progress'
//	abandoned  in_progress, lease_until IS NULL
//	released   in_progress, error_class = 'released' (idemsql.ReleasedClass)
//	live       in_progress, lease_until > now
//	stale      in_progress otherwise (lease_until <= now)
type InspectStatements struct {
	// Lookup returns the key's row. Args: key.
	Lookup string
	// List returns up to limit rows that match every filter, ordered by
	// key. Args, in order:
	//   - status: only this status; "" for any
	//   - lease: only rows whose lease word is this; "" for any
	//   - sweepable (bool): only rows idemsql.Sweep would resolve now (in_progress,
	//     lease_until <= now, and error_class IS NULL or expires_at <= now)
	//   - purgeable (bool): only rows idemsql.Purge would delete now (expires_at <
	//     now, status <> 'in_progress')
	//   - older (microseconds): only rows with created_at <= now - older; 0
	//     for any
	//   - after: only keys > after ("" is below every key)
	//   - from: only keys >= from
	//   - to: only keys < to (never empty: the core passes a bound above
	//     every key when there is none)
	//   - limit
	//
	// Keys compare byte for byte, as the table's key column does, so a range
	// on the primary key serves after, from and to.
	List string
	// Stats returns one row: the number of rows; of rows in_progress,
	// completed, failed; of rows whose lease word is live, stale, released,
	// abandoned; of rows with attempt > 1; of sweepable rows; of purgeable
	// rows (as in List); the key of the oldest in_progress row by
	// created_at (NULL if none) and its created_at; now. No args.
	Stats string
}

// Error classes that the core records and the statements test for, as
// idemsql names them.
const (
	// AbandonedClass (idemsql.AbandonedClass) marks a claim that
	// idemsql.Sweep gave up: Purge keeps such a row, and the next claim of
	// its key keeps its generation.
	AbandonedClass = "abandoned"
	// ReleasedClass (idemsql.ReleasedClass) marks an in_progress claim whose
	// holder ended its lease without an outcome.
	ReleasedClass = "released"
)
