package idempostgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/idemsql/idemsql/idemdriver"
)

// Beginner begins pgx transactions: *pgxpool.Pool and *pgx.Conn are
// Beginners.
type Beginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// New returns the driver of a pgx pool (or connection), for
// idemsql.New: the store's transactions are pgx.Tx, idemsql.Run hands fn
// one, and idemsql.Do takes one the caller began on p.
//
// On a *pgxpool.Pool or a *pgx.Conn, a transaction the store begins sends
// BEGIN with its first statement, and Run sends the result's write with
// COMMIT: a Run costs fn's round trips and two more, a replay two.
func New(p Beginner) idemdriver.Driver[pgx.Tx] {
	return pgxDriver{p: p}
}

// NewSQL returns the driver of a database/sql pool opened with pgx's
// stdlib driver (sql.Open("pgx", dsn), stdlib.OpenDBFromPool), for
// idemsql.New: the store's transactions are *sql.Tx.
func NewSQL(db *sql.DB) idemdriver.Driver[*sql.Tx] {
	return idemdriver.SQL(Dialect, db)
}

type pgxDriver struct{ p Beginner }

func (pgxDriver) Dialect() idemdriver.Dialect { return Dialect }

// Begin begins a transaction at the level; pgx has no LevelSnapshot, which
// PostgreSQL's REPEATABLE READ is.
func (d pgxDriver) Begin(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[pgx.Tx], error) {
	var opts pgx.TxOptions
	switch level {
	case sql.LevelDefault:
	case sql.LevelReadUncommitted:
		opts.IsoLevel = pgx.ReadUncommitted
	case sql.LevelReadCommitted:
		opts.IsoLevel = pgx.ReadCommitted
	case sql.LevelRepeatableRead, sql.LevelSnapshot:
		opts.IsoLevel = pgx.RepeatableRead
	case sql.LevelSerializable:
		opts.IsoLevel = pgx.Serializable
	default:
		return nil, fmt.Errorf("idempostgres: isolation level %v is not PostgreSQL's", level)
	}
	if t, ok, err := pipeline(ctx, d.p, opts); ok {
		if err != nil {
			return nil, err
		}
		return t, nil
	}
	tx, err := d.p.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return pgxTx{pgxExecutor{tx}}, nil
}

// Bind binds a pgx transaction of the caller's.
func (pgxDriver) Bind(tx pgx.Tx) idemdriver.Executor {
	if tx == nil {
		return nil
	}
	return pgxExecutor{tx}
}

var _ idemdriver.Tx[pgx.Tx] = pgxTx{}

type pgxTx struct{ pgxExecutor }

func (t pgxTx) Tx() pgx.Tx                         { return t.tx }
func (t pgxTx) Commit(ctx context.Context) error   { return t.tx.Commit(ctx) }
func (t pgxTx) Rollback(ctx context.Context) error { return t.tx.Rollback(ctx) }
