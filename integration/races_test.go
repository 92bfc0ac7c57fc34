package integration

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// gated runs statements in a transaction, pausing before one of them, so a
// test can put another transaction's work between two statements of Do.
type gated struct {
	exec    func(ctx context.Context, q string, args ...any) (int64, error)
	query   func(ctx context.Context, q string, args ...any) idemdriver.Row
	pauseAt string
	reached chan struct{}
	resume  chan struct{}
}

func (g *gated) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	if q == g.pauseAt && g.reached != nil {
		close(g.reached)
		g.reached = nil
		<-g.resume
	}
	return g.exec(ctx, q, args...)
}
func (g *gated) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return g.query(ctx, q, args...)
}

func newGated(t *testing.T, tx testTx, pauseAt string) *gated {
	g := &gated{pauseAt: pauseAt, reached: make(chan struct{}), resume: make(chan struct{})}
	ex := executorOf(t, tx)
	g.exec, g.query = ex.Exec, ex.QueryRow
	return g
}

// executorOf is the idemsql.Executor that Bind gives for tx, for tests that
// wrap it.
func executorOf(t *testing.T, tx testTx) idemdriver.Executor {
	switch x := tx.(type) {
	case sqlTestTx:
		return sqlExec{x.tx}
	case pgxTestTx:
		return pgxExec{x.tx}
	}
	t.Fatalf("unknown tx %T", tx)
	return nil
}

type sqlExec struct{ tx *sql.Tx }

func (x sqlExec) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	r, err := x.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}
func (x sqlExec) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return x.tx.QueryRowContext(ctx, q, args...)
}

type pgxExec struct{ tx pgx.Tx }

func (x pgxExec) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := x.tx.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}
func (x pgxExec) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return x.tx.QueryRow(ctx, q, args...)
}

// B reads the key as expired, then A re-claims, runs and commits it before
// B's re-claim statement runs: B's re-claim must lose and B must replay A.
func testReclaimLosesRace(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	e.mustGuarded("lose-1", 1, &runs)
	e.expire("lose-1")
	btx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer btx.Rollback(ctx)
	g := newGated(t, btx, dialectOf(e.dialect).Statements(idemdriver.Table{Name: e.table}).Reclaim)
	reached := g.reached
	type outcome struct {
		res idemsql.Result[invoice]
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := idemsql.Do(ctx, e.exStore(), idemdriver.Executor(g), "lose-1", e.charge(btx, "lose-1", 3, &runs))
		done <- outcome{res, err}
	}()
	<-reached
	a := e.mustGuarded("lose-1", 2, &runs) // A re-claims and commits
	if a.Replayed {
		t.Fatal("A replayed")
	}
	close(g.resume)
	o := <-done
	if o.err != nil {
		t.Fatalf("B: %v", o.err)
	}
	if err := btx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !o.res.Replayed || o.res.Value != a.Value || runs.Load() != 2 || e.bizRows("lose-1") != 2 {
		t.Fatalf("B replayed=%v value=%+v want %+v runs=%d business rows=%d",
			o.res.Replayed, o.res.Value, a.Value, runs.Load(), e.bizRows("lose-1"))
	}
}

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "ConcurrentReclaimOfExpiredKey", run: testConcurrentReclaim},
		conformanceCase{name: "OwnClaimReclaimedInsideFn", run: testOwnClaimReclaimedInsideFn},
		conformanceCase{name: "DuplicatesNeedNoRetry", run: testDuplicatesNeedNoRetry},
		conformanceCase{name: "WaiterReplaysAfterHolderReclaims", run: testWaiterReplaysAfterHolderReclaims},
		conformanceCase{name: "ReclaimLosesToConcurrentReclaim", only: "postgres", run: testReclaimLosesRace},
	)
}

// Many transactions find the same expired key at once: exactly one re-runs fn.
func testConcurrentReclaim(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	e.mustGuarded("race", 1, &runs)
	e.expire("race")
	fresh := race(t, func() (idemsql.Result[invoice], error) {
		return e.guardedWithRetry(ctx, sql.LevelDefault, "race", &runs)
	})
	if fresh != 1 || e.bizRows("race") != 2 {
		t.Fatalf("fresh=%d business rows=%d, want 1 and 2 (original + one re-run)", fresh, e.bizRows("race"))
	}
	if a := e.queryInt("SELECT attempt FROM "+e.table+" WHERE idem_key = ?", "race"); a != 2 {
		t.Fatalf("attempt = %d, want 2", a)
	}
}

// fn outlives its own claim's TTL and a nested Do asks for the same key in
// the same transaction: its own running claim is never taken for an expired
// one. The nested call gets ErrReentrant and the outer call completes.
func testOwnClaimReclaimedInsideFn(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var inner error
	res, err := doIn(ctx, tx, "own-1", func(ctx context.Context) (invoice, error) {
		time.Sleep(20 * time.Millisecond)
		_, inner = doIn(ctx, tx, "own-1", e.charge(tx, "own-1", 1, &runs))
		return invoice{Key: "outer"}, nil
	}, idemsql.Options{TTL: time.Millisecond})
	if !errors.Is(inner, idemsql.ErrReentrant) || runs.Load() != 0 {
		t.Fatalf("inner: err = %v, runs = %d; want ErrReentrant and no run", inner, runs.Load())
	}
	if err != nil || res.Value.Key != "outer" {
		t.Fatalf("outer: %+v %v", res, err)
	}
}

// At the default isolation level concurrent duplicates serialise on the
// row lock: no caller should ever need to retry.
func testDuplicatesNeedNoRetry(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tx, err := e.begin(ctx, sql.LevelDefault)
			if err != nil {
				errs[i] = err
				return
			}
			_, err = doIn(ctx, tx, "noretry", e.charge(tx, "noretry", 1, &runs))
			if err == nil {
				err = tx.Commit(ctx)
			} else {
				_ = tx.Rollback(ctx)
			}
			errs[i] = err
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("racer %d: %v", i, err)
		}
	}
	if runs.Load() != 1 || e.bizRows("noretry") != 1 {
		t.Fatalf("runs=%d business rows=%d", runs.Load(), e.bizRows("noretry"))
	}
}

// A holder re-claims an expired key and holds it; a duplicate that arrives
// meanwhile must, once the holder commits, replay the holder's result.
func testWaiterReplaysAfterHolderReclaims(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	e.mustGuarded("rewait-1", 1, &runs)
	e.expire("rewait-1")
	holder, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	first, err := doIn(ctx, holder, "rewait-1", e.charge(holder, "rewait-1", 2, &runs))
	if err != nil || first.Replayed {
		t.Fatalf("holder: replayed=%v err=%v", first.Replayed, err)
	}
	o := e.waitBehind(ctx, "rewait-1", &runs, holder.Commit)
	if !o.res.Replayed || o.res.Value != first.Value || runs.Load() != 2 || e.bizRows("rewait-1") != 2 {
		t.Fatalf("waiter replayed=%v value=%+v want %+v runs=%d business rows=%d",
			o.res.Replayed, o.res.Value, first.Value, runs.Load(), e.bizRows("rewait-1"))
	}
}
