package idempostgres_test

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
)

type charge struct {
	ID int64 `json:"id"`
}

// Do in a pgx transaction of the caller's (this example needs a PostgreSQL
// server, so it is compiled, not run).
func ExampleNew() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/app")
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	store, err := idemsql.New(idempostgres.New(pool))
	if err != nil {
		panic(err)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		panic(err)
	}
	defer tx.Rollback(ctx)
	res, err := idemsql.Do(ctx, store, tx, "charge:order-1", func(ctx context.Context) (charge, error) {
		var c charge
		err := tx.QueryRow(ctx, `INSERT INTO charges (order_id) VALUES ($1) RETURNING id`, 1).Scan(&c.ID)
		return c, err
	})
	if err != nil {
		panic(err) // errors.Is(err, idemsql.ErrRetryable): run the transaction again
	}
	if err := tx.Commit(ctx); err != nil {
		panic(store.CommitError(ctx, err))
	}
	_ = res.Replayed
}

// Run owns the transaction: fn gets a pgx.Tx.
func ExampleNew_run() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/app")
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	store, err := idemsql.New(idempostgres.New(pool))
	if err != nil {
		panic(err)
	}
	res, err := idemsql.Run(ctx, store, "charge:order-1", func(ctx context.Context, tx pgx.Tx) (charge, error) {
		var c charge
		err := tx.QueryRow(ctx, `INSERT INTO charges (order_id) VALUES ($1) RETURNING id`, 1).Scan(&c.ID)
		return c, err
	})
	_, _ = res, err
}
