package idempostgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.InspectDialect = dialect{}

// InspectStatements is the SQL of the read API. now is
// statement_timestamp(): the database's clock when the statement began,
// one value for every row of it (clock_timestamp() would move from row to
// row). Times leave as bigint microseconds; extract(epoch) is exact
// numeric since PostgreSQL 14.
func (dialect) InspectStatements(table idemdriver.Table) idemdriver.InspectStatements {
	t := table.Quote(`"`)
	const now = `statement_timestamp()`
	us := func(col string) string { return `(extract(epoch FROM ` + col + `) * 1000000)::bigint` }
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
	count := func(cond string) string { return `count(*) FILTER (WHERE ` + cond + `)` }
	return idemdriver.InspectStatements{
		Lookup: `SELECT ` + columns("result") + ` FROM ` + t + ` WHERE idem_key = $1`,
		List: `SELECT ` + columns("NULL::json") + ` FROM ` + t + `
WHERE ($1::text = '' OR status = $1::text)
AND ($2::text = '' OR ` + lease + ` = $2::text)
AND (NOT $3::boolean OR (` + sweepable + `))
AND (NOT $4::boolean OR (` + purgeable + `))
AND ($5::bigint = 0 OR created_at <= ` + now + ` - $5::bigint * interval '1 microsecond')
AND idem_key > $6::text AND idem_key >= $7::text AND idem_key < $8::text
ORDER BY idem_key LIMIT $9`,
		Stats: `SELECT count(*), ` + count(`status = 'in_progress'`) + `, ` + count(`status = 'completed'`) + `, ` + count(`status = 'failed'`) + `,
` + count(lease+` = 'live'`) + `, ` + count(lease+` = 'stale'`) + `, ` + count(lease+` = 'released'`) + `, ` + count(lease+` = 'abandoned'`) + `,
` + count(`attempt > 1`) + `, ` + count(sweepable) + `, ` + count(purgeable) + `,
(SELECT idem_key FROM ` + t + ` WHERE status = 'in_progress' ORDER BY created_at, idem_key LIMIT 1),
` + us(`(SELECT min(created_at) FROM `+t+` WHERE status = 'in_progress')`) + `, ` + us(now) + `
FROM ` + t,
	}
}

// pgx transactions run queries of many rows: List reads a page in one
// statement.
var _ idemdriver.RowsQuerier = pgxExecutor{}

// Query runs a query returning many rows in the transaction.
func (e pgxExecutor) Query(ctx context.Context, query string, args ...any) (idemdriver.Rows, error) {
	rows, err := e.tx.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return pgxRows{rows}, nil
}

type pgxRows struct{ pgx.Rows }

func (r pgxRows) Close() error {
	r.Rows.Close()
	return r.Rows.Err()
}
