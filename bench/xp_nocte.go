package main

import (
	"context"
	"database/sql"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/jackc/pgx/v5"
)

// The xp-nocte-* experiment measures PostgreSQL without ClaimOrRead: the
// claim is a plain INSERT ... ON CONFLICT DO NOTHING and a duplicate is read
// by a second statement, as the hand-written guard does. It tells what the
// one-statement claim-or-read costs a first call and saves a replay.
type noCTE struct{ idemdriver.Dialect }

func (d noCTE) Statements(t idemdriver.Table) idemdriver.Statements {
	s := d.Dialect.Statements(t)
	s.ClaimOrRead, s.ClaimOrReadCompleted = "", ""
	return s
}

func noCTEGuard(ctx context.Context, b *backend) (guardFunc, error) {
	table := idemsql.Options{Table: b.store.Table().Name}
	sqlS, err := idemsql.New[*sql.Tx](xpDriver[*sql.Tx]{Driver: idempostgres.NewSQL(b.db), dia: noCTE{idempostgres.Dialect}}, table)
	if err != nil {
		return nil, err
	}
	var pgxS *idemsql.Store[pgx.Tx]
	if b.pool != nil {
		if pgxS, err = idemsql.New[pgx.Tx](xpDriver[pgx.Tx]{Driver: idempostgres.New(b.pool), dia: noCTE{idempostgres.Dialect}}, table); err != nil {
			return nil, err
		}
	}
	return func(b *backend, ctx context.Context, t txn, k string, req []byte) (charge, bool, error) {
		fn := func(ctx context.Context) (charge, error) { return b.businessInsert(ctx, t, k) }
		var res idemsql.Result[charge]
		var err error
		switch t := t.(type) {
		case *pgxTxn:
			res, err = idemsql.Do(ctx, pgxS, t.tx, k, fn, idemsql.Options{Fingerprint: req})
		case *sqlTxn:
			res, err = idemsql.Do(ctx, sqlS, t.tx, k, fn, idemsql.Options{Fingerprint: req})
		}
		return res.Value, res.Replayed, err
	}, nil
}

// xpDriver is an experiment's driver: another's with the experiment's
// dialect, and, if bind is set, its own binding of a transaction.
type xpDriver[X any] struct {
	idemdriver.Driver[X]
	dia  idemdriver.Dialect
	bind func(X) idemdriver.Executor
}

func (d xpDriver[X]) Dialect() idemdriver.Dialect { return d.dia }

func (d xpDriver[X]) Bind(tx X) idemdriver.Executor {
	if d.bind != nil {
		return d.bind(tx)
	}
	return d.Driver.Bind(tx)
}

func xpNoCTEFirst(ctx context.Context, b *backend, runID string) (op, error) {
	g, err := noCTEGuard(ctx, b)
	if err != nil {
		return nil, err
	}
	return firstOp("xf", g)(ctx, b, runID)
}

func xpNoCTEReplay(ctx context.Context, b *backend, runID string) (op, error) {
	g, err := noCTEGuard(ctx, b)
	if err != nil {
		return nil, err
	}
	return replayOp("xr", g)(ctx, b, runID)
}

func init() {
	variants = append(variants,
		variant{name: "xp-nocte-first", peer: "hand-first", desc: "experiment (PostgreSQL): idem-first with a plain claim INSERT instead of the claim-or-read CTE", make: xpNoCTEFirst, paths: []string{"pgx", "pgsql"}},
		variant{name: "xp-nocte-replay", peer: "hand-replay", desc: "experiment (PostgreSQL): idem-replay by claim INSERT, then SELECT", make: xpNoCTEReplay, paths: []string{"pgx", "pgsql"}})
}
