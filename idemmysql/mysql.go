// Package idemmysql is the MySQL 8 / MariaDB 10.6+ dialect of idemsql, for
// database/sql transactions through github.com/go-sql-driver/mysql.
//
// A duplicate's claim leaves a shared lock on the key's row (InnoDB takes
// one on a duplicate-key error, and the read takes one), held until the
// caller's transaction ends. End a transaction that got a replay or
// ErrInProgress promptly: until then a lease holder of the key cannot renew
// or record its outcome, and an expired key cannot be claimed again.
//
// Without a binary log, and outside Galera, InnoDB lets other transactions
// see a commit before it is durable. There a duplicate writes the key's row
// (updated_at), taking its lock exclusive, so that its COMMIT waits for the
// log flush and a replay never answers with an outcome that a crash of the
// server then erases; concurrent duplicates of one key then take turns.
// The store's driver asks the server once, in the background after the
// first call; until it knows, a duplicate writes.
//
// The DSN needs nothing special for idemsql itself. Add parseTime=true if
// you read the time columns yourself, and consider interpolateParams=true:
// without it the driver prepares and closes a statement for every query,
// three round trips instead of one.
package idemmysql

import (
	"database/sql"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	driver "github.com/go-sql-driver/mysql"

	"github.com/idemsql/idemsql/idemdriver"
)

// Dialect is the MySQL/MariaDB dialect, for a driver of another pool type
// than New's.
var Dialect idemdriver.Dialect = dialect{}

// New returns the driver of a go-sql-driver/mysql pool, for idemsql.New:
// the store's transactions are *sql.Tx, its statements run prepared once
// per connection ([idemdriver.SQL]).
func New(db *sql.DB) idemdriver.Driver[*sql.Tx] {
	return idemdriver.SQL(Dialect, db)
}

type dialect struct{}

// touch sets updated_at to a value it never had: now, or, when the row's
// updated_at is not in the past, a microsecond later than that.
const touch = `updated_at = IF(updated_at < UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), updated_at + INTERVAL 1 MICROSECOND)`

func (dialect) Name() string { return "mysql" }

