package idemdriver

import (
	"context"
	"time"
)

// ClaimBounder is implemented by dialects that can bound how long a claim
// waits for another transaction holding the key
// (idemsql.Options.LockTimeout, and idemsql.Options.FailFast where the
// dialect has no TryLock statement). BoundClaim runs claim, which sends the
// claim's statements through the executor it is given, with the database's
// lock wait bounded: for each statement (the executor adds the setting to
// it), for the transaction, or for the session, then put back. With failFast
// it must not wait at all and must leave the transaction usable when it
// times out. It reports timedOut when claim failed because of the bound. A
// setting of the session stays on the connection if the transaction ends
// under the claim (its context ended, and database/sql rolled it back):
// idemsql.Run then drops the connection instead of returning it to the pool.
type ClaimBounder interface {
	BoundClaim(ctx context.Context, ex Executor, timeout time.Duration, failFast bool, claim func(ex Executor) error) (timedOut bool, err error)
}

// EarlyVisibility is implemented by a dialect whose server may let other
// transactions see a commit before it is durable: InnoDB without a binary
// log makes a commit visible, and releases its locks, before the log flush
// that the writer's COMMIT waits for. A duplicate that read such a row and
// committed a transaction that wrote nothing (a COMMIT that waits for no
// flush) could answer with an outcome that a crash of the server then
// erases, while its writer was never told it committed. Where the server
// does, a replay writes the row it returns ([Statements].ClaimOrTouch,
// [LeaseStatements].Touch), so that its own COMMIT returns only once the
// row is durable.
//
// The driver of [SQL] asks once, in the background with its first
// preparation, and its executors report the answer ([DurabilityReporter]).
// An executor of another driver, a call before the answer came, and a
// pool whose answer was an error cannot tell: they count as seeing commits
// early.
type EarlyVisibility interface {
	VisibleBeforeDurable(ctx context.Context, ex Executor) (bool, error)
}

// LockTimeoutEnder is implemented by a dialect whose lock wait time-out
// ends the whole transaction or only the statement, depending on the
// server (MySQL and MariaDB: innodb_rollback_on_timeout). The core asks it
// when fn fails with a lock time-out: if the transaction is gone, nothing
// more is sent on it and the call is retryable. The question runs on the
// transaction's connection and must be harmless outside a transaction.
type LockTimeoutEnder interface {
	LockTimeoutEndsTx(ctx context.Context, ex Executor) (bool, error)
}

// TxChecker is implemented by a dialect that can tell cheaply whether the
// session is still in the transaction that made the claim (MariaDB:
// @@in_transaction; PostgreSQL: the transaction's ID; SQLite: whether BEGIN
// is refused). After fn failed with an error of its own, the core asks it
// before removing or recording the claim: when fn swallowed an error that
// ended the transaction, or committed it itself, nothing more is sent and
// the call is retryable. known is false when the database cannot tell
// (MySQL 8); the cleanup, fenced by the claim's token, then runs as usual.
type TxChecker interface {
	InTransaction(ctx context.Context, ex Executor) (in, known bool)
}

// StatementPreparer is implemented by dialects whose driver gains from
// statements prepared once per connection and reused: SQLite parses every
// statement text again otherwise (a large share of a short transaction's
// CPU), and go-sql-driver/mysql without interpolateParams prepares and
// closes a statement per query, three round trips instead of one.
type StatementPreparer interface {
	PrepareStatements() bool
	// PrepareFailed reports an error that means the statement could not be
	// prepared on the connection, so nothing ran (MySQL 1461, too many
	// prepared statements on the server; 1615, prepare again): the
	// statement then runs unprepared.
	PrepareFailed(err error) bool
}

// Inliner is implemented by a [StatementPreparer] whose driver needs a
// statement prepared on the server even to run one unprepared:
// go-sql-driver/mysql without interpolateParams prepares, runs and closes
// every statement with arguments, so a server that can prepare no more
// (MySQL 1461) refuses those too. When the server refuses
// ([StatementPreparer.PrepareFailed]), the statement runs once more as
// Inline's text, which holds its arguments as literals and needs none;
// ok is false when it cannot write an argument, and then the refusal is
// the statement's error. query is one of the dialect's own statements.
type Inliner interface {
	Inline(query string, args []any) (text string, ok bool)
}

// LeaseDialect is implemented by dialects that support lease mode. It is
// separate from [Dialect] so that a dialect without it still serves atomic
// mode.
type LeaseDialect interface {
	LeaseStatements(t Table) LeaseStatements
}

// InspectDialect is implemented by dialects that serve the read API
// (idemsql.Lookup, idemsql.List, idemsql.Stats). It is separate from
// [Dialect] so that a dialect without it still serves both modes.
type InspectDialect interface {
	InspectStatements(t Table) InspectStatements
}
