package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/idemsql/idemsql/idemsql"
)

// charge is what the guarded function returns and what every guard stores.
type charge struct {
	Ref    string `json:"ref"`
	Amount int64  `json:"amount"`
}

// op runs one whole transaction; seq numbers the calls of one variant.
type op func(ctx context.Context, seq uint64) error

type variant struct {
	name string
	peer string // the hand-written variant it is compared with ("" for none)
	desc string
	// make returns the op for a run; setup (replay keys) happens here.
	make  func(ctx context.Context, b *backend, runID string) (op, error)
	paths []string // run on these paths only, when set
}

// Counters shared by all variants of a cell, for the notes.
type counters struct {
	retries, replays atomic.Int64
}

var stats counters

// mix spreads sequence numbers over the key space, as random client keys
// would be, for every variant alike.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func key(prefix, runID string, seq uint64) string {
	return prefix + ":" + runID + ":" + strconv.FormatUint(mix(seq), 16)
}

// inTx runs fn in a transaction and commits, running it all again when the
// database asks for a retry (deadlock, serialization failure, busy).
func (b *backend) inTx(ctx context.Context, fn func(t txn) error) error {
	for attempt := 0; ; attempt++ {
		t, err := b.begin(ctx)
		if err != nil {
			if b.retryable(err) && attempt < 50 {
				stats.retries.Add(1)
				continue
			}
			return err
		}
		err = fn(t)
		if err == nil {
			err = t.Commit(ctx)
		}
		if err == nil {
			return nil
		}
		_ = t.Rollback(ctx)
		if b.retryable(err) && attempt < 50 {
			stats.retries.Add(1)
			continue
		}
		return err
	}
}

// business is the guarded effect: one INSERT.
func (b *backend) businessInsert(ctx context.Context, t txn, k string) (charge, error) {
	c := charge{Ref: k, Amount: 4200}
	_, err := t.Exec(ctx, b.q.business, k, c.Amount)
	return c, err
}

// handGuard is the hand-written claim-first guard: claim; if new, run the
// effect and store the result; if taken, read and decode the stored result.
func (b *backend) handGuard(ctx context.Context, t txn, k string) (charge, bool, error) {
	n, err := t.Exec(ctx, b.q.handClaim, k)
	if err != nil {
		if !duplicate(err) {
			return charge{}, false, err
		}
		n = 0
	}
	if n == 0 {
		var status string
		var result []byte
		if err := t.QueryRow(ctx, b.q.handRead, k).Scan(&status, &result); err != nil {
			return charge{}, false, err
		}
		if status != idemsql.StatusCompleted {
			return charge{}, false, fmt.Errorf("hand guard: key %q is %s", k, status)
		}
		var c charge
		err := json.Unmarshal(result, &c)
		return c, true, err
	}
	c, err := b.businessInsert(ctx, t, k)
	if err != nil {
		return c, false, err
	}
	enc, err := json.Marshal(c)
	if err != nil {
		return c, false, err
	}
	_, err = t.Exec(ctx, b.q.handComplete, string(enc), k)
	return c, false, err
}

func (b *backend) idemGuard(ctx context.Context, t txn, k string) (charge, bool, error) {
	res, err := idemsql.Do(ctx, t.Idem(), k, func(ctx context.Context) (charge, error) {
		return b.businessInsert(ctx, t, k)
	})
	return res.Value, res.Replayed, err
}

// idemVoidGuard is idemGuard for an effect with nothing to return: fn
// returns struct{}, so the row is stored completed with the claim and no
// result UPDATE runs.
func (b *backend) idemVoidGuard(ctx context.Context, t txn, k string) (charge, bool, error) {
	res, err := idemsql.Do(ctx, t.Idem(), k, func(ctx context.Context) (struct{}, error) {
		_, err := b.businessInsert(ctx, t, k)
		return struct{}{}, err
	})
	return charge{}, res.Replayed, err
}

type guardFunc func(b *backend, ctx context.Context, t txn, k string) (charge, bool, error)

