// Package idempostgres is the PostgreSQL dialect of idemsql, for pgx v5 native
// transactions (pgx.Tx) and for database/sql transactions through pgx's
// stdlib driver. Both paths run the same SQL.
package idempostgres

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemsql/idemsql/idemdriver"
)

// Dialect is the PostgreSQL dialect, for a driver of another pool type
// than New's and NewSQL's.
var Dialect idemdriver.Dialect = dialect{}

var _ idemdriver.Executor = pgxExecutor{}

type pgxExecutor struct{ tx pgx.Tx }

func (e pgxExecutor) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := e.tx.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (e pgxExecutor) QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row {
	return e.tx.QueryRow(ctx, query, args...)
}

type dialect struct{}

func (dialect) Name() string { return "postgres" }

// The lease and expiry clock is clock_timestamp(), not now(): now() is the
// start of the caller's transaction, which may be long past.
func (dialect) Statements(table idemdriver.Table) idemdriver.Statements {
	t := table.Quote(`"`)
	const now = "clock_timestamp()"
	us := func(p string) string { return p + `::bigint * interval '1 microsecond'` }
	// The claim's row as a first call leaves it: in progress until fn's
	// result is stored, or completed at once when the result is known.
	// The key's lock (keyLock) is taken in shared mode before the INSERT
	// looks for the key.
	claimValues := func(status, result, completedAt string) string {
		return `INSERT INTO ` + t + ` (idem_key, fingerprint, status, result, attempt, owner, created_at, updated_at, completed_at, expires_at)
SELECT $1, $2, '` + status + `', ` + result + `, 1, $3, ` + now + `, ` + now + `, ` + completedAt + `, ` + now + ` + ` + us("$4") + `
FROM ` + sharedKeyLock(table, "$1") + `
ON CONFLICT (idem_key) DO NOTHING`
	}
	// The columns Read returns; elapsed is the placeholder of the call's age.
	readColumns := func(elapsed string) string {
		return `status, fingerprint, result, attempt, owner, expires_at <= ` + now + ` - ` + us(elapsed) + `, lease_until IS NOT NULL, error_class, error_message`
	}
	// One statement answers both a first call and a duplicate of a
	// committed key. Its snapshot is taken before the INSERT waits, so after
	// a wait for a concurrent claim it returns nothing, and the core reads
	// the row with Read, in a new statement.
	claimOrRead := func(insert string) string {
		return `WITH claim AS (` + insert + ` RETURNING 1)
SELECT true, 'in_progress', NULL::bytea, NULL::json, 1::bigint, NULL::text, false, false, NULL::text, NULL::text FROM claim
UNION ALL
SELECT false, ` + readColumns("$5") + `
FROM ` + t + ` WHERE idem_key = $1 AND NOT EXISTS (SELECT FROM claim)`
	}
	reclaim := func(status, result, completedAt string) string {
		return `UPDATE ` + t + ` SET status = '` + status + `', fingerprint = $1, result = ` + result + `, error_class = NULL, error_message = NULL,
attempt = attempt + 1, owner = $2, lease_until = NULL, created_at = ` + now + `, updated_at = ` + now + `,
completed_at = ` + completedAt + `, expires_at = ` + now + ` + ` + us("$3") + `
WHERE idem_key = $4 AND attempt = $5 AND expires_at <= ` + now + ` - ` + us("$6") + ` AND status <> 'in_progress'`
	}
	return idemdriver.Statements{
		// DO NOTHING writes nothing for a duplicate. Against an uncommitted
		// claim it waits for that transaction.
		Claim:                claimValues("in_progress", "NULL", "NULL"),
		ClaimCompleted:       claimValues("completed", "'{}'", now),
		ClaimOrRead:          claimOrRead(claimValues("in_progress", "NULL", "NULL")),
		ClaimOrReadCompleted: claimOrRead(claimValues("completed", "'{}'", now)),
		Read:                 `SELECT ` + readColumns("$1") + ` FROM ` + t + ` WHERE idem_key = $2`,
		Reclaim:              reclaim("in_progress", "NULL", "NULL"),
		ReclaimCompleted:     reclaim("completed", "'{}'", now),
		Complete: `UPDATE ` + t + ` SET status = 'completed', result = $1, updated_at = ` + now + `, completed_at = ` + now + `,
expires_at = ` + now + ` + ` + us("$2") + `
WHERE idem_key = $3 AND owner = $4`,
		Fail: `UPDATE ` + t + ` SET status = 'failed', result = NULL, error_class = $1, error_message = $2, updated_at = ` + now + `, completed_at = ` + now + `,
expires_at = ` + now + ` + ` + us("$3") + `
WHERE idem_key = $4 AND owner = $5`,
		Release: `DELETE FROM ` + t + ` WHERE idem_key = $1 AND owner = $2`,
		// Reclaim, Complete, Fail and Release run after a claim statement
		// in the same transaction, which holds the lock already.
		TryLock: `SELECT pg_try_advisory_xact_lock(` + keyLock(table, "$1") + `)`,
	}
}

// Classify reads the SQLSTATE; the same *pgconn.PgError comes through pgx
// native and through database/sql with pgx's stdlib. On PostgreSQL a
// transaction never ends silently: after an error every statement fails
// with 25P02 until ROLLBACK, and COMMIT rolls back.
func (dialect) Classify(err error) idemdriver.ErrorKind {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return idemdriver.KindRetryable
		case "55P03": // lock_not_available (lock_timeout)
			return idemdriver.KindLockTimeout
		case "57014": // query_canceled (statement_timeout)
			return idemdriver.KindStatementTimeout
		case "25P02": // in_failed_sql_transaction
			return idemdriver.KindTxAborted
		case "57P01", "57P02", "57P03", "57P05", // admin or crash shutdown, idle_session_timeout
			"25P03", // idle_in_transaction_session_timeout: the server closes the connection
			"40003": // statement_completion_unknown (CockroachDB "result is ambiguous")
			return idemdriver.KindConnLost
		}
		if strings.HasPrefix(pgErr.Code, "08") { // connection_exception
			return idemdriver.KindConnLost
		}
		// syntax_error_or_access_rule_violation (42P01 undefined_table,
		// 42703 undefined_column, 42501 insufficient_privilege, 42P10 an
		// ON CONFLICT without the key's index, ...), invalid_schema_name:
		// the table is not there, or not as the migrations make it.
		if strings.HasPrefix(pgErr.Code, "42") || pgErr.Code == "3F000" {
			return idemdriver.KindStoreUnusable
		}
		// 23505 is deliberately not KindDuplicateKey: on PostgreSQL a unique
		// violation aborts the whole transaction, so it can never mean
		// "replay".
		return idemdriver.KindOther
	}
	switch {
	case errors.Is(err, pgx.ErrTxClosed), errors.Is(err, pgx.ErrTxCommitRollback):
		return idemdriver.KindTxAborted
	case errors.Is(err, pgconn.ErrConnClosed):
		return idemdriver.KindConnLost
	case pgconn.SafeToRetry(err):
		// Nothing was sent: the connection was closed or busy before the
		// statement left, so the transaction, if any, is as it was.
		return idemdriver.KindOther
	case pgconn.Timeout(err):
		// pgx closes the connection when a context ends under a statement.
		// A bare context error did not come from a statement.
		return idemdriver.KindConnLost
	}
	return idemdriver.KindOther
}

// SupportsSchemas: the table may live in another schema
// (idemsql.Options.Schema).
func (dialect) SupportsSchemas() bool { return true }
