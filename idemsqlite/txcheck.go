package idemsqlite

import (
	"context"

	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.TxChecker = dialect{}

// InTransaction sends BEGIN, which SQLite refuses inside a transaction and
// which changes nothing then; SQLite tells its autocommit state to no SQL
// statement. Outside a transaction (SQLite rolled it back after an error fn
// swallowed, or fn sent COMMIT or ROLLBACK itself) the BEGIN opens an empty
// deferred transaction, which takes no lock and which the caller's
// COMMIT or ROLLBACK ends: database/sql believes a transaction open there.
func (dialect) InTransaction(ctx context.Context, ex idemdriver.Executor) (in, known bool) {
	if _, err := ex.Exec(ctx, "BEGIN"); err != nil {
		return false, false // "cannot start a transaction within a transaction", or an answer unknown
	}
	return false, true
}
