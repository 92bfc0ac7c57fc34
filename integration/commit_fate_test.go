package integration

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// TestCommitFate checks that a failed COMMIT is called ErrCommitUnknown
// only when its outcome is unknown: a COMMIT of a transaction that wrote
// nothing, or one the driver says it never sent, has a known outcome. The
// COMMITs are broken through the hooks of lease_hooks_test.go, on every
// backend.
func TestCommitFate(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range []leaseCase{
				{"ReplayWhoseCommitBroke", testReplayWhoseCommitBroke},
				{"ReadStepWhoseCommitBroke", testReadStepWhoseCommitBroke},
				{"BadConnAtCommitIsRetried", testBadConnAtCommitIsRetried},
			} {
				t.Run(c.name, func(t *testing.T) { c.run(t, newLeaseEnv(t, b)) })
			}
		})
	}
}

// breakCommit makes the COMMIT about to be sent on c fail as a COMMIT
// whose connection broke: the server kills the session, so the COMMIT goes
// out on a dead connection. SQLite has no connection to kill: the error
// returned in place of its COMMIT is one the library reads the same way.
func (e *leaseEnv) breakCommit(t *testing.T, c hookConn) error {
	if e.dialect == "sqlite" {
		return fmt.Errorf("injected: connection lost during COMMIT: %w", io.ErrUnexpectedEOF)
	}
	e.killAll(t, []int64{c.serverID()})
	return nil
}

// A Run that only replays a completed key wrote nothing: whether its COMMIT
// went through changes nothing, so a COMMIT that breaks is no reason to
// say "unknown". Run answers the replay (here by running the transaction
// again, which replays again), and fn does not run.
func testReplayWhoseCommitBroke(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var a armed
	var broken atomic.Int64
	ops := e.hookedOps(t, &hooks{commit: func(ctx context.Context, c hookConn) error {
		if !a.once() {
			return nil
		}
		broken.Add(1)
		return e.breakCommit(t, c)
	}})
	var runs atomic.Int64
	fn := func(context.Context) (receipt, error) {
		runs.Add(1)
		return receipt{By: "first"}, nil
	}
	first, err := ops.run(ctx, "replay-commit", fn)
	if err != nil || first.Replayed {
		t.Fatalf("first call: %+v, %v", first, err)
	}
	a.on.Store(true)
	res, err := ops.run(ctx, "replay-commit", fn)
	if err != nil || !res.Replayed || res.Value != first.Value {
		t.Fatalf("replay whose COMMIT broke: %+v, %v; want the replay of %+v", res, err, first.Value)
	}
	if broken.Load() != 1 {
		t.Fatal("no COMMIT was broken")
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("fn ran %d times, want 1", n)
	}
}

// RunExternal's first step reads the key in a transaction of its own. A
// COMMIT of that read that breaks leaves nothing unknown: nothing was
// claimed and fn has not run. The read is run again, and the call goes on.
func testReadStepWhoseCommitBroke(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var a armed
	a.on.Store(true) // the call's first COMMIT is the read's: the key is new
	var broken atomic.Int64
	ops := e.hookedOps(t, &hooks{commit: func(ctx context.Context, c hookConn) error {
		if !a.once() {
			return nil
		}
		broken.Add(1)
		return e.breakCommit(t, c)
	}})
	var calls atomic.Int64
	res, err := ops.do(ctx, "read-commit", external("fn", &calls))
	if err != nil || res.Replayed || res.Value.By != "fn" {
		t.Fatalf("call whose read's COMMIT broke: %+v, %v", res, err)
	}
	if broken.Load() != 1 {
		t.Fatal("no COMMIT was broken")
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("fn ran %d times, want 1", n)
	}
	e.wantRow(t, "read-commit", idemsql.StatusCompleted, 1, "fn")
}

// driver.ErrBadConn, by database/sql's driver contract, means that the
// server cannot have performed the operation: a COMMIT that fails with it
// did not commit, and the transaction is lost. Run runs it again.
func testBadConnAtCommitIsRetried(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var a armed
	a.on.Store(true)
	ops := e.hookedOps(t, &hooks{commit: func(context.Context, hookConn) error {
		if a.once() {
			return driver.ErrBadConn
		}
		return nil
	}})
	var runs atomic.Int64
	res, err := ops.run(ctx, "badconn-commit", func(context.Context) (receipt, error) {
		return receipt{By: fmt.Sprint("run ", runs.Add(1))}, nil
	})
	if err != nil || res.Replayed || res.Value.By != "run 2" {
		t.Fatalf("Run whose first COMMIT failed with driver.ErrBadConn: %+v, %v; want the second run's result", res, err)
	}
	if errors.Is(err, idemsql.ErrCommitUnknown) {
		t.Fatal("ErrCommitUnknown")
	}
	e.wantRow(t, "badconn-commit", idemsql.StatusCompleted, 1, "run 2")
}

