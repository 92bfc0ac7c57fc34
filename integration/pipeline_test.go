package integration

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
)

// Run on a pgx pool sends BEGIN with the claim and the result's write with
// COMMIT (idempostgres's pipelined transactions). The COMMIT leaves before
// the write is known to have found the claim: these tests check that a
// write that finds none rolls fn's writes back, that a COMMIT that fails is
// classed as one, and what a call costs on the wire.
func TestPipelinedRun(t *testing.T) {
	for _, c := range []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"ClaimTakenWhileFnRan", testPipelinedClaimTaken},
		{"ClaimChangedInTheTransaction", testPipelinedClaimChanged},
		{"CommitRefused", testPipelinedCommitRefused},
		{"ConnectionLostAtCommit", testPipelinedCommitUnknown},
		{"RoundTripsAndConnections", testPipelinedRoundTrips},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, setupPgx(t)) })
	}
}

// The claim is lost while fn runs: fn's session leaves the transaction
// that holds it (ROLLBACK, then a new BEGIN, as a library fn calls might
// do), and another caller claims the key and commits. fn then writes and
// returns. Its result's write finds no claim of its own, so the COMMIT
// already sent behind it must not commit fn's write.
func testPipelinedClaimTaken(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const key = "pipelined-claim-taken"
	var runs atomic.Int64
	thief := func(ctx context.Context, tx pgx.Tx) (invoice, error) {
		_, err := tx.Exec(ctx, "INSERT INTO "+e.biz+" (idem_key, amount) VALUES ($1, 1)", key)
		return invoice{Key: key, Amount: 1, Run: 100}, err
	}
	fn := func(ctx context.Context, tx pgx.Tx) (invoice, error) {
		n := runs.Add(1)
		if n == 1 {
			for _, q := range []string{"ROLLBACK", "BEGIN"} {
				if _, err := tx.Exec(ctx, q); err != nil {
					return invoice{}, err
				}
			}
			if res, err := idemsql.Run(ctx, e.pgxStore, key, thief); err != nil || res.Replayed {
				return invoice{}, errors.Join(errors.New("the other caller did not take the key"), err)
			}
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+e.biz+" (idem_key, amount) VALUES ($1, 2)", key)
		return invoice{Key: key, Amount: 2, Run: n}, err
	}
	_, err := idemsql.Run(ctx, e.pgxStore, key, fn, idemsql.Options{MaxAttempts: 1})
	var ie *idemsql.Error
	if !errors.Is(err, idemsql.ErrRetryable) || !errors.As(err, &ie) || ie.Op != "complete" {
		t.Fatalf("err = %v, want ErrRetryable from complete (the claim is gone)", err)
	}
	oneClass(t, err)
	if n := e.queryInt("SELECT COUNT(*) FROM "+e.biz+" WHERE idem_key = ? AND amount = 2", key); n != 0 {
		t.Fatalf("fn's write committed without the claim's result (%d rows)", n)
	}
	// Run again, as Run does by itself without MaxAttempts: the winner's
	// outcome replays, and fn does not run.
	res, err := idemsql.Run(ctx, e.pgxStore, key, fn)
	if err != nil || !res.Replayed || res.Value.Run != 100 {
		t.Fatalf("again: %+v, %v; want the other caller's result replayed", res, err)
	}
	if n := e.bizRows(key); n != 1 || runs.Load() != 1 {
		t.Fatalf("%d business rows and %d runs of fn, want the other caller's row alone and one run", n, runs.Load())
	}
}

// fn changes the claim's row in its own transaction (its owner, as a
// takeover would): the result's write finds no claim, the transaction
// fails, and nothing of it commits, the change included.
func testPipelinedClaimChanged(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const key = "pipelined-claim-changed"
	fn := func(ctx context.Context, tx pgx.Tx) (invoice, error) {
		if _, err := tx.Exec(ctx, "UPDATE "+e.table+" SET owner = 'someone else', attempt = attempt + 1 WHERE idem_key = $1", key); err != nil {
			return invoice{}, err
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+e.biz+" (idem_key, amount) VALUES ($1, 1)", key)
		return invoice{Key: key, Amount: 1}, err
	}
	_, err := idemsql.Run(ctx, e.pgxStore, key, fn, idemsql.Options{MaxAttempts: 1})
	if !errors.Is(err, idemsql.ErrRetryable) {
		t.Fatalf("err = %v, want ErrRetryable (the claim is gone)", err)
	}
	oneClass(t, err)
	if n, m := e.bizRows(key), e.idemRows(key); n != 0 || m != 0 {
		t.Fatalf("%d business rows, %d idempotency rows committed; want none", n, m)
	}
}

