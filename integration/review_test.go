package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "RunRollsBackFnErrorWrappingInnerFailure", run: testRunRollsBackInnerFailure},
		conformanceCase{name: "WaiterReplaysHolderSlowerThanTTL", run: func(t *testing.T, e *env) { testHolderSlowerThanTTL(t, e, false) }},
		conformanceCase{name: "WaiterReplaysEmptyResultHolderSlowerThanTTL", run: func(t *testing.T, e *env) { testHolderSlowerThanTTL(t, e, true) }},
		conformanceCase{name: "RunPanicRollsBack", run: testRunPanicRollsBack},
		conformanceCase{name: "RecoveredPanicThenCommit", run: testRecoveredPanicThenCommit},
		conformanceCase{name: "AbandonedClaim", run: testAbandonedClaim},
		conformanceCase{name: "FailFastIsOneClass", run: testFailFastIsOneClass},
		conformanceCase{name: "RetryableCauseNeverRecorded", only: "postgres", run: testRetryableCauseNeverRecorded},
		conformanceCase{name: "RetryableCauseNeverRecorded", only: "mysql", run: testRetryableCauseNeverRecorded},
		conformanceCase{name: "StatementTimeoutWhileWaiting", only: "postgres", run: testStatementTimeoutWhileWaiting},
		conformanceCase{name: "StatementTimeoutWhileWaiting", only: "mysql", run: testStatementTimeoutWhileWaiting},
		conformanceCase{name: "BusySnapshotIsRetryable", only: "sqlite", run: testBusySnapshotIsRetryable},
	)
}

// An outer Run whose fn wrote a business row and then returns an inner
// call's freshly recorded failure must roll back: the inner record is not
// the outer call's outcome. Every retry with a new inner key would
// otherwise commit another row.
func testRunRollsBackInnerFailure(t *testing.T, e *env) {
	ctx := context.Background()
	for i := range 3 {
		_, err := e.runTx(ctx, "outer-1", func(ctx context.Context, tx testTx) (invoice, error) {
			if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), "outer-1"); err != nil {
				return invoice{}, err
			}
			_, inner := doIn(ctx, tx, fmt.Sprintf("inner-%d", i), func(ctx context.Context) (invoice, error) {
				return invoice{}, idemsql.Permanent("card_declined", errDeclined)
			}, idemsql.Options{RecordFailures: true})
			return invoice{}, inner
		})
		if !errors.Is(err, idemsql.ErrFailureRecorded) {
			t.Fatalf("call %d: err = %v", i, err)
		}
	}
	if n := e.bizRows("outer-1"); n != 0 {
		t.Fatalf("%d business rows committed by calls whose fn failed", n)
	}
	if n := e.idemRows("outer-1"); n != 0 {
		t.Fatalf("the outer claim was committed")
	}
}

// A holder takes longer than the TTL; a duplicate that arrives meanwhile
// waits for it and must replay its outcome, not run fn a second time.
func testHolderSlowerThanTTL(t *testing.T, e *env, empty bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ttl = 300 * time.Millisecond
	var runs atomic.Int64
	key := "slow-1"
	holder, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	claimed := make(chan struct{})
	type outcome struct {
		replayed bool
		err      error
	}
	dup := make(chan outcome, 1)
	go func() {
		<-claimed
		tx, err := e.beginOther(ctx)
		if err != nil {
			dup <- outcome{err: err}
			return
		}
		defer tx.Rollback(ctx)
		var replayed bool
		if empty {
			var r idemsql.Result[struct{}]
			r, err = doIn(ctx, tx, key, func(ctx context.Context) (struct{}, error) {
				runs.Add(1)
				return struct{}{}, tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 2)"), key)
			}, idemsql.Options{TTL: ttl})
			replayed = r.Replayed
		} else {
			var r idemsql.Result[invoice]
			r, err = doIn(ctx, tx, key, e.charge(tx, key, 2, &runs), idemsql.Options{TTL: ttl})
			replayed = r.Replayed
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		dup <- outcome{replayed, err}
	}()
	slow := func(ctx context.Context) error {
		runs.Add(1)
		if err := holder.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), key); err != nil {
			return err
		}
		close(claimed)
		time.Sleep(3 * ttl)
		return nil
	}
	if empty {
		_, err = doIn(ctx, holder, key, func(ctx context.Context) (struct{}, error) { return struct{}{}, slow(ctx) }, idemsql.Options{TTL: ttl})
	} else {
		_, err = doIn(ctx, holder, key, func(ctx context.Context) (invoice, error) {
			return invoice{Key: key, Amount: 1}, slow(ctx)
		}, idemsql.Options{TTL: ttl})
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	o := <-dup
	if o.err != nil || !o.replayed || runs.Load() != 1 || e.bizRows(key) != 1 {
		t.Fatalf("duplicate: replayed=%v err=%v; runs=%d business rows=%d, want a replay and one effect",
			o.replayed, o.err, runs.Load(), e.bizRows(key))
	}
}