// A COMMIT the database refused is not committed, even when the try that
// sent it ran out of its own time meanwhile. Here (SQLite, rollback
// journal) the recording's COMMIT waits for a reader's lock until the try's
// time-out ends the wait, and the driver rolls the transaction back; the
// lease has run out by then. The outcome is known: nothing was recorded,
// ErrLeaseLost, of that one class; never ErrCommitUnknown.
func TestLeaseCommitRefusedAfterItsTryTimedOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	// busy_timeout outlasts the try's time-out: the try's context ends the
	// wait, as a Galera certification failure that arrives after it would.
	dsn := "file:" + path + "?_pragma=busy_timeout(60000)&_pragma=journal_mode(DELETE)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reader, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(60000)")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := migrations.Up(ctx, db, store); err != nil {
		t.Fatal(err)
	}
	var held *sql.Tx
	defer func() {
		if held != nil {
			_ = held.Rollback()
		}
	}()
	const lease = time.Second
	_, err = idemsql.RunExternal(ctx, store, "refused-commit", func(context.Context, idemsql.Claim) (receipt, error) {
		// A reader's lock, held until the test ends: the recording's COMMIT
		// cannot get the exclusive lock it needs. (Not on fn's context,
		// which ends when fn returns.)
		tx, err := reader.BeginTx(context.Background(), nil)
		if err != nil {
			return receipt{}, err
		}
		held = tx
		var n int
		return receipt{By: "fn"}, tx.QueryRow("SELECT COUNT(*) FROM idempotency_keys").Scan(&n)
	}, idemsql.Options{Lease: lease})
	if !errors.Is(err, idemsql.ErrLeaseLost) {
		t.Fatalf("recording whose COMMIT was refused after its try's time-out: %v, want ErrLeaseLost", err)
	}
	oneClass(t, err)
	_ = held.Rollback()
	held = nil
	var status string
	if err := db.QueryRow("SELECT status FROM idempotency_keys WHERE idem_key = 'refused-commit'").Scan(&status); err != nil || status != idemsql.StatusInProgress {
		t.Fatalf("row: %q, %v; want in_progress", status, err)
	}
}

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "CommitErrorContextEndedBeforeCommit", run: testCommitErrorContextEnded},
		conformanceCase{name: "CommitErrorConnectionKilled", only: "postgres", run: testCommitErrorConnectionKilled},
		conformanceCase{name: "CommitErrorConnectionKilled", only: "mysql", run: testCommitErrorConnectionKilled})
}

// doThenCommit runs one guarded charge with Do in a transaction of the
// backend's own driver; between Do and the caller's own COMMIT it calls
// before. It returns the COMMIT's error as Store.CommitError classes it.
func (e *env) doThenCommit(ctx context.Context, key string, runs *atomic.Int64, before func(tx testTx)) error {
	e.t.Helper()
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		e.t.Fatalf("begin: %v", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := doIn(ctx, tx, key, e.charge(tx, key, 1, runs)); err != nil {
		e.t.Fatalf("Do: %v", err)
	}
	before(tx)
	return e.store.CommitError(ctx, tx.Commit(ctx))
}

// The caller's context ends after Do and before the caller commits. No
// COMMIT goes out (pgx sends nothing on a context that ended; database/sql
// rolls the transaction back when its context ends, and Commit then says
// sql.ErrTxDone): CommitError says so with the context's error alone.
func testCommitErrorContextEnded(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runs atomic.Int64
	err := e.doThenCommit(ctx, "ctx-ended", &runs, func(testTx) {
		cancel()
		if e.backend == "postgres-pgx" {
			return
		}
		// database/sql rolls back in a goroutine of its own; once it has,
		// the connection is back in the pool.
		for e.db.Stats().InUse > 0 {
			time.Sleep(time.Millisecond)
		}
	})
	if !errors.Is(err, context.Canceled) || errors.Is(err, idemsql.ErrCommitUnknown) || errors.Is(err, idemsql.ErrRetryable) {
		t.Fatalf("COMMIT after the context ended: %v, want the context's error alone", err)
	}
	oneClass(t, err)
	if n := e.idemRows("ctx-ended") + e.bizRows("ctx-ended"); n != 0 {
		t.Fatalf("%d rows committed, want none", n)
	}
}

// The server kills the caller's connection after Do: the caller's COMMIT
// goes out on a dead connection, and whether it committed cannot be told
// from here. CommitError says ErrCommitUnknown. On pgx, when a statement
// after the kill already failed, pgx closed the connection and its COMMIT
// fails with "conn closed", for which pgconn.SafeToRetry is true, as it is
// for the same error from a COMMIT that went out: CommitError does not
// trust it. Calling again then runs (the server rolled back), once.
func testCommitErrorConnectionKilled(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	kill := func(tx testTx) {
		id := e.connID(ctx, tx)
		if err := e.kill(id); err != nil {
			t.Fatalf("kill: %v", err)
		}
		e.waitGone(ctx, id)
	}
	err := e.doThenCommit(ctx, "conn-killed", &runs, kill)
	if !errors.Is(err, idemsql.ErrCommitUnknown) {
		t.Fatalf("COMMIT on a killed connection: %v, want ErrCommitUnknown", err)
	}
	oneClass(t, err)
	if e.backend == "postgres-pgx" {
		tx, err := e.begin(ctx, sql.LevelDefault)
		if err != nil {
			t.Fatalf("begin: %v", err)
		}
		if _, err := doIn(ctx, tx, "conn-closed", e.charge(tx, "conn-closed", 1, &runs)); err != nil {
			t.Fatalf("Do: %v", err)
		}
		kill(tx)
		_ = tx.Exec(ctx, "SELECT 1") // fails: pgx closes the connection
		raw := tx.Commit(ctx)
		if !pgconn.SafeToRetry(raw) || !errors.Is(raw, pgconn.ErrConnClosed) {
			t.Fatalf("pgx's COMMIT on the connection it closed: %v, want \"conn closed\", SafeToRetry", raw)
		}
		if err := e.store.CommitError(ctx, raw); !errors.Is(err, idemsql.ErrCommitUnknown) {
			t.Fatalf("CommitError(%v) = %v, want ErrCommitUnknown", raw, err)
		}
	}
	res, err := e.guarded("conn-killed", 2, &runs)
	if err != nil || res.Replayed {
		t.Fatalf("again: %+v, %v; want fn to run", res, err)
	}
	if n := e.bizRows("conn-killed"); n != 1 {
		t.Fatalf("%d business rows, want 1", n)
	}
}
