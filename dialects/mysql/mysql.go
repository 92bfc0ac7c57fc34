// Package mysql is the MySQL 8 / MariaDB 10.6+ dialect of idemsql, for
// database/sql transactions through github.com/go-sql-driver/mysql.
//
// A duplicate's claim leaves a shared lock on the key's row (InnoDB takes
// one on a duplicate-key error, and the read takes one), held until the
// caller's transaction ends. End a transaction that got a replay or
// ErrInProgress promptly: until then a lease holder of the key cannot renew
// or record its outcome, and an expired key cannot be claimed again.
//
// The DSN needs nothing special for idemsql itself. Add parseTime=true if
// you read the time columns yourself, and consider interpolateParams=true:
// without it the driver prepares and closes a statement for every query,
// three round trips instead of one.
package mysql

import (
	"errors"

	driver "github.com/go-sql-driver/mysql"

	"github.com/idemsql/idemsql/idemsql"
)

// Dialect is the MySQL/MariaDB dialect, for [idemsql.NewStore].
var Dialect idemsql.Dialect = dialect{}

// New returns a MySQL/MariaDB store; bind it to a transaction with
// Store.SQL (or to a pool with Store.DB). Options as for
// [idemsql.NewStore].
func New(opts ...idemsql.Option) (*idemsql.Store, error) {
	return idemsql.NewStore(Dialect, opts...)
}

type dialect struct{}

func (dialect) Name() string { return "mysql" }

// Times are UTC_TIMESTAMP(6): NOW(6) is in the session's time zone.
func (dialect) Statements(table string) idemsql.Statements {
	t := "`" + table + "`"
	const now = "UTC_TIMESTAMP(6)"
	// A plain INSERT: its duplicate-key error (1062) rolls back only this
	// statement. INSERT IGNORE would also turn truncation into warnings, and
	// ON DUPLICATE KEY UPDATE reports ambiguous row counts.
	claim := func(status, result, completedAt string) string {
		return `INSERT INTO ` + t + ` (idem_key, fingerprint, status, result, attempt, owner, created_at, updated_at, completed_at, expires_at)
VALUES (?, ?, '` + status + `', ` + result + `, 1, ?, ` + now + `, ` + now + `, ` + completedAt + `, ` + now + ` + INTERVAL ? MICROSECOND)`
	}
	reclaim := func(status, result, completedAt string) string {
		return `UPDATE ` + t + ` SET status = '` + status + `', fingerprint = ?, result = ` + result + `, error_class = NULL, error_message = NULL,
attempt = attempt + 1, owner = ?, lease_until = NULL, created_at = ` + now + `, updated_at = ` + now + `,
completed_at = ` + completedAt + `, expires_at = ` + now + ` + INTERVAL ? MICROSECOND
WHERE idem_key = ? AND attempt = ? AND expires_at <= ` + now + `
AND NOT (status = 'in_progress' AND lease_until IS NOT NULL)`
	}
	return idemsql.Statements{
		Claim:          claim("in_progress", "NULL", "NULL"),
		ClaimCompleted: claim("completed", "'{}'", now),
		// Under REPEATABLE READ a plain SELECT reads the transaction's old
		// snapshot and misses the row we just collided with; a locking read
		// sees the latest commit. A shared lock, because the failed INSERT
		// already holds one: many duplicates asking for exclusive locks on
		// top would deadlock each other.
		Read: `SELECT status, fingerprint, result, attempt, expires_at <= ` + now + `, lease_until IS NOT NULL, error_class, error_message
FROM ` + t + ` WHERE idem_key = ? LOCK IN SHARE MODE`,
		Reclaim:          reclaim("in_progress", "NULL", "NULL"),
		ReclaimCompleted: reclaim("completed", "'{}'", now),
		Complete: `UPDATE ` + t + ` SET status = 'completed', result = ?, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND status = 'in_progress'`,
		Fail: `UPDATE ` + t + ` SET status = 'failed', error_class = ?, error_message = ?, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND status = 'in_progress'`,
		Release: `DELETE FROM ` + t + ` WHERE idem_key = ? AND attempt = ?`,
	}
}

func (dialect) Classify(err error) idemsql.ErrorKind {
	var myErr *driver.MySQLError
	if !errors.As(err, &myErr) {
		return idemsql.KindOther
	}
	switch myErr.Number {
	case 1062: // ER_DUP_ENTRY
		return idemsql.KindDuplicateKey
	case 1213, // ER_LOCK_DEADLOCK: the whole transaction was rolled back
		1020: // ER_CHECKREAD (MariaDB innodb_snapshot_isolation)
		return idemsql.KindRetryable
	case 1205, // ER_LOCK_WAIT_TIMEOUT: only the statement was rolled back
		3572: // ER_LOCK_NOWAIT (MySQL 8)
		return idemsql.KindLockTimeout
	}
	return idemsql.KindOther
}

// PrepareStatements: without interpolateParams the driver prepares, runs
// and closes every statement (three round trips); a statement prepared once
// per connection runs in one.
func (dialect) PrepareStatements() bool { return true }
