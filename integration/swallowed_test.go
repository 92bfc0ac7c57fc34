package integration

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "SwallowedTxDeathRunsAgain", run: testSwallowedTxDeath})
}

// fn's first run makes the database end or abort its transaction (a
// deadlock on PostgreSQL and MySQL, an interrupted write on SQLite), drops
// the error and returns success. The claim and the business write died with
// the transaction, so Run must not report that run as done: it must run fn
// again in a new transaction and end with one effect. Each database shows
// the death differently once fn has returned: PostgreSQL refuses the result
// write (25P02), or, when the result was stored with the claim (struct{}),
// turns the COMMIT into a rollback; on MySQL the fenced result write finds
// no claim; on SQLite it finds none either, and a COMMIT finds no
// transaction.
func testSwallowedTxDeath(t *testing.T, e *env) {
	for _, void := range []bool{false, true} {
		name := "Result"
		if void {
			name = "EmptyResult"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			key := "swallow-" + name
			var d *deadlock
			if e.dialect != "sqlite" {
				d = e.newDeadlock()
			}
			var runs atomic.Int64
			body := func(ctx context.Context, tx testTx) (int64, error) {
				run := runs.Add(1)
				if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, run); err != nil {
					return 0, err
				}
				if run == 1 {
					if err := killTx(ctx, e, d, tx); err == nil {
						t.Error("the transaction did not die")
					}
					// The defect under test: the error is dropped.
				}
				return run, nil
			}
			var err error
			if void {
				_, err = e.runVoid(ctx, key, func(ctx context.Context, tx testTx) error {
					_, err := body(ctx, tx)
					return err
				})
			} else {
				var res idemsql.Result[invoice]
				res, err = e.runTx(ctx, key, func(ctx context.Context, tx testTx) (invoice, error) {
					run, err := body(ctx, tx)
					return invoice{Key: key, Amount: run}, err
				})
				if err == nil && (res.Replayed || res.Value.Amount != 2) {
					t.Errorf("Run returned %+v, want the second run's result", res)
				}
			}
			if d != nil {
				d.wait(t)
			}
			if err != nil {
				t.Fatalf("Run: %v (fn ran %d times)", err, runs.Load())
			}
			if n := runs.Load(); n != 2 {
				t.Errorf("fn ran %d times, want 2", n)
			}
			if n := e.bizRows(key); n != 1 {
				t.Errorf("%d business rows, want 1", n)
			}
			if n := e.idemRows(key); n != 1 {
				t.Errorf("%d idempotency rows, want 1", n)
			}
		})
	}
}

// killTx makes the database end tx's transaction (MySQL, SQLite) or abort
// it (PostgreSQL) and returns the error that says so.
func killTx(ctx context.Context, e *env, d *deadlock, tx testTx) error {
	if e.dialect != "sqlite" {
		return d.lose(ctx, tx)
	}
	// An interrupted write rolls SQLite's whole transaction back.
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err := tx.Exec(sctx, sqliteLongWrite(e.biz))
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("not the interrupt: %w", err)
	}
	return err
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "SwallowedTxDeathThenPermanentFailure", run: testSwallowedTxDeathThenPermanent})
}

// fn's first run loses its transaction as above, drops that error and
// fails for a reason of its own, to be recorded (Options.RecordFailures). On
// MySQL and SQLite the transaction is gone, savepoint included: the record
// cannot be written, and Run must run fn again rather than report an
// unexpected state. PostgreSQL's savepoint survives the abort: rolling back
// to it undoes fn's writes and the failure is recorded, fn's own answer.
func testSwallowedTxDeathThenPermanent(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const key = "swallow-permanent"
	var d *deadlock
	if e.dialect != "sqlite" {
		d = e.newDeadlock()
	}
	var runs atomic.Int64
	res, err := e.runTx(ctx, key, func(ctx context.Context, tx testTx) (invoice, error) {
		run := runs.Add(1)
		if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, run); err != nil {
			return invoice{}, err
		}
		if run == 1 {
			if err := killTx(ctx, e, d, tx); err == nil {
				t.Error("the transaction did not die")
			}
			return invoice{}, idemsql.Permanent("declined", errValidation)
		}
		return invoice{Key: key, Amount: run}, nil
	}, idemsql.Options{RecordFailures: true})
	if d != nil {
		d.wait(t)
	}
	if e.dialect == "postgres" {
		var fe *idemsql.Error
		if !errors.As(err, &fe) || fe.Class != "declined" {
			t.Fatalf("Run: %+v, %v; want the recorded failure", res, err)
		}
		if n := e.bizRows(key); n != 0 {
			t.Errorf("%d business rows, want 0: the savepoint undoes fn's writes", n)
		}
		return
	}
	if err != nil || res.Value.Amount != 2 {
		t.Fatalf("Run: %+v, %v (fn ran %d times); want the second run's result", res, err, runs.Load())
	}
	if n := e.bizRows(key); n != 1 {
		t.Errorf("%d business rows, want 1", n)
	}
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "RunContextEndsBetweenAttempts", run: testRunContextEndsBetweenAttempts})
}