// A panic in fn inside Run rolls the transaction back and goes on; the
// connection and the key's lock are not left behind, so the next call runs.
func testRunPanicRollsBack(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want the panic to go on", r)
			}
		}()
		_, _ = e.runTx(ctx, "panic-1", func(ctx context.Context, tx testTx) (invoice, error) {
			if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), "panic-1"); err != nil {
				return invoice{}, err
			}
			panic("boom")
		})
	}()
	var runs atomic.Int64
	res, err := e.run(ctx, sql.LevelDefault, "panic-1", e.insertBiz("panic-1", 2, &runs))
	if err != nil || res.Replayed || runs.Load() != 1 || e.bizRows("panic-1") != 1 {
		t.Fatalf("after the panic: %+v %v, runs=%d business rows=%d", res, err, runs.Load(), e.bizRows("panic-1"))
	}
	if inUse := settled(func() int { return e.db.Stats().InUse }); inUse != 0 && e.dialect != "postgres" {
		t.Fatalf("%d connections still in use", inUse)
	}
}

// A caller that recovers a panic of fn and commits keeps fn's partial
// writes; later calls with the key must get a clear, typed answer, not
// ErrReentrant for the whole TTL.
func testRecoveredPanicThenCommit(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { _ = recover() }()
		_, _ = doIn(ctx, tx, "rpanic-1", func(ctx context.Context) (invoice, error) {
			runs.Add(1)
			if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), "rpanic-1"); err != nil {
				return invoice{}, err
			}
			panic("boom")
		})
	}()
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = e.guarded("rpanic-1", 1, &runs)
	var fe *idemsql.Error
	if !errors.As(err, &fe) || fe.Class != idemsql.PanicClass || errors.Is(err, idemsql.ErrReentrant) || runs.Load() != 1 {
		t.Fatalf("after a committed panic: err = %v, runs = %d; want a recorded failure of class %q", err, runs.Load(), idemsql.PanicClass)
	}
}

// A committed in_progress row without a lease and without a running claim
// behind it is an abandoned claim: never run again on its own, never taken
// for the caller's own nested claim.
func testAbandonedClaim(t *testing.T, e *env) {
	var runs atomic.Int64
	e.mustGuarded("aband-1", 1, &runs)
	if _, err := e.db.Exec(e.q("UPDATE "+e.table+" SET status = 'in_progress', result = NULL, owner = 'gone/1/ab/7', expires_at = "+
		e.secondsAgo(3600)+" WHERE idem_key = ?"), "aband-1"); err != nil {
		t.Fatal(err)
	}
	_, err := e.guarded("aband-1", 1, &runs)
	if !errors.Is(err, idemsql.ErrAbandoned) || errors.Is(err, idemsql.ErrReentrant) || runs.Load() != 1 {
		t.Fatalf("err = %v, runs = %d; want ErrAbandoned and no run", err, runs.Load())
	}
}

// countingPool counts the transactions Run begins.
type countingPool struct {
	db    *sql.DB
	store *idemsql.Store[*sql.Tx]
	n     atomic.Int64
}

