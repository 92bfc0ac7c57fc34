package idemmysql

import (
	"database/sql"
	"strings"

	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.LeaseDialect = dialect{}

// LeaseStatements is the SQL of lease mode, for MySQL 8.0.1+ and MariaDB
// 10.6+ (SKIP LOCKED). A DELETE cannot skip locked rows, so Purge locks a
// batch of rows with a SELECT and deletes them by key in the same
// transaction. UTC_TIMESTAMP(6) is fixed for the whole statement, so it
// bounds the index scans of Sweep and Purge.
func (dialect) LeaseStatements(table idemdriver.Table) idemdriver.LeaseStatements {
	t := table.Quote("`")
	const (
		now  = `UTC_TIMESTAMP(6)`
		plus = ` + INTERVAL ? MICROSECOND`
		// notLive is a claim whose lease ran out or was ended (marked);
		// never one without a lease_until.
		notLive = `status = 'in_progress' AND lease_until IS NOT NULL AND (lease_until <= UTC_TIMESTAMP(6) OR error_class IS NOT NULL)`
		// unheld is what a sweeper may move: notLive, or no lease at all.
		unheld = `status = 'in_progress' AND (lease_until IS NULL OR lease_until <= UTC_TIMESTAMP(6) OR error_class IS NOT NULL)`
		// A marked claim's lease_until is the end of its retention (End);
		// the expires_at test keeps a claim released by an older version,
		// whose lease_until is the moment of its release, with callers.
		stale = `status = 'in_progress' AND lease_until <= UTC_TIMESTAMP(6) AND (error_class IS NULL OR expires_at <= UTC_TIMESTAMP(6))`
		// An abandoned claim is kept: it holds the downstream key of an
		// effect that may have happened (idemsql.AbandonedClass).
		purgeable = `expires_at < UTC_TIMESTAMP(6) AND status <> 'in_progress' AND (error_class IS NULL OR error_class <> '` + idemdriver.AbandonedClass + `')`
		// fence is the condition of every write of a holder. A released
		// claim's mark (error_class) ends its fence.
		fence = `idem_key = ? AND attempt = ? AND owner = ? AND status = 'in_progress' AND error_class IS NULL`
		keep  = `expires_at = GREATEST(expires_at, ` + now + plus + `)`
		// DATETIME(6) in UTC, as unix milliseconds, without the session time
		// zone that UNIX_TIMESTAMP() would apply.
		gen = `CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', created_at) DIV 1000 AS SIGNED)`
	)
	// The sweep statements pick candidates with a plain read of the
	// (status, lease_until) index (up to now, its NULL entries, or its
	// marked claims), then lock them by primary key, re-checking where. A
	// locking range scan would also lock the index entry that ends the
	// range, even under READ COMMITTED, until the batch commits: the live
	// lease that runs out next, whose holder's renewal would wait for the
	// batch. The plain read sees the latest commit (READ COMMITTED) and
	// never a claim of a transaction still running.
	// pick may hold a condition with placeholders, recheck may not.
	sweepBy := func(pick, recheck, order string) string {
		return `SELECT t.idem_key, t.attempt, t.owner, t.fingerprint, ` + strings.ReplaceAll(gen, "created_at", "t.created_at") + `,
t.error_class, t.error_message, t.lease_until IS NOT NULL
FROM (SELECT idem_key FROM ` + t + ` WHERE ` + pick + order + ` LIMIT ?) c
JOIN ` + t + ` t FORCE INDEX (PRIMARY) ON t.idem_key = c.idem_key
WHERE ` + qualify(recheck) + ` FOR UPDATE SKIP LOCKED`
	}
	sweep := func(where, order string) string { return sweepBy(where, where, order) }
	const released = `status = 'in_progress' AND lease_until IS NOT NULL AND error_class IS NOT NULL`
	return idemdriver.LeaseStatements{
		SkipLocked: true,
		// Under REPEATABLE READ, the locking scans of Sweep and Purge would
		// take gap locks and next-key locks on the rows they pass: every
		// new atomic claim's entry lands in the lease index's locked gap,
		// and every new row at the end of the expires_at index, so claims
		// of unrelated new keys waited for a batch. READ COMMITTED locks
		// only the rows a scan returns. (Like any InnoDB write under READ
		// COMMITTED, it needs binlog_format ROW or MIXED, the defaults of
		// MySQL 8 and MariaDB, when the binary log is on.)
		Isolation: sql.LevelReadCommitted,
		Claim: `INSERT INTO ` + t + ` (idem_key, fingerprint, status, attempt, owner, lease_until, created_at, updated_at, expires_at)
VALUES (?, ?, 'in_progress', 1, ?, ` + now + plus + `, ` + now + `, ` + now + `, ` + now + plus + `)`,
		// A plain read, first in its transaction: its snapshot is taken now
		// and sees the latest commit, and it locks nothing that would make
		// takeovers skip the row.
		Read: `SELECT status, fingerprint, result, attempt, owner, expires_at <= ` + now + `, lease_until IS NOT NULL,
lease_until IS NOT NULL AND lease_until > ` + now + ` AND error_class IS NULL, ` + gen + `, error_class, error_message
FROM ` + t + ` WHERE idem_key = ?`,
		Touch:     `UPDATE ` + t + ` SET ` + touch + ` WHERE idem_key = ?`,
		LockStale: `SELECT attempt FROM ` + t + ` WHERE idem_key = ? AND attempt = ? AND owner = ? AND ` + notLive + ` FOR UPDATE SKIP LOCKED`,
		TakeOver: `UPDATE ` + t + ` SET attempt = attempt + 1, owner = ?, lease_until = ` + now + plus + `,
` + keep + `, error_class = NULL, error_message = NULL, updated_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND owner = ? AND ` + notLive,
		Adopt: `UPDATE ` + t + ` SET attempt = attempt + 1, owner = ?, lease_until = ` + now + plus + `,
` + keep + `, error_class = NULL, error_message = NULL, updated_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND owner = ? AND ` + unheld,
		// A re-claimed row starts a new generation (a new downstream key),
		// unless Sweep abandoned it: the abandoned claim may hide an effect,
		// which the next run must repeat under the same downstream key.
		// MySQL assigns from left to right and later expressions see the
		// new values: created_at goes first, before status and error_class
		// change. The placeholders keep their order: created_at takes none.
		Reclaim: `UPDATE ` + t + ` SET created_at = CASE WHEN status = 'failed' AND error_class = '` + idemdriver.AbandonedClass + `' THEN created_at ELSE ` + now + ` END,
status = 'in_progress', fingerprint = ?, result = NULL, error_class = NULL, error_message = NULL,
attempt = attempt + 1, owner = ?, lease_until = ` + now + plus + `, updated_at = ` + now + `,
completed_at = NULL, expires_at = ` + now + plus + `
WHERE idem_key = ? AND attempt = ? AND expires_at <= ` + now + ` AND status <> 'in_progress'`,
		Renew: `UPDATE ` + t + ` SET lease_until = ` + now + plus + `, ` + keep + `, updated_at = ` + now + `
WHERE ` + fence,
		StepsRead: `SELECT steps FROM ` + t + ` WHERE ` + fence,
		StepsSave: `UPDATE ` + t + ` SET steps = ?, lease_until = ` + now + plus + `, ` + keep + `, updated_at = ` + now + `
WHERE ` + fence,
		StepsSwap: `UPDATE ` + t + ` SET steps = ?, updated_at = ` + now + `
WHERE ` + fence + ` AND steps = ?`,
		Complete: `UPDATE ` + t + ` SET status = 'completed', result = ?, error_class = NULL, error_message = NULL,
` + keep + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE ` + fence,
		Fail: `UPDATE ` + t + ` SET status = 'failed', error_class = ?, error_message = ?,
` + keep + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE ` + fence,
		// lease_until = expires_at sees the new expires_at: MySQL assigns
		// from left to right.
		End: `UPDATE ` + t + ` SET error_class = ?, error_message = ?,
` + keep + `, lease_until = expires_at, updated_at = ` + now + `
WHERE ` + fence,
		// As End: lease_until = expires_at sees the new expires_at.
		Restore: `UPDATE ` + t + ` SET error_class = ?, error_message = ?,
` + keep + `, lease_until = expires_at, attempt = ?, owner = ?, updated_at = ` + now + `
WHERE ` + fence,
		Abandon: `UPDATE ` + t + ` SET status = 'failed', error_class = ?, error_message = ?, attempt = attempt + 1, owner = ?,
` + keep + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND owner = ? AND ` + unheld,
		SweepStale:    sweep(stale, ` ORDER BY lease_until`),
		SweepUnleased: sweep(`status = 'in_progress' AND lease_until IS NULL`, ``),
		SweepReleased: sweepBy(released+` AND INSTR(COALESCE(error_message, ''), ?) <> 1`, released, ` ORDER BY lease_until`),
		// One read per batch walks the expires_at index once; a read per
		// row would walk again, each time, past the rows this transaction
		// already deleted, which stay in the index until it commits. As
		// for the sweep, a plain read picks the keys and a lookup by
		// primary key locks them: a locking range scan would also lock the
		// first row past the expired ones until the batch commits.
		PurgeLock: `SELECT t.idem_key FROM (SELECT idem_key FROM ` + t + ` WHERE ` + purgeable + ` ORDER BY expires_at LIMIT ?) c
JOIN ` + t + ` t FORCE INDEX (PRIMARY) ON t.idem_key = c.idem_key
WHERE ` + qualify(purgeable) + ` FOR UPDATE SKIP LOCKED`,
		// FORCE INDEX (PRIMARY), which only the multiple-table DELETE
		// syntax takes: on a small table the optimizer would rather scan
		// it all, and a DELETE waits for every locked row it scans.
		PurgeKeys: func(n int) string {
			return `DELETE ` + t + ` FROM ` + t + ` FORCE INDEX (PRIMARY) WHERE idem_key IN (?` + strings.Repeat(`, ?`, n-1) + `) AND ` + purgeable
		},
		// NOWAIT also refuses a claim not yet committed: its row's implicit
		// lock becomes a real one when the locking read meets it.
		ForgetLock: `SELECT attempt, owner, status = 'in_progress' AND lease_until IS NOT NULL AND lease_until > ` + now + ` AND error_class IS NULL
FROM ` + t + ` WHERE idem_key = ? FOR UPDATE NOWAIT`,
		Forget: `DELETE FROM ` + t + ` WHERE idem_key = ? AND attempt = ? AND owner <=> ?`,
	}
}

// qualify prefixes the columns of a condition with the alias t.
func qualify(cond string) string {
	for _, col := range []string{"status", "lease_until", "error_class", "expires_at"} {
		cond = strings.ReplaceAll(cond, col, "t."+col)
	}
	return cond
}
