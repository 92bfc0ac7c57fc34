package main

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
)

// The xp-pipe-* experiment measures a pgx-only claim: the plain INSERT ...
// ON CONFLICT DO NOTHING and a read of the key sent as one pipelined batch
// (one round trip, two statements), the read telling a claim by its owner
// token, in place of the claim-or-read CTE. Measured: no faster for a first
// call (docs/performance.md).
type pipeDialect struct{ idemdriver.Dialect }

const pipeMarker = "-- pipelined claim"

func (d pipeDialect) Statements(t idemdriver.Table) idemdriver.Statements {
	s := d.Dialect.Statements(t)
	s.ClaimOrRead = pipeMarker + "\n" + s.Claim + "\n" + s.Read
	s.ClaimOrReadCompleted = ""
	return s
}

type captureDialect struct {
	pipeDialect
	st *idemdriver.Statements
}

func (d captureDialect) Statements(t idemdriver.Table) idemdriver.Statements {
	*d.st = d.pipeDialect.Dialect.Statements(t)
	return d.pipeDialect.Statements(t)
}

type pipeExec struct {
	tx    pgx.Tx
	claim string
	read  string
}

func (e pipeExec) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := e.tx.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}

type pipeRow struct {
	br pgx.BatchResults
	r  pgx.Row
}

func (r pipeRow) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

func (e pipeExec) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	if len(q) < len(pipeMarker) || q[:len(pipeMarker)] != pipeMarker {
		return e.tx.QueryRow(ctx, q, args...)
	}
	// args: key, fingerprint, owner, ttl, elapsed
	b := &pgx.Batch{}
	b.Queue(e.claim, args[0], args[1], args[2], args[3])
	b.Queue(`SELECT owner = $3, `+e.read, args[4], args[0], args[2])
	br := e.tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return errRow{err}
	}
	return pipeRow{br: br, r: br.QueryRow()}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func pipeGuard(ctx context.Context, b *backend) (guardFunc, error) {
	var st idemdriver.Statements
	capture := captureDialect{pipeDialect{idempostgres.Dialect}, &st}
	var read string
	s, err := idemsql.New[pgx.Tx](xpDriver[pgx.Tx]{Driver: idempostgres.New(b.pool), dia: capture,
		bind: func(tx pgx.Tx) idemdriver.Executor { return pipeExec{tx: tx, claim: st.Claim, read: read} }},
		idemsql.Options{Table: b.store.Table().Name})
	if err != nil {
		return nil, err
	}
	read = st.Read[len("SELECT "):]
	return func(b *backend, ctx context.Context, t txn, k string, req []byte) (charge, bool, error) {
		res, err := idemsql.Do(ctx, s, t.(*pgxTxn).tx, k, func(ctx context.Context) (charge, error) {
			return b.businessInsert(ctx, t, k)
		}, idemsql.Options{Fingerprint: req})
		return res.Value, res.Replayed, err
	}, nil
}

func xpPipeFirst(ctx context.Context, b *backend, runID string) (op, error) {
	g, err := pipeGuard(ctx, b)
	if err != nil {
		return nil, err
	}
	return firstOp("pf", g)(ctx, b, runID)
}

func xpPipeReplay(ctx context.Context, b *backend, runID string) (op, error) {
	g, err := pipeGuard(ctx, b)
	if err != nil {
		return nil, err
	}
	return replayOp("pr", g)(ctx, b, runID)
}

func init() {
	variants = append(variants,
		variant{name: "xp-pipe-first", peer: "hand-first", desc: "experiment (pgx): claim INSERT and read pipelined in one round trip", make: xpPipeFirst, paths: []string{"pgx"}},
		variant{name: "xp-pipe-replay", peer: "hand-replay", desc: "experiment (pgx): replay by claim INSERT and read pipelined", make: xpPipeReplay, paths: []string{"pgx"}})
}