func (p *countingPool) Begin(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[*sql.Tx], error) {
	p.n.Add(1)
	tx, err := p.db.BeginTx(ctx, &sql.TxOptions{Isolation: level})
	if err != nil {
		return nil, err
	}
	return countedTx{Executor: sqlExec{tx}, tx: tx}, nil
}

type countedTx struct {
	idemdriver.Executor
	tx *sql.Tx
}

func (c countedTx) Tx() *sql.Tx                    { return c.tx }
func (c countedTx) Commit(context.Context) error   { return c.tx.Commit() }
func (c countedTx) Rollback(context.Context) error { return c.tx.Rollback() }

// Fail-fast's ErrInProgress and a lock time-out's ErrLockTimeout are each
// one class: neither matches the other or ErrRetryable, Run does not retry
// them, and the message says it once.
func testFailFastIsOneClass(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	holder := e.holdKey(ctx, "one-1", &runs)
	defer holder.Rollback(ctx)
	db := e.db
	if e.dialect == "sqlite" {
		db = e.deferredDB
	}
	pool := &countingPool{db: db, store: e.store}
	bound := storeOn(e, testDriver[*sql.Tx]{inner: sqlDriver(e.dialect, db), begin: pool.Begin})
	fn := func(ctx context.Context, tx *sql.Tx) (invoice, error) { runs.Add(1); return invoice{}, nil }

	_, err := idemsql.Run(ctx, bound, "one-1", fn, idemsql.Options{FailFast: true})
	if !errors.Is(err, idemsql.ErrInProgress) || errors.Is(err, idemsql.ErrLockTimeout) || errors.Is(err, idemsql.ErrRetryable) {
		t.Fatalf("fail-fast: err = %v, want ErrInProgress alone", err)
	}
	if n := pool.n.Load(); n != 1 {
		t.Fatalf("fail-fast: Run began %d transactions, want 1", n)
	}
	if strings.Count(err.Error(), "idemsql:") != 1 {
		t.Fatalf("the message repeats itself: %q", err.Error())
	}
	// PostgreSQL's fail-fast takes an advisory lock without waiting: no
	// statement fails, so there is no driver error to hold.
	if e.dialect == "mysql" && !e.driverError(err) {
		t.Fatalf("fail-fast: the driver's error is not reachable with errors.As: %v", err)
	}
	if e.dialect != "sqlite" { // SQLite waits in BEGIN IMMEDIATE or not at all: no lock time-out to have
		pool.n.Store(0)
		_, err = idemsql.Run(ctx, bound, "one-1", fn, idemsql.Options{LockTimeout: 100 * time.Millisecond})
		if !errors.Is(err, idemsql.ErrLockTimeout) || errors.Is(err, idemsql.ErrInProgress) || errors.Is(err, idemsql.ErrRetryable) {
			t.Fatalf("lock timeout: err = %v, want ErrLockTimeout alone", err)
		}
		if !e.driverError(err) {
			t.Fatalf("lock timeout: the driver's error is not reachable with errors.As: %v", err)
		}
		if n := pool.n.Load(); n != 1 {
			t.Fatalf("lock timeout: Run began %d transactions, want 1", n)
		}
	}
	if runs.Load() != 1 {
		t.Fatalf("fn ran behind a held key")
	}
}

// driverError reports whether err holds the server's own error, for
// errors.As: *pgconn.PgError or *mysql.MySQLError.
func (e *env) driverError(err error) bool {
	var pgErr *pgconn.PgError
	var myErr *mysql.MySQLError
	return errors.As(err, &pgErr) || errors.As(err, &myErr)
}

