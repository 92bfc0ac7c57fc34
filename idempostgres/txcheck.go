package idempostgres

import (
	"context"

	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.TxChecker = dialect{}

// InTransaction tells whether the session is still in the transaction that
// made the claim. The claim wrote a row, so that transaction has an ID;
// outside it (fn sent COMMIT or ROLLBACK itself) the query runs in a
// transaction of its own, which has none yet. In an aborted transaction the
// query fails: the answer is unknown, and the cleanup fails the same way.
func (dialect) InTransaction(ctx context.Context, ex idemdriver.Executor) (in, known bool) {
	if err := ex.QueryRow(ctx, "SELECT pg_current_xact_id_if_assigned() IS NOT NULL").Scan(&in); err != nil {
		return false, false
	}
	return in, true
}
