// Package idemsql makes a function's side effects happen at most once per
// key, however often it is called: retries after time-outs, duplicate
// webhooks, double clicks, replayed jobs, two processes racing.
//
// It is not a cache. A cache may recompute; a guarded function must not
// execute twice.
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
//	store, _ := postgres.New()                 // once, at start-up
//	tx, _ := pool.Begin(ctx)                    // the caller's transaction
//	defer tx.Rollback(ctx)
//	res, err := idemsql.Do(ctx, store.Pgx(tx), "charge:"+orderID,
//		func(ctx context.Context) (Charge, error) {
//			return insertCharge(ctx, tx, orderID) // business writes in tx
//		})
//	if err != nil { return err }
//	if err := tx.Commit(ctx); err != nil { return err }
//	// res.Value is the charge; res.Replayed tells a duplicate apart.
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
// [LeaseInfo.DownstreamKey]: pass it to the external system's own
// idempotency key, since lease mode cannot stop an effect from repeating
// after a crash. [ClaimLease] and [Lease] are the same steps one by one;
// [Sweep] resolves claims whose holders died; [Purge] deletes expired
// outcomes of both modes.
//
// # Run, policies, wrappers
//
// [Run] owns the transaction for callers without one and retries it when
// the database asks. [WithOnDuplicate], [WithInFlight], [WithLockTimeout]
// and [WithRecordedFailures] choose what duplicates, in-flight duplicates
// and permanent failures get. [Wrap] and [WrapRun] turn a function into a
// guarded one whose key derives from its argument.
//
// # Dialects
//
// The packages under dialects/ bind a store to each database:
// dialects/postgres (pgx.Tx with Store.Pgx, *sql.Tx through pgx's stdlib
// with Store.SQL), dialects/mysql (MySQL 8, MariaDB 10.6+) and
// dialects/sqlite (modernc.org/sqlite). The table comes from the goose
// migrations in package migrations.
//
// # Errors
//
// Expected outcomes are values: a replay is [Result.Replayed]. Failures are
// errors that match sentinels with [errors.Is]: [ErrInvalidKey],
// [ErrInvalidOption], [ErrFingerprintMismatch], [ErrInProgress],
// [ErrReentrant], [ErrDuplicate], [ErrFailureRecorded], [ErrRetryable],
// [ErrLockTimeout], [ErrEncode], [ErrResultTooLarge], [ErrDecode],
// [ErrUnexpectedState], [ErrLeaseLost]. Errors from the database come as
// [*Error], with the driver's error reachable through [errors.As].
package idemsql
