package idempostgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/idemsql/idemsql/idemsql"
)

// Beginner begins pgx transactions: *pgxpool.Pool and *pgx.Conn are
// Beginners.
type Beginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// Pool binds the store to a pgx pool or connection, for [idemsql.Run]. Every
// transaction is begun with opts (pgx.TxOptions{} for the server's
// defaults; IsoLevel pgx.Serializable, say).
func (s *Store) Pool(p Beginner, opts pgx.TxOptions) idemsql.DB[pgx.Tx] {
	if p == nil {
		return idemsql.BindPool[pgx.Tx](s.Store, nil)
	}
	return idemsql.BindPool[pgx.Tx](s.Store, pgxPool{p: p, opts: opts})
}

type pgxPool struct {
	p    Beginner
	opts pgx.TxOptions
}

func (p pgxPool) Begin(ctx context.Context) (idemsql.PoolTx[pgx.Tx], error) {
	tx, err := p.p.BeginTx(ctx, p.opts)
	if err != nil {
		return nil, err
	}
	return pgxPoolTx{pgxExecutor{tx}}, nil
}

var _ idemsql.PoolTx[pgx.Tx] = pgxPoolTx{}

type pgxPoolTx struct{ pgxExecutor }

func (t pgxPoolTx) Tx() pgx.Tx                         { return t.tx }
func (t pgxPoolTx) Commit(ctx context.Context) error   { return t.tx.Commit(ctx) }
func (t pgxPoolTx) Rollback(ctx context.Context) error { return t.tx.Rollback(ctx) }