// Times are UTC_TIMESTAMP(6): NOW(6) is in the session's time zone.
//
// There is no ClaimCompleted: after a deadlock (1213) InnoDB rolls the
// transaction back and the session goes on in autocommit, and a later
// COMMIT succeeds, so a caller whose fn swallowed that error would see the
// call succeed with nothing stored. The fenced Complete tells instead.
func (dialect) Statements(table idemdriver.Table) idemdriver.Statements {
	t := table.Quote("`")
	const (
		now     = "UTC_TIMESTAMP(6)"
		plus    = " + INTERVAL ? MICROSECOND"
		expired = "expires_at <= " + now + " - INTERVAL ? MICROSECOND"
	)
	claim := `INSERT INTO ` + t + ` (idem_key, fingerprint, status, attempt, owner, created_at, updated_at, expires_at)
VALUES (?, ?, 'in_progress', 1, ?, ` + now + `, ` + now + `, ` + now + plus + `)`
	return idemdriver.Statements{
		// A plain INSERT: its duplicate-key error (1062) rolls back only
		// this statement. INSERT IGNORE would also turn truncation into
		// warnings, and ON DUPLICATE KEY UPDATE reports ambiguous row
		// counts.
		Claim: claim,
		// On a duplicate it takes the row's lock exclusive at once (a
		// failed plain INSERT takes it shared, and two duplicates that both
		// held it shared and then wrote would deadlock) and writes it.
		// updated_at always changes, so the count is 2 whether the driver
		// counts found or changed rows.
		ClaimOrTouch: claim + `
ON DUPLICATE KEY UPDATE ` + touch,
		// Under REPEATABLE READ a plain SELECT reads the transaction's old
		// snapshot and misses the row we just collided with; a locking read
		// sees the latest commit. A shared lock, because the failed INSERT
		// already holds one: many duplicates asking for exclusive locks on
		// top would deadlock each other.
		Read: `SELECT status, fingerprint, result, attempt, owner, ` + expired + `, lease_until IS NOT NULL, error_class, error_message
FROM ` + t + ` WHERE idem_key = ? LOCK IN SHARE MODE`,
		Reclaim: `UPDATE ` + t + ` SET status = 'in_progress', fingerprint = ?, result = NULL, error_class = NULL, error_message = NULL,
attempt = attempt + 1, owner = ?, lease_until = NULL, created_at = ` + now + `, updated_at = ` + now + `,
completed_at = NULL, expires_at = ` + now + plus + `
WHERE idem_key = ? AND attempt = ? AND ` + expired + ` AND status <> 'in_progress'`,
		Complete: `UPDATE ` + t + ` SET status = 'completed', result = ?, expires_at = ` + now + plus + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = ? AND owner = ?`,
		Fail: `UPDATE ` + t + ` SET status = 'failed', result = NULL, error_class = ?, error_message = ?, expires_at = ` + now + plus + `,
updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = ? AND owner = ?`,
		Release: `DELETE FROM ` + t + ` WHERE idem_key = ? AND owner = ?`,
	}
}

// Classify reads MySQL and MariaDB error numbers. What matters beyond the
// meaning is whether the session is still in the transaction: after 1213
// (a deadlock, or a Galera brute-force abort or certification failure),
// 1020 and 1206 InnoDB has rolled the whole transaction back and later
// statements run in autocommit, unbeknown to database/sql: KindTxEnded.
func (dialect) Classify(err error) idemdriver.ErrorKind {
	var myErr *driver.MySQLError
	if !errors.As(err, &myErr) {
		// A context that ends under a statement makes the driver close the
		// connection; later statements then fail with ErrInvalidConn. A
		// context error alone may also come before anything was sent.
		if errors.Is(err, driver.ErrInvalidConn) {
			return idemdriver.KindConnLost
		}
		return idemdriver.KindOther
	}
	switch myErr.Number {
	case 1062: // ER_DUP_ENTRY
		return idemdriver.KindDuplicateKey
	case 1213, // ER_LOCK_DEADLOCK; Galera: brute-force abort, certification failure
		1020,             // ER_CHECKREAD (MariaDB innodb_snapshot_isolation)
		1206,             // ER_LOCK_TABLE_FULL
		1180,             // ER_ERROR_DURING_COMMIT
		3101,             // ER_TRANSACTION_ROLLBACK_DURING_COMMIT (Group Replication)
		1047,             // ER_UNKNOWN_COM_ERROR: a Galera node that left the primary component
		9007, 8002, 8005: // TiDB: write conflict, or a transaction to retry
		return idemdriver.KindTxEnded
	case 1205, // ER_LOCK_WAIT_TIMEOUT: only the statement, unless innodb_rollback_on_timeout
		3572: // ER_LOCK_NOWAIT (MySQL 8)
		return idemdriver.KindLockTimeout
	case 1969, // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
		3024, // ER_QUERY_TIMEOUT (MySQL max_execution_time)
		1317: // ER_QUERY_INTERRUPTED (KILL QUERY)
		return idemdriver.KindStatementTimeout
	case 1305: // ER_SP_DOES_NOT_EXIST
		// "SAVEPOINT ... does not exist" for a savepoint the core set in
		// this transaction: the transaction that held it is gone.
		if strings.HasPrefix(myErr.Message, "SAVEPOINT") {
			return idemdriver.KindTxEnded
		}
	case 1146, // ER_NO_SUCH_TABLE
		1049, // ER_BAD_DB_ERROR: the schema (Options.Schema) does not exist
		1054, // ER_BAD_FIELD_ERROR: a column of a later migration
		1109, // ER_UNKNOWN_TABLE
		1176, // ER_KEY_DOES_NOT_EXITS: FORCE INDEX on a table the migrations did not make
		1044, // ER_DBACCESS_DENIED_ERROR
		1142, // ER_TABLEACCESS_DENIED_ERROR
		1143, // ER_COLUMNACCESS_DENIED_ERROR
		1064: // ER_PARSE_ERROR: a server too old for the statement (SKIP LOCKED)
		return idemdriver.KindStoreUnusable
	case 1927, // ER_CONNECTION_KILLED (MariaDB)
		1053,       // ER_SERVER_SHUTDOWN
		4031,       // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
		2006, 2013: // CR_SERVER_GONE_ERROR, CR_SERVER_LOST
		return idemdriver.KindConnLost
	}
	return idemdriver.KindOther
}

// PrepareStatements: without interpolateParams the driver prepares, runs
// and closes every statement (three round trips); a statement prepared once
// per connection runs in one.
func (dialect) PrepareStatements() bool { return true }

// PrepareFailed: the server refused to prepare (1461: the server's
// max_prepared_stmt_count is reached; 1615: the statement must be prepared
// again), so nothing ran; the core then runs the statement unprepared, with
// its arguments inlined (Inline) when the driver would prepare it anyway.
func (dialect) PrepareFailed(err error) bool {
	var myErr *driver.MySQLError
	return errors.As(err, &myErr) && (myErr.Number == 1461 || myErr.Number == 1615)
}

var _ idemdriver.Inliner = dialect{}

// Inline writes the arguments of one of the dialect's statements into its
// text, for a server that can prepare no more statements (1461):
// without interpolateParams, go-sql-driver prepares even a statement it
// runs unprepared. Every value is a literal that no content can break out
// of: a string is a hexadecimal literal in utf8mb4 (_utf8mb4 X'...'), as
// the driver sends strings, bytes a plain hexadecimal one, an integer its
// digits. The statements have no '?' but their placeholders.
func (dialect) Inline(query string, args []any) (string, bool) {
	var b strings.Builder
	n := 0
	for {
		i := strings.IndexByte(query, '?')
		if i < 0 {
			break
		}
		if n == len(args) {
			return "", false
		}
		b.WriteString(query[:i])
		switch v := args[n].(type) {
		case nil:
			b.WriteString("NULL")
		case string:
			b.WriteString("_utf8mb4 X'" + hex.EncodeToString([]byte(v)) + "'")
		case []byte:
			if v == nil {
				b.WriteString("NULL")
			} else {
				b.WriteString("X'" + hex.EncodeToString(v) + "'")
			}
		case int64:
			b.WriteString(strconv.FormatInt(v, 10))
		case int:
			b.WriteString(strconv.Itoa(v))
		case bool:
			b.WriteString(strconv.FormatBool(v))
		default:
			return "", false
		}
		n++
		query = query[i+1:]
	}
	if n != len(args) {
		return "", false
	}
	b.WriteString(query)
	return b.String(), true
}

// SupportsSchemas: the table may live in another schema
// (idemsql.Options.Schema).
func (dialect) SupportsSchemas() bool { return true }
