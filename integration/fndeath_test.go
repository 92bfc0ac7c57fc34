package integration

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "FnStatementContextEnds", run: testFnStatementContextEnds})
}

// How the context of fn's interrupted statement ends.
const (
	endCancel   = "cancel"   // a context of fn's own, cancelled
	endDeadline = "deadline" // a context of fn's own, past its deadline
	endCaller   = "caller"   // the caller's context, cancelled
)

// fn runs one statement under a context that ends while the statement
// waits. pgx and go-sql-driver close the connection then, and SQLite rolls
// the transaction back: the transaction is lost. When the context was fn's
// own and the caller's is live, that is a lost connection like any other:
// Do's error is ErrRetryable, of that class alone, and Run runs fn again,
// which leaves one business row. When the caller's own context ended, the
// error is that context's, of that class alone, and not ErrRetryable.
func testFnStatementContextEnds(t *testing.T, e *env) {
	for _, end := range []string{endCancel, endDeadline, endCaller} {
		t.Run(end, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			key := "subctx-" + end
			// recorded: fn's error is Permanent, to be recorded, which
			// takes another path after fn.
			for _, recorded := range []bool{false, true} {
				tx, err := e.begin(ctx, sql.LevelDefault)
				if err != nil {
					t.Fatal(err)
				}
				callCtx, cancelCall := context.WithCancel(ctx)
				_, err = doIn(callCtx, tx, key, func(ctx context.Context) (invoice, error) {
					if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), key); err != nil {
						return invoice{}, err
					}
					err := e.interruptStatement(ctx, tx, end, cancelCall)
					if recorded {
						err = idemsql.Permanent("declined", err)
					}
					return invoice{}, err
				}, idemsql.Options{RecordFailures: recorded})
				cancelCall()
				_ = tx.Rollback(ctx)
				oneClass(t, err)
				switch {
				case end == endCaller:
					if !errors.Is(err, context.Canceled) || errors.Is(err, idemsql.ErrRetryable) {
						t.Fatalf("Do (recorded %v): err = %v, want the caller's context's error alone", recorded, err)
					}
				case !errors.Is(err, idemsql.ErrRetryable):
					t.Fatalf("Do (recorded %v): err = %v, want ErrRetryable: the connection or transaction went with fn's statement", recorded, err)
				}
				if n := e.idemRows(key); n != 0 {
					t.Fatalf("%d idempotency rows after the rollback", n)
				}
			}
			if end == endCaller {
				return // Run's own context ended: it has nothing to retry
			}

			var runs atomic.Int64
			res, err := e.runTx(ctx, key, func(ctx context.Context, tx testTx) (invoice, error) {
				run := runs.Add(1)
				if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, run); err != nil {
					return invoice{}, err
				}
				if run == 1 {
					return invoice{}, e.interruptStatement(ctx, tx, end, nil)
				}
				return invoice{Key: key, Amount: run}, nil
			})
			if err != nil || res.Value.Amount != 2 {
				t.Fatalf("Run: %+v, %v (fn ran %d times); want the second run's result", res, err, runs.Load())
			}
			if n := e.bizRows(key); n != 1 {
				t.Fatalf("%d business rows, want 1", n)
			}
			if n := e.idemRows(key); n != 1 {
				t.Fatalf("%d idempotency rows, want 1", n)
			}
		})
	}
}

