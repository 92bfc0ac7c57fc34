package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idemsql"
)

// charge is what the guarded function returns and what every guard stores.
type charge struct {
	ID     int64  `json:"id"`
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

// request is the body of the request that a key stands for: what a guard
// fingerprints. The same key always has the same body, so replays match.
func request(k string) []byte {
	return []byte(`{"order":"` + k + `","amount":4200}`)
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

// businessInsert is the guarded effect: one INSERT that returns the new
// row's id.
func (b *backend) businessInsert(ctx context.Context, t txn, k string) (charge, error) {
	c := charge{Ref: k, Amount: 4200}
	id, err := t.InsertID(ctx, b.q.business, k, c.Amount)
	c.ID = id
	return c, err
}

// handGuard is the hand-written claim-first guard: claim, storing the
// request's SHA-256; if new, run the effect and store the result; if taken,
// read the status and the stored result and decode it.
func (b *backend) handGuard(ctx context.Context, t txn, k string, req []byte) (charge, bool, error) {
	fp := sha256.Sum256(req)
	n, err := t.Exec(ctx, b.q.handClaim, k, fp[:])
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

// idemGuard is the path most users take: idemsql.Do in a transaction they
// began themselves, with the request body as the fingerprint.
func (b *backend) idemGuard(ctx context.Context, t txn, k string, req []byte) (charge, bool, error) {
	res, err := idemDo(ctx, t, k, func(ctx context.Context) (charge, error) {
		return b.businessInsert(ctx, t, k)
	}, idemsql.Options{Fingerprint: req})
	return res.Value, res.Replayed, err
}

// idemVoidGuard is idemGuard for an effect with nothing to return: fn
// returns struct{}, so the row is stored completed with the claim and no
// result UPDATE runs (not on MySQL).
func (b *backend) idemVoidGuard(ctx context.Context, t txn, k string, req []byte) (charge, bool, error) {
	res, err := idemDo(ctx, t, k, func(ctx context.Context) (struct{}, error) {
		_, err := b.businessInsert(ctx, t, k)
		return struct{}{}, err
	}, idemsql.Options{Fingerprint: req})
	return charge{}, res.Replayed, err
}

type guardFunc func(b *backend, ctx context.Context, t txn, k string, req []byte) (charge, bool, error)

var (
	handG guardFunc = (*backend).handGuard
	idemG guardFunc = (*backend).idemGuard
	voidG guardFunc = (*backend).idemVoidGuard
)

func firstOp(prefix string, g guardFunc) func(context.Context, *backend, string) (op, error) {
	return func(_ context.Context, b *backend, runID string) (op, error) {
		return func(ctx context.Context, seq uint64) error {
			k := key(prefix, runID, seq)
			req := request(k)
			return b.inTx(ctx, func(t txn) error {
				_, replayed, err := g(b, ctx, t, k, req)
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
			if err := b.inTx(ctx, func(t txn) error { _, _, err := g(b, ctx, t, k, request(k)); return err }); err != nil {
				return nil, err
			}
		}
		return func(ctx context.Context, seq uint64) error {
			k := keys[seq%replayKeys]
			req := request(k)
			return b.inTx(ctx, func(t txn) error {
				_, replayed, err := g(b, ctx, t, k, req)
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
			req := request(k)
			return b.inTx(ctx, func(t txn) error {
				_, replayed, err := g(b, ctx, t, k, req)
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
		fp := sha256.Sum256(request(k))
		return b.inTx(ctx, func(t txn) error {
			if _, err := t.Exec(ctx, b.q.handClaim, k, fp[:]); err != nil {
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
		if err := b.inTx(ctx, func(t txn) error { _, _, err := b.handGuard(ctx, t, k, request(k)); return err }); err != nil {
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

// The idem-* variants call Do in a transaction the caller began, with the
// request body as the fingerprint ([]byte): the path most users take.
var variants = []variant{
	{name: "bare", peer: "hand-first", desc: "BEGIN; INSERT business RETURNING id (LastInsertId on MySQL, SQLite); COMMIT", make: bareOp},
	{name: "hand-first", peer: "hand-first", desc: "hand-written guard, new key: claim with fingerprint; business; UPDATE result", make: firstOp("hf", handG)},
	{name: "idem-first", peer: "hand-first", desc: "idemsql.Do in the caller's transaction, []byte fingerprint, new key", make: firstOp("if", idemG)},
	{name: "idem-first-void", peer: "hand-first", desc: "idemsql.Do, new key, fn returns struct{}: no result UPDATE (except MySQL)", make: firstOp("iv", voidG)},
	{name: "run-first", peer: "hand-first", desc: "idemsql.Run (the library begins and commits), []byte fingerprint, new key", make: runFirst},
	{name: "run-replay", peer: "hand-replay", desc: "idemsql.Run, []byte fingerprint, completed key", make: runReplay},
	{name: "http-plain", peer: "http-plain", desc: "POST handler: BEGIN; business INSERT; COMMIT; JSON response (no middleware)", make: httpPlain},
	{name: "http-idem", peer: "http-plain", desc: "the same handler behind idemhttp.New (Idempotency-Key, new key)", make: httpIdem},
	{name: "hand-replay", peer: "hand-replay", desc: "hand-written guard, completed key: claim (conflict); SELECT status, result", make: replayOp("hr", handG)},
	{name: "idem-replay", peer: "hand-replay", desc: "idemsql.Do in the caller's transaction, []byte fingerprint, completed key", make: replayOp("ir", idemG)},
	{name: "hand-storm", peer: "hand-storm", desc: "hand-written guard, all clients on 4 keys (1 run + 3 replays per key)", make: stormOp("hs", handG)},
	{name: "idem-storm", peer: "hand-storm", desc: "idemsql.Do, all clients on 4 keys (1 run + 3 replays per key)", make: stormOp("ix", idemG)},
	{name: "xp-noupdate", peer: "hand-first", desc: "experiment: hand guard without the result UPDATE", make: xpNoUpdate},
	{name: "xp-readfirst", peer: "hand-replay", desc: "experiment: replay by one SELECT, no claim INSERT", make: xpReadFirst},
}

// run calls idemsql.Run with the path's own store and transaction type.
func (b *backend) run(ctx context.Context, k string) (idemsql.Result[charge], error) {
	fp := idemsql.Options{Fingerprint: request(k)}
	if b.pool != nil {
		return idemsql.Run(ctx, b.pgxStore, k, func(ctx context.Context, tx pgx.Tx) (charge, error) {
			return b.businessInsert(ctx, &pgxTxn{tx: tx, b: b}, k)
		}, fp)
	}
	return idemsql.Run(ctx, b.store, k, func(ctx context.Context, tx *sql.Tx) (charge, error) {
		return b.businessInsert(ctx, &sqlTxn{tx: tx, b: b, returning: b.dialect == "postgres"}, k)
	}, fp)
}

// runFirst lets the library own the transaction: idemsql.Run begins, calls
// Do, commits, and retries on its own.
func runFirst(_ context.Context, b *backend, runID string) (op, error) {
	return func(ctx context.Context, seq uint64) error {
		k := key("rf", runID, seq)
		res, err := b.run(ctx, k)
		if err == nil && res.Replayed {
			err = fmt.Errorf("run-first: fresh key %q replayed", k)
		}
		return err
	}, nil
}

// runReplay replays completed keys through idemsql.Run.
func runReplay(ctx context.Context, b *backend, runID string) (op, error) {
	keys := make([]string, replayKeys)
	for i := range keys {
		keys[i] = key("rr", runID, uint64(i))
		if _, err := b.run(ctx, keys[i]); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context, seq uint64) error {
		k := keys[seq%replayKeys]
		res, err := b.run(ctx, k)
		if err == nil && !res.Replayed {
			err = fmt.Errorf("run-replay: completed key %q ran again", k)
		}
		return err
	}, nil
}

// The HTTP variants serve a POST in this process (no HTTP network: the
// database's is the one measured), one handler with and without the
// middleware.

// serve runs one request with key k through h, again after a 409 (in
// flight), as a client would: counted as a retry.
func serve(h http.Handler, k string) error {
	for attempt := 0; ; attempt++ {
		req := httptest.NewRequest(http.MethodPost, "/charges", strings.NewReader(string(request(k))))
		req.Header.Set("Idempotency-Key", k)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusConflict && attempt < 50 {
			stats.retries.Add(1)
			continue
		}
		if rec.Code != http.StatusCreated {
			return fmt.Errorf("POST %s: %d %s", k, rec.Code, rec.Body.String())
		}
		return nil
	}
}

// respond writes the handler's answer.
func respond(w http.ResponseWriter, c charge) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(c)
}

func httpPlain(_ context.Context, b *backend, runID string) (op, error) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := r.Header.Get("Idempotency-Key")
		var c charge
		if err := b.inTx(r.Context(), func(t txn) (err error) {
			c, err = b.businessInsert(r.Context(), t, k)
			return err
		}); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		respond(w, c)
	})
	return func(ctx context.Context, seq uint64) error { return serve(h, key("hp", runID, seq)) }, nil
}

func httpIdem(_ context.Context, b *backend, runID string) (op, error) {
	cfg := idemhttp.Config{Principal: func(*http.Request) (string, error) { return "bench", nil }}
	var guard func(http.Handler) http.Handler
	var err error
	var h http.Handler
	if b.pool != nil {
		guard, err = idemhttp.New(b.pgxStore, cfg)
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tx := idemhttp.MustTx[pgx.Tx](r.Context())
			c, err := b.businessInsert(r.Context(), &pgxTxn{tx: tx, b: b}, r.Header.Get("Idempotency-Key"))
			if err != nil {
				idemhttp.Abort(r.Context(), err)
				return
			}
			respond(w, c)
		})
	} else {
		guard, err = idemhttp.New(b.store, cfg)
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tx := idemhttp.MustTx[*sql.Tx](r.Context())
			c, err := b.businessInsert(r.Context(), &sqlTxn{tx: tx, b: b, returning: b.dialect == "postgres"}, r.Header.Get("Idempotency-Key"))
			if err != nil {
				idemhttp.Abort(r.Context(), err)
				return
			}
			respond(w, c)
		})
	}
	if err != nil {
		return nil, err
	}
	h = guard(h)
	return func(ctx context.Context, seq uint64) error { return serve(h, key("hi", runID, seq)) }, nil
}