var (
	handG guardFunc = (*backend).handGuard
	idemG guardFunc = (*backend).idemGuard
	voidG guardFunc = (*backend).idemVoidGuard
)

func firstOp(prefix string, g guardFunc) func(context.Context, *backend, string) (op, error) {
	return func(_ context.Context, b *backend, runID string) (op, error) {
		return func(ctx context.Context, seq uint64) error {
			k := key(prefix, runID, seq)
			return b.inTx(ctx, func(t txn) error {
				_, replayed, err := g(b, ctx, t, k)
				if err == nil && replayed {
					err = fmt.Errorf("%s: fresh key %q replayed", prefix, k)
				}
				return err
			})
		}, nil
	}
}

const replayKeys = 256

// replayOp completes replayKeys keys once, then every op replays one of them.
func replayOp(prefix string, g guardFunc) func(context.Context, *backend, string) (op, error) {
	return func(ctx context.Context, b *backend, runID string) (op, error) {
		keys := make([]string, replayKeys)
		for i := range keys {
			keys[i] = key(prefix, runID, uint64(i))
			k := keys[i]
			if err := b.inTx(ctx, func(t txn) error { _, _, err := g(b, ctx, t, k); return err }); err != nil {
				return nil, err
			}
		}
		return func(ctx context.Context, seq uint64) error {
			k := keys[seq%replayKeys]
			return b.inTx(ctx, func(t txn) error {
				_, replayed, err := g(b, ctx, t, k)
				if err == nil && !replayed {
					err = fmt.Errorf("%s: completed key %q ran again", prefix, k)
				}
				return err
			})
		}, nil
	}
}

// stormKeys keys are hammered at once; every stormCalls calls move all
// clients on to stormKeys new keys, so each key sees stormCalls/stormKeys
// calls: one runs, the others wait for it and replay.
const (
	stormKeys  = 4
	stormCalls = 16
)

func stormOp(prefix string, g guardFunc) func(context.Context, *backend, string) (op, error) {
	return func(_ context.Context, b *backend, runID string) (op, error) {
		return func(ctx context.Context, seq uint64) error {
			k := prefix + ":" + runID + ":" + strconv.FormatUint(seq/stormCalls, 10) + ":" + strconv.FormatUint(seq%stormKeys, 10)
			return b.inTx(ctx, func(t txn) error {
				_, replayed, err := g(b, ctx, t, k)
				if replayed {
					stats.replays.Add(1)
				}
				return err
			})
		}, nil
	}
}

func bareOp(_ context.Context, b *backend, runID string) (op, error) {
	return func(ctx context.Context, seq uint64) error {
		k := key("bare", runID, seq)
		return b.inTx(ctx, func(t txn) error {
			_, err := b.businessInsert(ctx, t, k)
			return err
		})
	}, nil
}

// Experiments: hand-written sketches of the optimisations the issue lists,
// to measure what each would buy before the core adopts it.

// xpNoUpdate is the claim-first guard without the result UPDATE: the upper
// bound of "no result write when there is nothing to store".
func xpNoUpdate(_ context.Context, b *backend, runID string) (op, error) {
	return func(ctx context.Context, seq uint64) error {
		k := key("xpn", runID, seq)
		return b.inTx(ctx, func(t txn) error {
			if _, err := t.Exec(ctx, b.q.handClaim, k); err != nil {
				return err
			}
			_, err := b.businessInsert(ctx, t, k)
			return err
		})
	}, nil
}

// xpReadFirst replays with one read and no claim INSERT: the replay path of
// a guard that reads before it claims.
func xpReadFirst(ctx context.Context, b *backend, runID string) (op, error) {
	keys := make([]string, replayKeys)
	for i := range keys {
		keys[i] = key("xpr", runID, uint64(i))
		k := keys[i]
		if err := b.inTx(ctx, func(t txn) error { _, _, err := b.handGuard(ctx, t, k); return err }); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context, seq uint64) error {
		k := keys[seq%replayKeys]
		return b.inTx(ctx, func(t txn) error {
			var status string
			var result []byte
			if err := t.QueryRow(ctx, b.q.handRead, k).Scan(&status, &result); err != nil {
				return err
			}
			var c charge
			return json.Unmarshal(result, &c)
		})
	}, nil
}