// interruptStatement runs, in tx, a statement that waits until a context
// ends it, and returns its error. end says which context: a cancelled or
// past-deadline context of its own made from ctx, or ctx itself, ended by
// cancelCaller (endCaller). On PostgreSQL and MySQL the
// statement waits for a row lock that another transaction holds until the
// statement has returned; on SQLite it is a write far too long to finish.
func (e *env) interruptStatement(ctx context.Context, tx testTx, end string, cancelCaller func()) error {
	e.t.Helper()
	var sctx context.Context
	var stop func()
	switch end {
	case endCancel:
		sctx, stop = context.WithCancel(ctx)
	case endDeadline:
		d := &deadlineOnDemand{Context: ctx, done: make(chan struct{})}
		sctx, stop = d, d.end
	default:
		sctx, stop = ctx, cancelCaller
	}
	defer stop()
	if e.dialect == "sqlite" {
		// The write may or may not have started when the context ends:
		// either way SQLite reports the context's error alone.
		go func() { time.Sleep(20 * time.Millisecond); stop() }()
		return tx.Exec(sctx, sqliteLongWrite(e.biz))
	}
	gate := "gate_" + uniqueSuffix(e.t)
	if _, err := e.db.Exec("CREATE TABLE " + gate + " (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _, _ = e.db.Exec("DROP TABLE " + gate) })
	if _, err := e.db.Exec("INSERT INTO " + gate + " (id, n) VALUES (1, 0)"); err != nil {
		e.t.Fatal(err)
	}
	holder, err := e.db.BeginTx(context.Background(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	// Released once the statement returned: the server then finishes it,
	// finds the connection closed and rolls the transaction back.
	defer holder.Rollback()
	if _, err := holder.Exec("UPDATE " + gate + " SET n = n + 1 WHERE id = 1"); err != nil {
		e.t.Fatal(err)
	}
	id := e.connID(ctx, tx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.waitUntilBlocked(context.Background(), id)
		stop()
	}()
	err = tx.Exec(sctx, "UPDATE "+gate+" SET n = n + 1 WHERE id = 1")
	wg.Wait()
	if err == nil {
		return errors.New("the statement was not interrupted")
	}
	return err
}

// deadlineOnDemand is a context that ends when end is called, as one whose
// deadline passed: a deadline that falls while the statement waits, with
// no clock involved.
type deadlineOnDemand struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func (d *deadlineOnDemand) end()                  { d.once.Do(func() { close(d.done) }) }
func (d *deadlineOnDemand) Done() <-chan struct{} { return d.done }

func (d *deadlineOnDemand) Err() error {
	select {
	case <-d.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "FnCommitsThenFails", run: testFnCommitsThenFails})
}

// fn sends COMMIT as a statement, then fails. Its business write and the
// claim are committed already; nothing Do sends afterwards may remove the
// claim (it would run outside any transaction), so that the key answers
// ErrAbandoned from then on, as docs/guarantees.md promises, instead of
// running fn a second time. Do's own answer is ErrRetryable: the session
// left the transaction under fn. Run, running it again, meets the
// abandoned claim.
func testFnCommitsThenFails(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	commitsThenFails := func(key string) func(context.Context, testTx) (invoice, error) {
		return func(ctx context.Context, tx testTx) (invoice, error) {
			runs.Add(1)
			if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), key); err != nil {
				return invoice{}, err
			}
			if err := tx.Exec(ctx, "COMMIT"); err != nil {
				return invoice{}, err
			}
			return invoice{}, errValidation
		}
	}
	abandoned := func(t *testing.T, key string, wantRuns int64) {
		t.Helper()
		_, err := e.runTx(ctx, key, commitsThenFails(key))
		if !errors.Is(err, idemsql.ErrAbandoned) {
			t.Fatalf("a later call: err = %v, want ErrAbandoned (fn ran %d times, %d business rows)", err, runs.Load(), e.bizRows(key))
		}
		oneClass(t, err)
		if n := runs.Load(); n != wantRuns {
			t.Fatalf("fn ran %d times, want %d", n, wantRuns)
		}
		if n := e.bizRows(key); n != 1 {
			t.Fatalf("%d business rows, want 1", n)
		}
		if st := e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", key); st != idemsql.StatusInProgress {
			t.Fatalf("status %q, want the committed claim", st)
		}
	}

	t.Run("Do", func(t *testing.T) {
		const key = "fn-commits-do"
		tx, err := e.begin(ctx, sql.LevelDefault)
		if err != nil {
			t.Fatal(err)
		}
		fn := commitsThenFails(key)
		_, err = doIn(ctx, tx, key, func(ctx context.Context) (invoice, error) { return fn(ctx, tx) })
		_ = tx.Rollback(ctx)
		if !errors.Is(err, idemsql.ErrRetryable) || !errors.Is(err, errValidation) {
			t.Errorf("err = %v, want ErrRetryable wrapping fn's error", err)
		}
		oneClass(t, err)
		abandoned(t, key, 1)
	})
	t.Run("Run", func(t *testing.T) {
		runs.Store(0)
		const key = "fn-commits-run"
		abandoned(t, key, 1) // Run's second attempt already finds the claim
		abandoned(t, key, 1)
	})
}
