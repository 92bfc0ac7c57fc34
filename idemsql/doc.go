// Package idemsql makes a function's side effects happen at most once per
// key, however often it is called: retries after time-outs, duplicate
// webhooks, double clicks, replayed jobs, two processes racing.
//
// It is not a cache. A cache may recompute; a guarded function must not
// execute twice.
//
// A [Store] is the one handle: the idempotency table, the defaults of
// every call, and a pool of the database, made once at start-up with [New]
// from the driver a dialect package makes of the pool: idempostgres.New
// (a pgx pool; transactions are pgx.Tx), idempostgres.NewSQL (pgx's
// database/sql driver), idemmysql.New (MySQL 8, MariaDB 10.6+),
// idemsqlite.New (modernc.org/sqlite); the last three's transactions are
// *sql.Tx. Every call takes the store. The table comes from the goose
// migrations in package migrations.
//
// # Atomic mode
//
// [Do] inserts the key's row into the idempotency table in the caller's own
// transaction, before fn runs; fn does its business writes in that same
// transaction; fn's result is stored in the row, still in it. Claim, effect
// and result commit together or not at all, so for effects in the same
// database this is exactly once, with no lease, no clock and nothing left
// behind by a crash.
//
//	store, err := idemsql.New(idempostgres.New(pool)) // once, at start-up
//	...
//	tx, err := pool.Begin(ctx) // the caller's transaction
//	if err != nil {
//		return err
//	}
//	defer tx.Rollback(ctx)
//	res, err := idemsql.Do(ctx, store, tx, "charge:"+orderID,
//		func(ctx context.Context) (Charge, error) {
//			return insertCharge(ctx, tx, orderID) // business writes in tx
//		})
//	if err != nil {
//		return err // ErrRetryable: run the transaction again
//	}
//	if err := tx.Commit(ctx); err != nil {
//		return store.CommitError(ctx, err) // ErrCommitUnknown: call again
//	}
//	// res.Value is the charge; res.Replayed tells a duplicate apart.
//
// Every write after the claim is matched by a token of that claim alone,
// and nothing is sent after an error that ended the transaction, so a
// deadlock, a Galera abort or a broken connection under fn cannot make the
// library touch a row a duplicate claimed meanwhile.
//
// # Lease mode
//
// For effects outside the database (a payment API, an e-mail),
// [RunExternal] commits the claim first, in a short transaction of its own,
// as an in_progress row with a lease from the database's clock; fn runs
// outside any transaction while a heartbeat renews the lease; the outcome
// is recorded in another short transaction. Every claim has an owner token
// of its own and every write of a holder is fenced by attempt and token, so
// a holder whose lease was taken over records nothing ([ErrLeaseLost]). A
// dead holder's key is taken over once its lease runs out; fn's error ends
// the lease so that the next call runs again. Both keep
// [Claim.DownstreamKey]: pass it to the external system's own idempotency
// key, since lease mode cannot stop an effect from repeating after a
// crash. [ClaimLease] and [Lease] are the same steps one by one;
// [Sweep] resolves claims whose holders died; [Purge] deletes expired
// outcomes of both modes; [Forget] deletes one key, unless a holder has it.
//
// # Several steps
//
// [RunSteps] guards an operation of several effects under one lease-mode
// claim: fn calls [Step] for each effect outside the database and [StepTx]
// for each database write, and each step's completion is stored with the
// claim, so a run whose holder died resumes at its first unfinished step;
// [Completer] resumes, from a sweep, runs nobody retries.
//
// # Run, options, wrappers
//
// [Run] owns the transaction for callers without one and retries it when
// the database asks. [Options] configure a store and each call:
// ErrorOnDuplicate, FailFast, LockTimeout and RecordFailures choose what
// duplicates, in-flight duplicates and permanent failures get. [Wrap] and
// [WrapRun] turn a function into a guarded one whose key derives from its
// argument ([ArgsKey], [DeriveKey]); each call may take Options of its own.
//
// # Watching and reading
//
// Options.Observers report each step (claims, replays, takeovers, lost
// leases, ...) as an [Event]: package idemslog logs them with log/slog,
// the otel module makes spans and metrics. [Lookup], [List] and [Stats]
// read the table without SQL of the caller's own; cmd/idemsql puts them,
// the migrations, [Purge], [Sweep] and [Forget] on the command line.
// Package idemhttp is Idempotency-Key middleware for net/http on top of
// [Run] and [RunExternal].
//
// # Errors
//
// Expected outcomes are values: a replay is [Result.Replayed]. Failures are
// errors that match sentinels with [errors.Is]: [ErrInvalidKey],
// [ErrInvalidOption], [ErrFingerprintMismatch], [ErrInProgress],
// [ErrReentrant], [ErrAbandoned], [ErrDuplicate], [ErrFailureRecorded],
// [ErrRetryable], [ErrCommitUnknown], [ErrLockTimeout], [ErrEncode],
// [ErrResultTooLarge], [ErrDecode], [ErrUnexpectedState], [ErrLeaseLost],
// [ErrStepsChanged], [ErrStoreUnusable] (the table is missing or not
// migrated).
// Each error the library builds has exactly one of them. They come as
// [*Error], with the key in a field of its own, and the driver's error
// (and fn's) reachable through [errors.As]. Package idemdriver holds the
// contract a dialect implements.
package idemsql
