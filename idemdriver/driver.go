package idemdriver

import (
	"context"
	"database/sql"
)

// Driver is a store's way to its database: a dialect, and a pool that
// begins transactions of type X (a *sql.Tx, a pgx.Tx) and binds those the
// caller began. idemsql.New takes one; the dialect packages' New functions
// return one, and [SQL] makes one for any database/sql pool.
type Driver[X any] interface {
	// Dialect is the SQL and the error meanings of the pool's database.
	Dialect() Dialect
	// Begin begins a transaction on the pool at the isolation level
	// (sql.LevelDefault: the server's own), for idemsql.Run, lease mode and
	// housekeeping.
	Begin(ctx context.Context, level sql.IsolationLevel) (Tx[X], error)
	// Bind binds tx, a transaction the caller began on the pool, for
	// idemsql.Do. It returns nil for a nil transaction.
	Bind(tx X) Executor
}

// Tx is one transaction begun by a [Driver].
type Tx[X any] interface {
	Executor
	// Tx is the transaction handed to fn: a *sql.Tx, a pgx.Tx. The core
	// asks for it only after a statement of its own ran on the
	// transaction, so that a Tx may send BEGIN with that statement.
	Tx() X
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

// Preparer is implemented by a [Driver] that runs statements prepared once
// per connection. idemsql.New gives it the statements a store sends on
// every call; the driver prepares them in the background, never in a
// caller's path, and runs a statement as text until it is prepared, or
// when preparing it failed.
type Preparer interface {
	Prepare(queries ...string)
}

// Reader is implemented by a [Driver] that runs a read-only statement
// outside any transaction, each statement its own snapshot: the read API
// (idemsql.Lookup, List, Stats) then takes no lock and waits for no writer,
// whatever a transaction's BEGIN would do (SQLite's BEGIN IMMEDIATE). A
// Driver without it is read in a transaction that is rolled back.
type Reader interface {
	QueryRow(ctx context.Context, query string, args ...any) Row
	Query(ctx context.Context, query string, args ...any) (Rows, error)
}

// SessionDropper is implemented by a [Tx] that can close its connection
// when it ends, instead of returning it to the pool. The core asks for it
// when the context of a bounded claim ([ClaimBounder]) ended under the
// claim: the transaction may have ended before the dialect could put a
// session setting back.
type SessionDropper interface {
	DropSession()
}

// DurabilityReporter is implemented by an [Executor] that knows whether its
// server may let other transactions see a commit before it is durable
// ([EarlyVisibility]). An Executor without it, or one whose driver has not
// asked yet, counts as one whose server may: a replay then writes the
// key's row, which is always safe.
type DurabilityReporter interface {
	VisibleBeforeDurable() bool
}

// ExecCommitter is implemented by a [Tx] that can send the transaction's
// last write and its COMMIT in one round trip (pgx, which pipelines). The
// COMMIT is on the wire before the write's outcome is known, so the Tx must
// make a write that matches no row fail the transaction by itself (an
// error the server raises, after which COMMIT rolls back): a COMMIT must
// never keep fn's writes without the claim's result.
//
// ExecCommit runs query, a write of at most one row, then COMMIT. err is
// the write's error when the server reported one: nothing was committed,
// and the transaction is to be rolled back. wrote is false, with err and
// commitErr nil, when the write matched no row: nothing was committed
// either. commitErr is the COMMIT's error, or any other error after which
// the COMMIT may have been applied (the connection broke during the round
// trip): it is classified as a COMMIT's error.
type ExecCommitter interface {
	ExecCommit(ctx context.Context, query string, args ...any) (wrote bool, err, commitErr error)
}
