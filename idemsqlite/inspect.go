package idemsqlite

import (
	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.InspectDialect = dialect{}

// InspectStatements is the SQL of the read API. Times are stored in unix
// milliseconds and leave as microseconds. List names its arguments by
// number (?1 ... ?9), so that each is bound once and used where needed.
func (dialect) InspectStatements(table idemdriver.Table) idemdriver.InspectStatements {
	t := table.Quote(`"`)
	const now = nowMillis
	us := func(col string) string { return col + ` * 1000` }
	lease := `CASE WHEN status <> 'in_progress' THEN 'none' WHEN lease_until IS NULL THEN 'abandoned'
WHEN error_class = 'released' THEN 'released' WHEN lease_until > ` + now + ` THEN 'live' ELSE 'stale' END`
	columns := func(result string) string {
		return `idem_key, status, attempt, owner, fingerprint, ` + result + `, error_class, error_message,
` + lease + `, ` + us("lease_until") + `, ` + us("created_at") + `, ` + us("updated_at") + `, ` + us("completed_at") + `, ` + us("expires_at") + `, ` + us(now) + `, steps`
	}
	// As LeaseStatements' SweepNext and Purge select.
	const (
		// What Sweep without a handler resolves: a claim committed
		// without a lease, or one whose lease ran out (a released claim
		// once its retention has run out too).
		sweepable = `status = 'in_progress' AND (lease_until IS NULL OR lease_until <= ` + now + ` AND (error_class IS NULL OR expires_at <= ` + now + `))`
		purgeable = `expires_at < ` + now + ` AND status <> 'in_progress' AND (error_class IS NULL OR error_class <> '` + idemdriver.AbandonedClass + `')`
	)
	count := func(cond string) string { return `COALESCE(SUM(CASE WHEN ` + cond + ` THEN 1 ELSE 0 END), 0)` }
	return idemdriver.InspectStatements{
		Lookup: `SELECT ` + columns("result") + ` FROM ` + t + ` WHERE idem_key = ?`,
		List: `SELECT ` + columns("NULL") + ` FROM ` + t + `
WHERE (?1 = '' OR status = ?1)
AND (?2 = '' OR ` + lease + ` = ?2)
AND (?3 = 0 OR (` + sweepable + `))
AND (?4 = 0 OR (` + purgeable + `))
AND (?5 = 0 OR created_at <= ` + now + ` - ?5 / 1000)
AND idem_key > ?6 AND idem_key >= ?7 AND idem_key < ?8
ORDER BY idem_key LIMIT ?9`,
		Stats: `SELECT COUNT(*), ` + count(`status = 'in_progress'`) + `, ` + count(`status = 'completed'`) + `, ` + count(`status = 'failed'`) + `,
` + count(lease+` = 'live'`) + `, ` + count(lease+` = 'stale'`) + `, ` + count(lease+` = 'released'`) + `, ` + count(lease+` = 'abandoned'`) + `,
` + count(`attempt > 1`) + `, ` + count(sweepable) + `, ` + count(purgeable) + `,
(SELECT idem_key FROM ` + t + ` WHERE status = 'in_progress' ORDER BY created_at, idem_key LIMIT 1),
(SELECT MIN(created_at) FROM ` + t + ` WHERE status = 'in_progress') * 1000, ` + us(now) + `
FROM ` + t,
	}
}
