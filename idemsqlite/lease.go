package idemsqlite

import (
	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.LeaseDialect = dialect{}

// LeaseStatements is the SQL of lease mode. SQLite has one writer and no
// row locks: every step that moves a claim is a conditional UPDATE that
// re-checks the attempt and the lease against SQLite's own clock, so of two
// contenders only the first writer changes the row. SQLite reads its clock
// once per statement, so it bounds the sweep scans of the lease index.
func (dialect) LeaseStatements(table idemdriver.Table) idemdriver.LeaseStatements {
	t := table.Quote(`"`)
	const (
		now  = nowMillis
		plus = ` + ? / 1000`
		// notLive is a claim whose lease ran out or was ended (marked);
		// never one without a lease_until.
		notLive = `status = 'in_progress' AND lease_until IS NOT NULL AND (lease_until <= ` + nowMillis + ` OR error_class IS NOT NULL)`
		// unheld is what a sweeper may move: notLive, or no lease at all.
		unheld = `status = 'in_progress' AND (lease_until IS NULL OR lease_until <= ` + nowMillis + ` OR error_class IS NOT NULL)`
		// A marked claim's lease_until is the end of its retention (End);
		// the expires_at test keeps a claim released by an older version,
		// whose lease_until is the moment of its release, with callers.
		stale = `status = 'in_progress' AND lease_until <= ` + nowMillis + ` AND (error_class IS NULL OR expires_at <= ` + nowMillis + `)`
		// An abandoned claim is kept: it holds the downstream key of an
		// effect that may have happened (idemsql.AbandonedClass).
		purgeable = `expires_at < ` + nowMillis + ` AND status <> 'in_progress' AND (error_class IS NULL OR error_class <> '` + idemdriver.AbandonedClass + `')`
		// fence is the condition of every write of a holder. A released
		// claim's mark (error_class) ends its fence.
		fence = `idem_key = ? AND attempt = ? AND owner = ? AND status = 'in_progress' AND error_class IS NULL`
		keep  = `expires_at = max(expires_at, ` + now + plus + `)`
	)
	sweep := func(where, order string) string {
		return `SELECT idem_key, attempt, owner, fingerprint, created_at, error_class, error_message, lease_until IS NOT NULL
FROM ` + t + ` WHERE ` + where + order + ` LIMIT ?`
	}
	return idemdriver.LeaseStatements{
		// Isolation stays the pool's: SQLite runs one writer at a time, so
		// a batch of Sweep or Purge holds the only write lock whatever the
		// level, and takes no other locks.
		Claim: `INSERT INTO ` + t + ` (idem_key, fingerprint, status, attempt, owner, lease_until, created_at, updated_at, expires_at)
VALUES (?, ?, 'in_progress', 1, ?, ` + now + plus + `, ` + now + `, ` + now + `, ` + now + plus + `)
ON CONFLICT (idem_key) DO NOTHING`,
		Read: `SELECT status, fingerprint, result, attempt, owner, expires_at <= ` + now + `, lease_until IS NOT NULL,
lease_until IS NOT NULL AND lease_until > ` + now + ` AND error_class IS NULL, created_at, error_class, error_message
FROM ` + t + ` WHERE idem_key = ?`,
		TakeOver: `UPDATE ` + t + ` SET attempt = attempt + 1, owner = ?, lease_until = ` + now + plus + `,
` + keep + `, error_class = NULL, error_message = NULL, updated_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND owner = ? AND ` + notLive,
		Adopt: `UPDATE ` + t + ` SET attempt = attempt + 1, owner = ?, lease_until = ` + now + plus + `,
` + keep + `, error_class = NULL, error_message = NULL, updated_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND owner = ? AND ` + unheld,
		// A re-claimed row starts a new generation (a new downstream key),
		// unless Sweep abandoned it: the abandoned claim may hide an effect,
		// which the next run must repeat under the same downstream key.
		Reclaim: `UPDATE ` + t + ` SET status = 'in_progress', fingerprint = ?, result = NULL, error_class = NULL, error_message = NULL,
attempt = attempt + 1, owner = ?, lease_until = ` + now + plus + `,
created_at = CASE WHEN status = 'failed' AND error_class = '` + idemdriver.AbandonedClass + `' THEN created_at ELSE ` + now + ` END,
updated_at = ` + now + `,
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
		// Numbered parameters: the TTL (?3) is used twice, and SQLite's SET
		// reads the old expires_at in both.
		End: `UPDATE ` + t + ` SET lease_until = max(expires_at, ` + now + ` + ?3 / 1000), error_class = ?1, error_message = ?2,
expires_at = max(expires_at, ` + now + ` + ?3 / 1000), updated_at = ` + now + `
WHERE idem_key = ?4 AND attempt = ?5 AND owner = ?6 AND status = 'in_progress' AND error_class IS NULL`,
		Restore: `UPDATE ` + t + ` SET lease_until = max(expires_at, ` + now + ` + ?3 / 1000), error_class = ?1, error_message = ?2,
expires_at = max(expires_at, ` + now + ` + ?3 / 1000), attempt = ?4, owner = ?5, updated_at = ` + now + `
WHERE idem_key = ?6 AND attempt = ?7 AND owner = ?8 AND status = 'in_progress' AND error_class IS NULL`,
		Abandon: `UPDATE ` + t + ` SET status = 'failed', error_class = ?, error_message = ?, attempt = attempt + 1, owner = ?,
` + keep + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND owner = ? AND ` + unheld,
		// All three scan the partial index on lease_until of in_progress
		// rows: up to now, its NULL entries, or its marked claims.
		SweepStale:    sweep(stale, ` ORDER BY lease_until`),
		SweepUnleased: sweep(`status = 'in_progress' AND lease_until IS NULL`, ``),
		SweepReleased: sweep(`status = 'in_progress' AND lease_until IS NOT NULL AND error_class IS NOT NULL AND instr(coalesce(error_message, ''), ?) <> 1`, ` ORDER BY lease_until`),
		Purge: `DELETE FROM ` + t + ` WHERE idem_key IN (SELECT idem_key FROM ` + t + `
WHERE ` + purgeable + ` ORDER BY expires_at LIMIT ?) AND ` + purgeable,
		ForgetLock: `SELECT attempt, owner, status = 'in_progress' AND lease_until IS NOT NULL AND lease_until > ` + now + ` AND error_class IS NULL
FROM ` + t + ` WHERE idem_key = ?`,
		Forget: `DELETE FROM ` + t + ` WHERE idem_key = ? AND attempt = ? AND owner IS ?`,
	}
}
