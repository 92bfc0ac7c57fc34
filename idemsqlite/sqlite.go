// Package idemsqlite is the SQLite dialect of idemsql, for database/sql
// transactions through modernc.org/sqlite (pure Go, no cgo). Importing it
// registers the "sqlite" driver.
//
// # Concurrency
//
// SQLite has one writer at a time. database/sql begins DEFERRED
// transactions; in WAL mode a transaction that read before it writes fails
// at once with SQLITE_BUSY_SNAPSHOT when another writer committed in
// between, whatever busy_timeout says. Open the database with a DSN that
// makes every transaction take the write lock at BEGIN and wait for it:
//
//	file:app.db?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate
//
// [DSN] builds such a DSN (and sets synchronous FULL and foreign keys
// on). Busy errors that still happen come back wrapping
// idemsql.ErrRetryable.
package idemsqlite

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"strings"

	driver "modernc.org/sqlite"

	"github.com/idemsql/idemsql/idemdriver"
)

// Dialect is the SQLite dialect, for a driver of another pool type than
// New's.
var Dialect idemdriver.Dialect = dialect{}

// New returns the driver of a modernc.org/sqlite pool (open it with
// [DSN]), for idemsql.New: the store's transactions are *sql.Tx, its
// statements run prepared once per connection ([idemdriver.SQL]).
func New(db *sql.DB) idemdriver.Driver[*sql.Tx] {
	return idemdriver.SQL(Dialect, db)
}

// DSN returns a modernc.org/sqlite DSN for the database file at path that is
// safe for concurrent writers: WAL journal, synchronous FULL, a 10 s busy
// timeout, foreign keys on, and BEGIN IMMEDIATE transactions.
func DSN(path string) string {
	u := url.URL{Scheme: "file", Opaque: path}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	u.RawQuery = q.Encode()
	return u.String()
}

type dialect struct{}

func (dialect) Name() string { return "sqlite" }

// Times are INTEGER unix milliseconds from SQLite's own clock: modernc
// writes a time.Time as text with a monotonic-clock suffix, which does not
// compare.
const nowMillis = `CAST(unixepoch('subsec') * 1000 AS INTEGER)`

func (dialect) Statements(table idemdriver.Table) idemdriver.Statements {
	t := table.Quote(`"`)
	const (
		now     = nowMillis
		plus    = ` + ? / 1000`
		expired = `expires_at <= ` + nowMillis + ` - ? / 1000`
	)
	claim := func(status, result, completedAt string) string {
		return `INSERT INTO ` + t + ` (idem_key, fingerprint, status, result, attempt, owner, created_at, updated_at, completed_at, expires_at)
VALUES (?, ?, '` + status + `', ` + result + `, 1, ?, ` + now + `, ` + now + `, ` + completedAt + `, ` + now + plus + `)
ON CONFLICT (idem_key) DO NOTHING`
	}
	reclaim := func(status, result, completedAt string) string {
		return `UPDATE ` + t + ` SET status = '` + status + `', fingerprint = ?, result = ` + result + `, error_class = NULL, error_message = NULL,
attempt = attempt + 1, owner = ?, lease_until = NULL, created_at = ` + now + `, updated_at = ` + now + `,
completed_at = ` + completedAt + `, expires_at = ` + now + plus + `
WHERE idem_key = ? AND attempt = ? AND ` + expired + ` AND status <> 'in_progress'`
	}
	return idemdriver.Statements{
		Claim:          claim("in_progress", "NULL", "NULL"),
		ClaimCompleted: claim("completed", "'{}'", now),
		Read: `SELECT status, fingerprint, result, attempt, owner, ` + expired + `, lease_until IS NOT NULL, error_class, error_message
FROM ` + t + ` WHERE idem_key = ?`,
		Reclaim:          reclaim("in_progress", "NULL", "NULL"),
		ReclaimCompleted: reclaim("completed", "'{}'", now),
		Complete: `UPDATE ` + t + ` SET status = 'completed', result = ?, expires_at = ` + now + plus + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = ? AND owner = ?`,
		Fail: `UPDATE ` + t + ` SET status = 'failed', result = NULL, error_class = ?, error_message = ?, expires_at = ` + now + plus + `,
updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = ? AND owner = ?`,
		Release: `DELETE FROM ` + t + ` WHERE idem_key = ? AND owner = ?`,
	}
}

// SQLite result codes (the low byte of an extended code).
const (
	sqliteNoMem     = 7
	sqliteInterrupt = 9
	sqliteError     = 1
	sqliteIOErr     = 10
	sqliteCorrupt   = 11
	sqliteFull      = 13
	sqliteBusy      = 5 // includes SQLITE_BUSY_SNAPSHOT (517) and SQLITE_BUSY_RECOVERY
	sqliteLocked    = 6
	sqlitePerm      = 3
	sqliteReadOnly  = 8
	sqliteAuth      = 23
	sqliteNotADB    = 26
)

// Classify reads SQLite's result codes. SQLITE_FULL, SQLITE_IOERR,
// SQLITE_NOMEM and an interrupt may roll the whole transaction back, after
// which statements run in autocommit while database/sql still believes the
// transaction open; the driver reports an interrupt caused by a context as
// that context's error, with no code at all. An interrupt is KindTxEnded:
// an interrupted COMMIT did not commit (the driver rolls back a COMMIT whose
// wait for a lock its context ended). The others (and SQLITE_CORRUPT) are
// KindConnLost, which ends the transaction as well, but leaves a COMMIT's
// outcome unknown: in WAL mode the transaction's frames, its commit frame
// last, may all be in the log when a later write (the padding to a sector
// boundary, under synchronous=FULL without powersafe overwrite) or the
// update of the WAL index fails, and WAL recovery, at the next open after a
// crash, then finds the transaction committed. A busy database
// (SQLITE_BUSY after busy_timeout, SQLITE_BUSY_SNAPSHOT in a transaction
// that read before it wrote) means the transaction must start again.
func (dialect) Classify(err error) idemdriver.ErrorKind {
	var e *driver.Error
	if !errors.As(err, &e) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return idemdriver.KindTxEnded
		}
		return idemdriver.KindOther
	}
	switch e.Code() & 0xff {
	case sqliteBusy, sqliteLocked:
		return idemdriver.KindRetryable
	case sqliteInterrupt:
		return idemdriver.KindTxEnded
	case sqliteFull, sqliteIOErr, sqliteNoMem, sqliteCorrupt:
		return idemdriver.KindConnLost
	case sqliteError:
		// After one of the errors above rolled the transaction back: a
		// COMMIT finds no transaction, a rollback to the savepoint the core
		// set in it finds no savepoint. What fn wrote went with them.
		msg := e.Error()
		if strings.Contains(msg, "no transaction is active") || strings.Contains(msg, "no such savepoint") {
			return idemdriver.KindTxEnded
		}
		// SQLite has no code of its own for these: the message is all
		// there is to tell them by.
		if strings.Contains(msg, "no such table") || strings.Contains(msg, "no such column") || strings.Contains(msg, "has no column named") {
			return idemdriver.KindStoreUnusable
		}
	case sqliteReadOnly, sqlitePerm, sqliteAuth, sqliteNotADB:
		return idemdriver.KindStoreUnusable
	}
	return idemdriver.KindOther
}

// PrepareStatements: SQLite parses a statement's text on every call unless
// it is prepared, and the parse is a large part of a short transaction.
func (dialect) PrepareStatements() bool { return true }

// PrepareFailed: SQLite prepares again by itself when the schema changed;
// nothing else fails to prepare a statement that prepared once.
func (dialect) PrepareFailed(error) bool { return false }
