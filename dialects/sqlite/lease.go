package sqlite

import "github.com/idemsql/idemsql/idemsql"

var _ idemsql.LeaseDialect = dialect{}

// LeaseStatements is the SQL of lease mode. SQLite has one writer and no
// row locks: every step that moves a claim is a conditional UPDATE that
// re-checks the attempt and the lease against SQLite's own clock, so of two
// contenders only the first writer changes the row.
func (dialect) LeaseStatements(table string) idemsql.LeaseStatements {
	t := `"` + table + `"`
	const (
		now   = nowMillis
		plus  = ` + ? / 1000`
		stale = `status = 'in_progress' AND lease_until <= ` + nowMillis
		// A released row (error_class set) waits for callers until its
		// retention has run out.
		sweepable = stale + ` AND (error_class IS NULL OR expires_at <= ` + nowMillis + `)`
		purgeable = `expires_at < ` + nowMillis + ` AND status <> 'in_progress'`
		// fence is the condition of every write of a holder. A released
		// claim's mark (error_class) ends its fence.
		fence = `idem_key = ? AND attempt = ? AND owner = ? AND status = 'in_progress' AND error_class IS NULL`
		keep  = `expires_at = max(expires_at, ` + now + plus + `)`
	)
	return idemsql.LeaseStatements{
		// Isolation stays the pool's: SQLite runs one writer at a time, so
		// a batch of Sweep or Purge holds the only write lock whatever the
		// level, and takes no other locks.
		Claim: `INSERT INTO ` + t + ` (idem_key, fingerprint, status, attempt, owner, lease_until, created_at, updated_at, expires_at)
VALUES (?, ?, 'in_progress', 1, ?, ` + now + plus + `, ` + now + `, ` + now + `, ` + now + plus + `)
ON CONFLICT (idem_key) DO NOTHING`,
		Read: `SELECT status, fingerprint, result, attempt, owner, expires_at <= ` + now + `, lease_until IS NOT NULL,
lease_until IS NOT NULL AND lease_until > ` + now + `, created_at, error_class, error_message
FROM ` + t + ` WHERE idem_key = ?`,
		TakeOver: `UPDATE ` + t + ` SET attempt = attempt + 1, owner = ?, lease_until = ` + now + plus + `,
` + keep + `, error_class = NULL, error_message = NULL, updated_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND owner = ? AND ` + stale,
		// A re-claimed row starts a new generation (a new downstream key),
		// unless Sweep abandoned it: the abandoned claim may hide an effect,
		// which the next run must repeat under the same downstream key.
		Reclaim: `UPDATE ` + t + ` SET status = 'in_progress', fingerprint = ?, result = NULL, error_class = NULL, error_message = NULL,
attempt = attempt + 1, owner = ?, lease_until = ` + now + plus + `,
created_at = CASE WHEN status = 'failed' AND error_class = '` + idemsql.AbandonedClass + `' THEN created_at ELSE ` + now + ` END,
updated_at = ` + now + `,
completed_at = NULL, expires_at = ` + now + plus + `
WHERE idem_key = ? AND attempt = ? AND expires_at <= ` + now + ` AND status <> 'in_progress'`,
		Renew: `UPDATE ` + t + ` SET lease_until = ` + now + plus + `, ` + keep + `, updated_at = ` + now + `
WHERE ` + fence,
		Complete: `UPDATE ` + t + ` SET status = 'completed', result = ?, error_class = NULL, error_message = NULL,
` + keep + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE ` + fence,
		Fail: `UPDATE ` + t + ` SET status = 'failed', error_class = ?, error_message = ?,
` + keep + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE ` + fence,
		End: `UPDATE ` + t + ` SET lease_until = ` + now + `, error_class = ?, error_message = ?,
` + keep + `, updated_at = ` + now + `
WHERE ` + fence,
		Abandon: `UPDATE ` + t + ` SET status = 'failed', error_class = ?, error_message = ?, attempt = attempt + 1, owner = ?,
` + keep + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = ? AND attempt = ? AND owner = ? AND ` + stale,
		SweepNext: `SELECT idem_key, attempt, owner, fingerprint, created_at FROM ` + t + `
WHERE ` + sweepable + ` ORDER BY lease_until LIMIT 1`,
		Purge: `DELETE FROM ` + t + ` WHERE idem_key IN (SELECT idem_key FROM ` + t + `
WHERE ` + purgeable + ` ORDER BY expires_at LIMIT ?) AND ` + purgeable,
	}
}
