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

	"github.com/idemsql/idemsql/dialects/sqlite"
	"github.com/idemsql/idemsql/idemsql"
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
	store, err := sqlite.New()
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
	_, err = idemsql.RunExternal(ctx, store.DB(db, nil), "refused-commit", func(context.Context, idemsql.LeaseInfo) (receipt, error) {
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
	}, idemsql.WithLease(lease))
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