// A Permanent error whose cause ended the transaction (a deadlock) is not
// the key's answer: it is not recorded (PostgreSQL's ROLLBACK TO SAVEPOINT
// would let it be), and the call says "retry".
func testRetryableCauseNeverRecorded(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := e.newDeadlock()
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	_, err = doIn(ctx, tx, "perm-dl", func(ctx context.Context) (invoice, error) {
		if err := d.lose(ctx, tx); err != nil {
			return invoice{}, idemsql.Permanent("declined", err)
		}
		return invoice{}, errors.New("no deadlock happened")
	}, idemsql.Options{RecordFailures: true})
	if !errors.Is(err, idemsql.ErrRetryable) || errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatalf("err = %v, want ErrRetryable and nothing recorded", err)
	}
	_ = tx.Commit(ctx) // what a caller who keeps "recorded failures" would do
	_ = tx.Rollback(ctx)
	d.wait(t)
	if n := e.idemRows("perm-dl"); n != 0 {
		t.Fatalf("a failure caused by a deadlock was recorded")
	}
}

// A statement time-out while waiting behind the key's holder is a lock
// time-out: fn did not run.
func testStatementTimeoutWhileWaiting(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	holder := e.holdKey(ctx, "stmt-1", &runs)
	defer holder.Rollback(ctx)
	other, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	set := "SET LOCAL statement_timeout = '150ms'"
	if e.dialect == "mysql" {
		set = "SET SESSION max_statement_time = 0.15"
		defer other.Exec(context.WithoutCancel(ctx), "SET SESSION max_statement_time = 0")
	}
	if err := other.Exec(ctx, set); err != nil {
		t.Fatal(err)
	}
	_, err = doIn(ctx, other, "stmt-1", e.charge(other, "stmt-1", 1, &runs))
	if !errors.Is(err, idemsql.ErrLockTimeout) || runs.Load() != 1 {
		t.Fatalf("err = %v, runs = %d; want ErrLockTimeout", err, runs.Load())
	}
}

// SQLite: a transaction that read an older snapshot can never write
// (SQLITE_BUSY_SNAPSHOT). Under fail-fast that is not "in progress, your
// transaction is usable": it is "retry".
func testBusySnapshotIsRetryable(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	tx, err := e.beginOther(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.QueryInt(ctx, "SELECT COUNT(*) FROM "+e.table); err != nil { // the snapshot starts here
		t.Fatal(err)
	}
	e.mustGuarded("snap-other", 1, &runs) // another writer commits after it
	_, err = doIn(ctx, tx, "snap-1", e.charge(tx, "snap-1", 1, &runs), idemsql.Options{FailFast: true})
	if !errors.Is(err, idemsql.ErrRetryable) || errors.Is(err, idemsql.ErrInProgress) {
		t.Fatalf("err = %v, want ErrRetryable alone", err)
	}
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "StoredResultIsExact", run: testStoredResultIsExact})
}

// A replay returns the stored result byte for byte: key order, an integer
// beyond 2^53, a fraction. MySQL 8's binary JSON column would re-serialise
// it; the migrations store text there (MariaDB's JSON already is).
func testStoredResultIsExact(t *testing.T, e *env) {
	ctx := context.Background()
	const want = `{"b":1,"a":18446744073709551615,"f":0.1,"s":"é\u2028"}`
	run := func() (idemsql.Result[json.RawMessage], error) {
		tx, err := e.begin(ctx, sql.LevelDefault)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		res, err := doIn(ctx, tx, "exact-1", func(ctx context.Context) (json.RawMessage, error) {
			return json.RawMessage(want), nil
		}, idemsql.Options{ErrorOnDuplicate: true})
		if cerr := tx.Commit(ctx); cerr != nil {
			t.Fatal(cerr)
		}
		return res, err
	}
	if _, err := run(); err != nil {
		t.Fatal(err)
	}
	res, err := run()
	if !errors.Is(err, idemsql.ErrDuplicate) {
		t.Fatalf("err = %v, want ErrDuplicate", err)
	}
	rec, _, lerr := idemsql.Lookup(ctx, e.store, "exact-1")
	if lerr != nil || string(rec.Result) != want || string(res.Value) != want {
		t.Fatalf("stored %s (%v), replayed %s; want %s", rec.Result, lerr, res.Value, want)
	}
}