// A COMMIT the server refuses (a deferred unique constraint) is the
// COMMIT's error, not an unknown outcome: nothing committed, the key stays
// free, and the error has no class of the library's.
func testPipelinedCommitRefused(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const key = "pipelined-commit-refused"
	e.exec(t, "CREATE TABLE "+e.biz+"_u (v int, CONSTRAINT "+e.biz+"_uv UNIQUE (v) DEFERRABLE INITIALLY DEFERRED)")
	t.Cleanup(func() { e.exec(t, "DROP TABLE "+e.biz+"_u") })
	var runs atomic.Int64
	fn := func(ctx context.Context, tx pgx.Tx) (invoice, error) {
		n := runs.Add(1)
		if _, err := tx.Exec(ctx, "INSERT INTO "+e.biz+" (idem_key, amount) VALUES ($1, $2)", key, n); err != nil {
			return invoice{}, err
		}
		if n == 1 { // found only at COMMIT
			if _, err := tx.Exec(ctx, "INSERT INTO "+e.biz+"_u VALUES (1), (1)"); err != nil {
				return invoice{}, err
			}
		}
		return invoice{Key: key, Amount: n, Run: n}, nil
	}
	_, err := idemsql.Run(ctx, e.pgxStore, key, fn)
	var ie *idemsql.Error
	if err == nil || !errors.As(err, &ie) || ie.Op != "commit" || errors.Is(err, idemsql.ErrCommitUnknown) || errors.Is(err, idemsql.ErrRetryable) {
		t.Fatalf("err = %v, want the COMMIT's error, with no class", err)
	}
	oneClass(t, err)
	if n := runs.Load(); n != 1 {
		t.Fatalf("fn ran %d times, want once", n)
	}
	if n, m := e.bizRows(key), e.idemRows(key); n != 0 || m != 0 {
		t.Fatalf("%d business rows, %d idempotency rows committed; want none", n, m)
	}
	res, err := idemsql.Run(ctx, e.pgxStore, key, fn)
	if err != nil || res.Replayed || res.Value.Run != 2 {
		t.Fatalf("again: %+v, %v; want fn to run", res, err)
	}
}

// The server closes the connection during the pipelined COMMIT (a deferred
// trigger terminates its own backend): nobody can tell whether it
// committed, so Run says ErrCommitUnknown and does not run fn again.
func testPipelinedCommitUnknown(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const key = "pipelined-commit-unknown"
	k := e.biz + "_kill"
	e.exec(t, "CREATE TABLE "+k+" (v int)")
	e.exec(t, "CREATE FUNCTION "+k+"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$")
	e.exec(t, "CREATE CONSTRAINT TRIGGER "+k+" AFTER INSERT ON "+k+" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "+k+"()")
	t.Cleanup(func() { e.exec(t, "DROP TABLE "+k); e.exec(t, "DROP FUNCTION "+k+"()") })
	var runs atomic.Int64
	fn := func(ctx context.Context, tx pgx.Tx) (invoice, error) {
		n := runs.Add(1)
		if _, err := tx.Exec(ctx, "INSERT INTO "+e.biz+" (idem_key, amount) VALUES ($1, $2)", key, n); err != nil {
			return invoice{}, err
		}
		if n == 1 {
			if _, err := tx.Exec(ctx, "INSERT INTO "+k+" VALUES (1)"); err != nil {
				return invoice{}, err
			}
		}
		return invoice{Key: key, Amount: n, Run: n}, nil
	}
	_, err := idemsql.Run(ctx, e.pgxStore, key, fn)
	if !errors.Is(err, idemsql.ErrCommitUnknown) {
		t.Fatalf("err = %v, want ErrCommitUnknown", err)
	}
	oneClass(t, err)
	if n := runs.Load(); n != 1 {
		t.Fatalf("fn ran %d times: Run retried a COMMIT of unknown outcome", n)
	}
	res, err := idemsql.Run(ctx, e.pgxStore, key, fn)
	if err != nil || res.Replayed || res.Value.Run != 2 {
		t.Fatalf("again: %+v, %v; want fn to run (the COMMIT had not gone through)", res, err)
	}
	if n := e.bizRows(key); n != 1 {
		t.Fatalf("%d business rows, want 1", n)
	}
}

// A first call costs three round trips (BEGIN and the claim; fn's INSERT;
// the result and COMMIT), a replay two (BEGIN and the claim; COMMIT), and
// the pool's one connection is reused throughout.
func testPipelinedRoundTrips(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(postgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int64
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		return writeCounter{c, &writes}, err
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store, err := idemsql.New(idempostgres.New(pool), e.opts...)
	if err != nil {
		t.Fatal(err)
	}
	fn := func(ctx context.Context, tx pgx.Tx) (invoice, error) {
		_, err := tx.Exec(ctx, "INSERT INTO "+e.biz+" (idem_key, amount) VALUES ('k', 1)")
		return invoice{Amount: 1}, err
	}
	call := func(key string, replay bool) int64 {
		t.Helper()
		before := writes.Load()
		res, err := idemsql.Run(ctx, store, key, fn)
		if err != nil || res.Replayed != replay {
			t.Fatalf("%s: %+v, %v", key, res, err)
		}
		return writes.Load() - before
	}
	call("warm", false) // prepares the statements on the connection
	call("warm", true)
	if n := call("first", false); n != 3 {
		t.Errorf("a first call wrote to the socket %d times, want 3", n)
	}
	if n := call("first", true); n != 2 {
		t.Errorf("a replay wrote to the socket %d times, want 2", n)
	}
	if n := pool.Stat().NewConnsCount(); n != 1 {
		t.Errorf("the pool opened %d connections, want 1", n)
	}
	if n := pool.Stat().AcquiredConns(); n != 0 {
		t.Errorf("%d connections still acquired after the calls", n)
	}
}

type writeCounter struct {
	net.Conn
	n *atomic.Int64
}

func (c writeCounter) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}
