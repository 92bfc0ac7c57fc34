package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

var _ idemsql.ClaimBounder = dialect{}

// BoundClaim sets lock_timeout for the claim and puts the old value back.
//
// A lock time-out aborts a PostgreSQL transaction. Under fail-fast the claim
// runs inside a savepoint, so rolling back to it leaves the caller's
// transaction usable; under a bounded wait the transaction is lost and the
// error says so. lock_timeout 0 means "wait forever", so fail-fast uses
// 1ms: a wait that long only happens behind another holder's lock.
func (dialect) BoundClaim(ctx context.Context, ex idemsql.Executor, timeout time.Duration, failFast bool, claim func(idemsql.Executor) error) (bool, error) {
	if failFast {
		timeout = time.Millisecond
		if _, err := ex.Exec(ctx, "SAVEPOINT idemsql_claim"); err != nil {
			return false, err
		}
	}
	var old string
	if err := ex.QueryRow(ctx, "SELECT current_setting('lock_timeout'), set_config('lock_timeout', $1, true)",
		fmt.Sprintf("%dms", max(timeout.Milliseconds(), 1))).Scan(&old, new(string)); err != nil {
		return false, err
	}
	err := claim(ex)
	timedOut := err != nil && Dialect.Classify(err) == idemsql.KindLockTimeout
	if timedOut && failFast {
		// Also undoes the set_config, which ran inside the savepoint.
		if _, rerr := ex.Exec(ctx, "ROLLBACK TO SAVEPOINT idemsql_claim"); rerr != nil {
			return true, fmt.Errorf("%w; rolling back to the savepoint failed too, the transaction is aborted: %w", err, rerr)
		}
		return true, err
	}
	if timedOut {
		return true, fmt.Errorf("%w (PostgreSQL aborted the transaction: roll it back)", err)
	}
	if _, rerr := ex.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", old); rerr != nil && err == nil {
		return false, rerr
	}
	if failFast && err == nil {
		if _, rerr := ex.Exec(ctx, "RELEASE SAVEPOINT idemsql_claim"); rerr != nil {
			return false, rerr
		}
	}
	return false, err
}