// xpPipelined is the pgx-only guard that owns its transaction: BEGIN + claim
// in one batch, the business INSERT, then result UPDATE + COMMIT in a second
// batch. Three round trips, like the bare transaction.
func xpPipelined(_ context.Context, b *backend, runID string) (op, error) {
	return func(ctx context.Context, seq uint64) error {
		k := key("xpp", runID, seq)
		conn, err := b.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		fail := func(err error) error {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
			return err
		}
		batch := &pgx.Batch{}
		batch.Queue("BEGIN")
		batch.Queue(b.q.handClaim, k)
		br := conn.SendBatch(ctx, batch)
		_, err = br.Exec()
		var tag int64
		if err == nil {
			var ct interface{ RowsAffected() int64 }
			ct, err = br.Exec()
			if err == nil {
				tag = ct.RowsAffected()
			}
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fail(err)
		}
		if tag != 1 {
			return fail(errors.New("pipelined: fresh key taken"))
		}
		c := charge{Ref: k, Amount: 4200}
		if _, err := conn.Exec(ctx, b.q.business, k, c.Amount); err != nil {
			return fail(err)
		}
		enc, _ := json.Marshal(c)
		batch = &pgx.Batch{}
		batch.Queue(b.q.handComplete, string(enc), k)
		batch.Queue("COMMIT")
		if err := conn.SendBatch(ctx, batch).Close(); err != nil {
			return fail(err)
		}
		return nil
	}, nil
}

var variants = []variant{
	{name: "bare", peer: "hand-first", desc: "BEGIN; INSERT business; COMMIT", make: bareOp},
	{name: "hand-first", peer: "hand-first", desc: "hand-written guard, new key: claim; business; UPDATE result", make: firstOp("hf", handG)},
	{name: "idem-first", peer: "hand-first", desc: "idemsql.Do, new key", make: firstOp("if", idemG)},
	{name: "idem-first-void", peer: "hand-first", desc: "idemsql.Do, new key, fn returns struct{}: no result UPDATE", make: firstOp("iv", voidG)},
	{name: "hand-replay", peer: "hand-replay", desc: "hand-written guard, completed key: claim (conflict); SELECT", make: replayOp("hr", handG)},
	{name: "idem-replay", peer: "hand-replay", desc: "idemsql.Do, completed key", make: replayOp("ir", idemG)},
	{name: "hand-storm", peer: "hand-storm", desc: "hand-written guard, all clients on 4 keys (1 run + 3 replays per key)", make: stormOp("hs", handG)},
	{name: "idem-storm", peer: "hand-storm", desc: "idemsql.Do, all clients on 4 keys (1 run + 3 replays per key)", make: stormOp("is", idemG)},
	{name: "xp-noupdate", peer: "hand-first", desc: "experiment: hand guard without the result UPDATE", make: xpNoUpdate},
	{name: "xp-readfirst", peer: "hand-replay", desc: "experiment: replay by one SELECT, no claim INSERT", make: xpReadFirst},
	{name: "xp-pipelined", peer: "hand-first", desc: "experiment (pgx): BEGIN+claim batch; business; UPDATE+COMMIT batch", make: xpPipelined, paths: []string{"pgx"}},
	{name: "run-first", peer: "hand-first", desc: "idemsql.Run (the library begins and commits), new key", make: runFirst},
	{name: "xp-prep-first", peer: "hand-first", desc: "experiment: idemsql.Do through an Executor that reuses prepared statements, new key", make: preparedFirst, paths: sqlPaths},
	{name: "xp-prep-replay", peer: "hand-replay", desc: "experiment: idemsql.Do through an Executor that reuses prepared statements, completed key", make: preparedReplay, paths: sqlPaths},
}

