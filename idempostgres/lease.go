package idempostgres

import (
	"database/sql"
	"strconv"

	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.LeaseDialect = dialect{}

// LeaseStatements is the SQL of lease mode. Every lease time is
// clock_timestamp(): the caller's transaction is short here, but now() would
// still be the start of a transaction that waited on a lock. The sweep
// scans are bounded by statement_timestamp() instead: it is stable within
// the statement, so the planner can make it an index condition on
// lease_until (clock_timestamp(), volatile, would only be a filter over the
// whole index), and it is never later than clock_timestamp(), so a bounded
// scan never returns a row the UPDATEs' own checks would refuse.
func (dialect) LeaseStatements(table idemdriver.Table) idemdriver.LeaseStatements {
	t := table.Quote(`"`)
	const (
		now = `clock_timestamp()`
		// notLive is a claim whose lease ran out or was ended (marked);
		// never one without a lease_until.
		notLive = `status = 'in_progress' AND lease_until IS NOT NULL AND (lease_until <= clock_timestamp() OR error_class IS NOT NULL)`
		// unheld is what a sweeper may move: notLive, or no lease at all.
		unheld = `status = 'in_progress' AND (lease_until IS NULL OR lease_until <= clock_timestamp() OR error_class IS NOT NULL)`
		// An abandoned claim is kept: it holds the downstream key of an
		// effect that may have happened (idemsql.AbandonedClass).
		purgeable = `expires_at < clock_timestamp() AND status <> 'in_progress' AND (error_class IS NULL OR error_class <> '` + idemdriver.AbandonedClass + `')`
		// A marked claim's lease_until is the end of its retention (End);
		// the expires_at test keeps a claim released by an older version,
		// whose lease_until is the moment of its release, with callers.
		stale = `status = 'in_progress' AND lease_until <= statement_timestamp()
AND (error_class IS NULL OR expires_at <= statement_timestamp())`
	)
	// us renders a microsecond parameter as an interval.
	us := func(p string) string { return p + `::bigint * interval '1 microsecond'` }
	// fence is the condition of every write of a holder; p is the first of
	// its three placeholders (key, attempt, owner). A released claim's mark
	// (error_class) ends its fence.
	fence := func(p int) string {
		return `idem_key = $` + itoa(p) + ` AND attempt = $` + itoa(p+1) + ` AND owner = $` + itoa(p+2) +
			` AND status = 'in_progress' AND error_class IS NULL`
	}
	keep := func(p string) string { return `expires_at = GREATEST(expires_at, ` + now + ` + ` + us(p) + `)` }
	gen := `floor(extract(epoch FROM created_at) * 1000)::bigint`
	// A re-claimed row starts a new generation (a new downstream key),
	// unless Sweep abandoned it: the abandoned claim may hide an effect,
	// which the next run must repeat under the same downstream key.
	newGeneration := `CASE WHEN status = 'failed' AND error_class = '` + idemdriver.AbandonedClass + `' THEN created_at ELSE ` + now + ` END`
	sweep := func(where, order string) string {
		return `SELECT idem_key, attempt, owner, fingerprint, ` + gen + `, error_class, error_message, lease_until IS NOT NULL
FROM ` + t + ` WHERE ` + where + order + ` LIMIT $1 FOR UPDATE SKIP LOCKED`
	}
	return idemdriver.LeaseStatements{
		SkipLocked: true,
		// The statements are written for READ COMMITTED, PostgreSQL's
		// default. PostgreSQL takes no gap locks at any level, so this only
		// keeps a pool bound with a stricter level from making Sweep and
		// Purge meet serialization failures.
		Isolation: sql.LevelReadCommitted,
		// Claim, Reclaim and TakeOver take the key's lock in shared mode
		// first, as atomic-mode claims do (keyLock): a fail-fast claim of
		// the key then answers at once instead of waiting for them.
		Claim: `INSERT INTO ` + t + ` (idem_key, fingerprint, status, attempt, owner, lease_until, created_at, updated_at, expires_at)
SELECT $1, $2, 'in_progress', 1, $3, ` + now + ` + ` + us("$4") + `, ` + now + `, ` + now + `, ` + now + ` + ` + us("$5") + `
FROM ` + sharedKeyLock(table, "$1") + `
ON CONFLICT (idem_key) DO NOTHING`,
		Read: `SELECT status, fingerprint, result, attempt, owner, expires_at <= ` + now + `, lease_until IS NOT NULL,
lease_until IS NOT NULL AND lease_until > ` + now + ` AND error_class IS NULL, ` + gen + `, error_class, error_message
FROM ` + t + ` WHERE idem_key = $1`,
		LockStale: `SELECT attempt FROM ` + t + ` WHERE idem_key = $1 AND attempt = $2 AND owner = $3 AND ` + notLive + ` FOR UPDATE SKIP LOCKED`,
		TakeOver: `UPDATE ` + t + ` SET attempt = attempt + 1, owner = $1, lease_until = ` + now + ` + ` + us("$2") + `,
` + keep("$3") + `, error_class = NULL, error_message = NULL, updated_at = ` + now + `
FROM ` + sharedKeyLock(table, "$4") + `
WHERE idem_key = $4 AND attempt = $5 AND owner = $6 AND ` + notLive,
		Adopt: `UPDATE ` + t + ` SET attempt = attempt + 1, owner = $1, lease_until = ` + now + ` + ` + us("$2") + `,
` + keep("$3") + `, error_class = NULL, error_message = NULL, updated_at = ` + now + `
WHERE idem_key = $4 AND attempt = $5 AND owner = $6 AND ` + unheld,
		Reclaim: `UPDATE ` + t + ` SET status = 'in_progress', fingerprint = $1, result = NULL, error_class = NULL, error_message = NULL,
attempt = attempt + 1, owner = $2, lease_until = ` + now + ` + ` + us("$3") + `, created_at = ` + newGeneration + `, updated_at = ` + now + `,
completed_at = NULL, expires_at = ` + now + ` + ` + us("$4") + `
FROM ` + sharedKeyLock(table, "$5") + `
WHERE idem_key = $5 AND attempt = $6 AND expires_at <= ` + now + ` AND status <> 'in_progress'`,
		Renew: `UPDATE ` + t + ` SET lease_until = ` + now + ` + ` + us("$1") + `, ` + keep("$2") + `, updated_at = ` + now + `
WHERE ` + fence(3),
		StepsRead: `SELECT steps FROM ` + t + ` WHERE ` + fence(1),
		StepsSave: `UPDATE ` + t + ` SET steps = $1, lease_until = ` + now + ` + ` + us("$2") + `, ` + keep("$3") + `, updated_at = ` + now + `
WHERE ` + fence(4),
		StepsSwap: `UPDATE ` + t + ` SET steps = $1, updated_at = ` + now + `
WHERE ` + fence(2) + ` AND steps = $5`,
		Complete: `UPDATE ` + t + ` SET status = 'completed', result = $1, error_class = NULL, error_message = NULL,
` + keep("$2") + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE ` + fence(3),
		Fail: `UPDATE ` + t + ` SET status = 'failed', error_class = $1, error_message = $2,
` + keep("$3") + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE ` + fence(4),
		End: `UPDATE ` + t + ` SET lease_until = GREATEST(expires_at, ` + now + ` + ` + us("$3") + `), error_class = $1, error_message = $2,
` + keep("$3") + `, updated_at = ` + now + `
WHERE ` + fence(4),
		Restore: `UPDATE ` + t + ` SET attempt = $4, owner = $5, lease_until = GREATEST(expires_at, ` + now + ` + ` + us("$3") + `),
error_class = $1, error_message = $2, ` + keep("$3") + `, updated_at = ` + now + `
WHERE ` + fence(6),
		Abandon: `UPDATE ` + t + ` SET status = 'failed', error_class = $1, error_message = $2, attempt = attempt + 1, owner = $3,
` + keep("$4") + `, updated_at = ` + now + `, completed_at = ` + now + `
WHERE idem_key = $5 AND attempt = $6 AND owner = $7 AND ` + unheld,
		// All three scan the partial index on lease_until of in_progress
		// rows: from its start up to statement_timestamp(), its NULL
		// entries, or its marked claims.
		SweepStale:    sweep(stale, ` ORDER BY lease_until`),
		SweepUnleased: sweep(`status = 'in_progress' AND lease_until IS NULL`, ``),
		SweepReleased: `SELECT idem_key, attempt, owner, fingerprint, ` + gen + `, error_class, error_message, lease_until IS NOT NULL
FROM ` + t + ` WHERE status = 'in_progress' AND lease_until IS NOT NULL AND error_class IS NOT NULL
AND strpos(coalesce(error_message, ''), $1) <> 1 ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED`,
		// statement_timestamp(), never later than clock_timestamp() and
		// stable, bounds the scan of the expires_at index; the locked keys
		// are then deleted through the primary key, not by a join that
		// would read the whole table.
		Purge: `DELETE FROM ` + t + ` WHERE idem_key = ANY(ARRAY(SELECT idem_key FROM ` + t + `
WHERE expires_at < statement_timestamp() AND ` + purgeable + ` ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED))
AND ` + purgeable,
		ForgetLock: `SELECT attempt, owner, status = 'in_progress' AND lease_until IS NOT NULL AND lease_until > ` + now + ` AND error_class IS NULL
FROM ` + t + ` WHERE idem_key = $1 FOR UPDATE NOWAIT`,
		Forget: `DELETE FROM ` + t + ` WHERE idem_key = $1 AND attempt = $2 AND owner IS NOT DISTINCT FROM $3`,
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
