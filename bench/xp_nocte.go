package main

import (
	"context"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
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
	s, err := idemsql.NewStore(noCTE{idempostgres.Dialect}, idemsql.WithTable(b.store.Table()))
	if err != nil {
		return nil, err
	}
	ps := &idempostgres.Store{Store: s}
	return func(b *backend, ctx context.Context, t txn, k string, req []byte) (charge, bool, error) {
		var tx idemsql.Tx
		switch t := t.(type) {
		case *pgxTxn:
			tx = ps.Pgx(t.tx)
		case *sqlTxn:
			tx = ps.SQL(t.tx)
		}
		res, err := idemsql.Do(ctx, tx, k, func(ctx context.Context) (charge, error) {
			return b.businessInsert(ctx, t, k)
		}, idemsql.WithFingerprint(req))
		return res.Value, res.Replayed, err
	}, nil
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