var sqlPaths = []string{"pgsql", "mariadb", "sqlite"}

// runFirst lets the library own the transaction: idemsql.Run begins, calls
// Do, commits, and retries on its own.
func runFirst(_ context.Context, b *backend, runID string) (op, error) {
	return func(ctx context.Context, seq uint64) error {
		k := key("rf", runID, seq)
		var err error
		var res idemsql.Result[charge]
		if b.pool != nil {
			res, err = idemsql.Run(ctx, b.pgStore.Pool(b.pool, pgx.TxOptions{}), k, func(ctx context.Context, tx pgx.Tx) (charge, error) {
				c := charge{Ref: k, Amount: 4200}
				_, err := tx.Exec(ctx, b.q.business, k, c.Amount)
				return c, err
			})
		} else {
			res, err = idemsql.Run(ctx, b.store.DB(b.db, nil), k, func(ctx context.Context, tx *sql.Tx) (charge, error) {
				c := charge{Ref: k, Amount: 4200}
				_, err := tx.ExecContext(ctx, b.q.business, k, c.Amount)
				return c, err
			})
		}
		if err == nil && res.Replayed {
			err = fmt.Errorf("run-first: fresh key %q replayed", k)
		}
		return err
	}, nil
}

// stmtCache prepares each statement once on the *sql.DB; Tx.StmtContext
// then reuses the statement already prepared on the transaction's
// connection instead of parsing the SQL again.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

// newStmtCache prepares the store's statements and the business INSERT up
// front: preparing on the *sql.DB while a transaction holds the only
// connection (SQLite) would wait forever.
func newStmtCache(ctx context.Context, b *backend) (*stmtCache, error) {
	c := &stmtCache{db: b.db, m: map[string]*sql.Stmt{}}
	st := b.store.Dialect().Statements(idemsql.Table{Name: b.store.Table()})
	for _, q := range []string{st.Claim, st.Read, st.Reclaim, st.Complete, st.Release, b.q.business} {
		s, err := b.db.PrepareContext(ctx, q)
		if err != nil {
			return nil, err
		}
		c.m[q] = s
	}
	return c, nil
}

func (c *stmtCache) get(tx *sql.Tx, ctx context.Context, q string) (*sql.Stmt, error) {
	c.mu.Lock()
	st, ok := c.m[q]
	c.mu.Unlock()
	if ok {
		return tx.StmtContext(ctx, st), nil
	}
	return tx.PrepareContext(ctx, q)
}

// preparedExec is an idemsql.Executor over a *sql.Tx with cached statements.
type preparedExec struct {
	tx *sql.Tx
	c  *stmtCache
}

func (e preparedExec) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	st, err := e.c.get(e.tx, ctx, q)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(ctx, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func (e preparedExec) QueryRow(ctx context.Context, q string, args ...any) idemsql.Row {
	st, err := e.c.get(e.tx, ctx, q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

func preparedGuard(c *stmtCache) guardFunc {
	return func(b *backend, ctx context.Context, t txn, k string) (charge, bool, error) {
		tx := t.(*sqlTxn).tx
		ex := preparedExec{tx: tx, c: c}
		res, err := idemsql.Do(ctx, b.store.Bind(ex), k, func(ctx context.Context) (charge, error) {
			c := charge{Ref: k, Amount: 4200}
			_, err := ex.Exec(ctx, b.q.business, k, c.Amount)
			return c, err
		})
		return res.Value, res.Replayed, err
	}
}

func preparedFirst(ctx context.Context, b *backend, runID string) (op, error) {
	c, err := newStmtCache(ctx, b)
	if err != nil {
		return nil, err
	}
	return firstOp("pf", preparedGuard(c))(ctx, b, runID)
}

func preparedReplay(ctx context.Context, b *backend, runID string) (op, error) {
	c, err := newStmtCache(ctx, b)
	if err != nil {
		return nil, err
	}
	return replayOp("pr", preparedGuard(c))(ctx, b, runID)
}
