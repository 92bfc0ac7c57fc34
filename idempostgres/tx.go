package idempostgres

import (
	"github.com/jackc/pgx/v5"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

var _ idemsql.TxBinder[pgx.Tx] = pgxPool{}

// BindTx binds a pgx transaction for [idemsql.Do], so that
// s.Pool(p, opts).Tx(tx) is s.Pgx(tx): one binding serves Run and Do.
func (pgxPool) BindTx(tx pgx.Tx) idemdriver.Executor {
	if tx == nil {
		return nil
	}
	return pgxExecutor{tx}
}
