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
// [ErrUnexpectedState]. Errors from the database come as [*Error], with the
// driver's error reachable through [errors.As].
package idemsql
