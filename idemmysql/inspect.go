package idemmysql

import (
	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.InspectDialect = dialect{}

// InspectStatements is the SQL of the read API. UTC_TIMESTAMP(6) is one
// value for a whole statement. Times leave as microseconds since the
// epoch, counted from the UTC DATETIME(6) columns without the session time
// zone that UNIX_TIMESTAMP() would apply, so parseTime does not matter.
//
// A placeholder cannot be repeated, so List takes its arguments once, as
// the columns of a one-row derived table; MySQL and MariaDB read such a
// table before planning and use its values as constants, so the key bounds
// are a range on the primary key.
func (dialect) InspectStatements(table idemdriver.Table) idemdriver.InspectStatements {
	t := table.Quote("`")
	us := func(col string) string { return `TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', ` + col + `)` }
	lease := func(now string) string {
		return `CASE WHEN t.status <> 'in_progress' THEN 'none' WHEN t.lease_until IS NULL THEN 'abandoned'
WHEN t.error_class = 'released' THEN 'released' WHEN t.lease_until > ` + now + ` THEN 'live' ELSE 'stale' END`
	}
	columns := func(result, now string) string {
		return `t.idem_key, t.status, t.attempt, t.owner, t.fingerprint, ` + result + `, t.error_class, t.error_message,
` + lease(now) + `, ` + us("t.lease_until") + `, ` + us("t.created_at") + `, ` + us("t.updated_at") + `, ` + us("t.completed_at") + `, ` + us("t.expires_at") + `, ` + us(now) + `, t.steps`
	}
	// As LeaseStatements' SweepNext and PurgeLock select.
	sweepable := func(now string) string {
		// What Sweep without a handler resolves: a claim committed without
		// a lease, or one whose lease ran out (a released claim once its
		// retention has run out too).
		return `t.status = 'in_progress' AND (t.lease_until IS NULL OR t.lease_until <= ` + now + ` AND (t.error_class IS NULL OR t.expires_at <= ` + now + `))`
	}
	purgeable := func(now string) string {
		return `t.expires_at < ` + now + ` AND t.status <> 'in_progress' AND (t.error_class IS NULL OR t.error_class <> '` + idemdriver.AbandonedClass + `')`
	}
	const now = `UTC_TIMESTAMP(6)`
	count := func(cond string) string { return `COALESCE(SUM(CASE WHEN ` + cond + ` THEN 1 ELSE 0 END), 0)` }
	return idemdriver.InspectStatements{
		Lookup: `SELECT ` + columns("t.result", now) + ` FROM ` + t + ` t WHERE t.idem_key = ?`,
		List: `SELECT ` + columns("NULL", "p.now") + `
FROM (SELECT ? AS status, ? AS lease, ? AS sweepable, ? AS purgeable, ? AS older, ? AS after_key, ? AS from_key, ? AS to_key, ` + now + ` AS now) p, ` + t + ` t
WHERE (p.status = '' OR t.status = p.status)
AND (p.lease = '' OR ` + lease("p.now") + ` = p.lease)
AND (p.sweepable = 0 OR (` + sweepable("p.now") + `))
AND (p.purgeable = 0 OR (` + purgeable("p.now") + `))
AND (p.older = 0 OR t.created_at <= p.now - INTERVAL p.older MICROSECOND)
AND t.idem_key > p.after_key AND t.idem_key >= p.from_key AND t.idem_key < p.to_key
ORDER BY t.idem_key LIMIT ?`,
		Stats: `SELECT COUNT(*), ` + count(`t.status = 'in_progress'`) + `, ` + count(`t.status = 'completed'`) + `, ` + count(`t.status = 'failed'`) + `,
` + count(lease(now)+` = 'live'`) + `, ` + count(lease(now)+` = 'stale'`) + `, ` + count(lease(now)+` = 'released'`) + `, ` + count(lease(now)+` = 'abandoned'`) + `,
` + count(`t.attempt > 1`) + `, ` + count(sweepable(now)) + `, ` + count(purgeable(now)) + `,
(SELECT o.idem_key FROM ` + t + ` o WHERE o.status = 'in_progress' ORDER BY o.created_at, o.idem_key LIMIT 1),
` + us(`(SELECT MIN(o.created_at) FROM `+t+` o WHERE o.status = 'in_progress')`) + `, ` + us(now) + `
FROM ` + t + ` t`,
	}
}