// Run keeps retrying a transaction the database (here fn) asks to run
// again, until the context ends: in a wait between attempts, or in the
// next BEGIN. Either way the error's one class is the context's; the last
// attempt's error, inside, must not make it also ErrRetryable.
func testRunContextEndsBetweenAttempts(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var runs atomic.Int64
	_, err := e.run(ctx, 0, "ctx-backoff", func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		runs.Add(1)
		return invoice{}, fmt.Errorf("conflict, run again: %w", idemsql.ErrRetryable)
	}, idemsql.Options{MaxAttempts: 1000, Backoff: time.Second, MaxBackoff: time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v after %d runs, want the context's deadline", err, runs.Load())
	}
	oneClass(t, err)
	if n := e.idemRows("ctx-backoff"); n != 0 {
		t.Fatalf("%d rows left", n)
	}
}

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "RunDeadlockVictimReplaysTheWinner", only: "postgres", run: testRunVictimReplays},
		conformanceCase{name: "RunDeadlockVictimReplaysTheWinner", only: "mysql", run: testRunVictimReplays})
}

// Run's fn loses a deadlock while a duplicate waits behind its claim. Run
// rolls back and runs the transaction again; by then the duplicate has the
// key, so the retry replays the duplicate's result instead of running fn:
// one effect, and the caller of Run gets that effect's value.
func testRunVictimReplays(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := e.newDeadlock()
	const key = "run-victim"
	var runs atomic.Int64
	claimed, committed := make(chan struct{}), make(chan struct{})
	dupID := make(chan int64, 1)
	dup := e.duplicate(ctx, key, &runs, claimed, dupID, committed)
	var holderRuns atomic.Int64
	res, err := e.runTx(ctx, key, func(ctx context.Context, tx testTx) (invoice, error) {
		if holderRuns.Add(1) > 1 {
			if runs.Load() == 0 {
				// The holder's retry claimed the key before the woken
				// duplicate's waiting claim got to it (a busy machine's
				// schedule, not the defect): give the key up again until
				// the duplicate has it.
				return invoice{}, fmt.Errorf("the duplicate has not claimed yet: %w", idemsql.ErrRetryable)
			}
			// The duplicate's fn ran, so it holds or has committed the
			// key, and the holder ran fn again anyway.
			return invoice{Key: key, Amount: 99}, nil // a second effect: the bug
		}
		if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), key); err != nil {
			return invoice{}, err
		}
		close(claimed)
		e.waitUntilBlocked(ctx, <-dupID)
		return invoice{}, d.lose(ctx, tx)
	})
	d.wait(t)
	o := <-dup
	if o.err != nil || o.res.Replayed {
		t.Fatalf("duplicate: %+v %v, want a first execution", o.res, o.err)
	}
	if err != nil || !res.Replayed || res.Value != o.res.Value {
		t.Fatalf("Run: %+v, %v; want a replay of the duplicate's %+v", res, err, o.res.Value)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the duplicate's fn ran %d times, want 1", n)
	}
	if n := e.bizRows(key); n != 1 {
		t.Errorf("%d business rows, want 1", n)
	}
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "SwallowedFailedStatementRunsTwiceAtMost", only: "postgres", run: testSwallowedFailedStatement})
}

// PostgreSQL: fn goes on past a statement that failed for good (here a
// division by zero; a unique violation would do the same), so every try
// finds its transaction aborted after fn. That could have been a deadlock,
// so Run tries once more; the second time it is fn's own doing: an error
// of no class, not ErrRetryable, and no third run.
func testSwallowedFailedStatement(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	_, err := e.runTx(ctx, "swallow-div0", func(ctx context.Context, tx testTx) (invoice, error) {
		runs.Add(1)
		_ = tx.Exec(ctx, "SELECT 1/0") // the defect under test: the error is dropped
		return invoice{Amount: 1}, nil
	}, idemsql.Options{MaxAttempts: 10})
	if err == nil || errors.Is(err, idemsql.ErrRetryable) {
		t.Fatalf("err = %v, want an error of no class", err)
	}
	oneClass(t, err)
	if n := runs.Load(); n != 2 {
		t.Fatalf("fn ran %d times, want 2", n)
	}
	if n := e.idemRows("swallow-div0"); n != 0 {
		t.Fatalf("%d rows left", n)
	}
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "ContextEndsBeforeCommit", run: testContextEndsBeforeCommit})
}

// The caller's context ends as fn returns, before Run commits. The
// transaction does not commit, and no COMMIT is sent: database/sql rolls
// the transaction back when its context ends, and pgx sends nothing on a
// context that already ended. Nothing is unknown, so the error is the
// context's alone: neither ErrRetryable nor ErrCommitUnknown.
func testContextEndsBeforeCommit(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := e.runVoid(ctx, "ctx-commit", func(ctx context.Context, tx testTx) error {
		defer cancel()
		return tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), "ctx-commit")
	})
	if !errors.Is(err, context.Canceled) || errors.Is(err, idemsql.ErrRetryable) || errors.Is(err, idemsql.ErrCommitUnknown) {
		t.Fatalf("err = %v, want the context's error alone", err)
	}
	oneClass(t, err)
	if n := e.idemRows("ctx-commit") + e.bizRows("ctx-commit"); n != 0 {
		t.Fatalf("%d rows committed, want none", n)
	}
}
