// Package postgres is the PostgreSQL dialect of idemsql, for pgx v5 native
// transactions (pgx.Tx) and for database/sql transactions through pgx's
// stdlib driver. Both paths run the same SQL.
package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemsql/idemsql/idemsql"
)

// Dialect is the PostgreSQL dialect, for [idemsql.NewStore].
var Dialect idemsql.Dialect = dialect{}

// Store is an [idemsql.Store] for PostgreSQL that can also bind pgx
// transactions.
type Store struct {
	*idemsql.Store
}

// New returns a PostgreSQL store. Options as for [idemsql.NewStore].
func New(opts ...idemsql.Option) (*Store, error) {
	s, err := idemsql.NewStore(Dialect, opts...)
	if err != nil {
		return nil, err
	}
	return &Store{s}, nil
}

// Pgx binds the store to a native pgx transaction, for [idemsql.Do].
func (s *Store) Pgx(tx pgx.Tx) idemsql.Tx {
	if tx == nil {
		return s.Bind(nil)
	}
	return s.Bind(pgxExecutor{tx})
}

var _ idemsql.Executor = pgxExecutor{}

type pgxExecutor struct{ tx pgx.Tx }

func (e pgxExecutor) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := e.tx.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (e pgxExecutor) QueryRow(ctx context.Context, query string, args ...any) idemsql.Row {
	return e.tx.QueryRow(ctx, query, args...)
}

type dialect struct{}

func (dialect) Name() string { return "postgres" }

// The lease and expiry clock is clock_timestamp(), not now(): now() is the
// start of the caller's transaction, which may be long past.
func (dialect) Statements(table string) idemsql.Statements {
	t := `"` + table + `"`
	const now = "clock_timestamp()"
	// The claim's row as a first call leaves it: in progress until fn's
	// result is stored, or completed at once when the result is known.
	claimValues := func(status, result, completedAt string) string {
		return `INSERT INTO ` + t + ` (idem_key, fingerprint, status, result, attempt, owner, created_at, updated_at, completed_at, expires_at)
VALUES ($1, $2, '` + status + `', ` + result + `, 1, $3, ` + now + `, ` + now + `, ` + completedAt + `, ` + now + ` + $4::bigint * interval '1 microsecond')
ON CONFLICT (idem_key) DO NOTHING`
	}
	// One statement answers both a first call and a duplicate of a
	// committed key. Its snapshot is taken before the INSERT waits, so after
	// a wait for a concurrent claim it returns nothing, and the core reads
	// the row with Read, in a new statement.
	claimOrRead := func(insert string) string {
		return `WITH claim AS (` + insert + ` RETURNING 1)
SELECT true, 'in_progress', NULL::bytea, NULL::json, 1::bigint, false, false, NULL::text, NULL::text FROM claim
UNION ALL
SELECT false, status, fingerprint, result, attempt, expires_at <= ` + now + `, lease_until IS NOT NULL, error_class, error_message
FROM ` + t + ` WHERE idem_key = $1 AND NOT EXISTS (SELECT FROM claim)`
	}
	reclaim := func(status, result, completedAt string) string {
		return `UPDATE ` + t + ` SET status = '` + status + `', fingerprint = $1, result = ` + result + `, error_class = NULL, error_message = NULL,
attempt = attempt + 1, owner = $2, lease_until = NULL, created_at = ` + now + `, updated_at = ` + now + `,
completed_at = ` + completedAt + `, expires_at = ` + now + ` + $3::bigint * interval '1 microsecond'
WHERE idem_key = $4 AND attempt = $5 AND expires_at <= ` + now + `
AND NOT (status = 'in_progress' AND lease_until IS NOT NULL)`
	}
	return idemsql.Statements{
		// DO NOTHING writes nothing for a duplicate. Against an uncommitted
		// claim it waits for that transaction.
		Claim:                claimValues("in_progress", "NULL", "NULL"),
		ClaimCompleted:       claimValues("completed", "'{}'", now),
		ClaimOrRead:          claimOrRead(claimValues("in_progress", "NULL", "NULL")),
		ClaimOrReadCompleted: claimOrRead(claimValues("completed", "'{}'", now)),
		Read: `SELECT status, fingerprint, result, attempt, expires_at <= ` + now + `, lease_until IS NOT NULL, error_class, error_message
FROM ` + t + ` WHERE idem_key = $1`,
		Reclaim:          reclaim("in_progress", "NULL", "NULL"),
		ReclaimCompleted: reclaim("completed", "'{}'", now),
		Complete: `UPDATE ` + t + ` SET status = 'completed', result = $1, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = $2 AND attempt = $3 AND status = 'in_progress'`,
		Fail: `UPDATE ` + t + ` SET status = 'failed', error_class = $1, error_message = $2, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = $3 AND attempt = $4 AND status = 'in_progress'`,
		Release: `DELETE FROM ` + t + ` WHERE idem_key = $1 AND attempt = $2`,
	}
}

// Classify reads the SQLSTATE; the same *pgconn.PgError comes through pgx
// native and through database/sql with pgx's stdlib.
func (dialect) Classify(err error) idemsql.ErrorKind {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return idemsql.KindOther
	}
	switch pgErr.Code {
	case "40001", "40P01": // serialization_failure, deadlock_detected
		return idemsql.KindRetryable
	case "55P03": // lock_not_available (lock_timeout)
		return idemsql.KindLockTimeout
	case "25P02": // in_failed_sql_transaction
		return idemsql.KindTxAborted
	}
	// 23505 is deliberately not KindDuplicateKey: on PostgreSQL a unique
	// violation aborts the whole transaction, so it can never mean "replay".
	return idemsql.KindOther
}
