package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
)

// Transactions that die under fn: the database rolls them back (a deadlock,
// a Galera abort, an interrupted SQLite statement) or the connection goes.
// Whatever Do sends afterwards must not touch the row of a duplicate that
// claimed the key meanwhile, and the caller must learn to retry.

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "DeadlockVictimInFn", only: "postgres", run: testDeadlockVictimInFn},
		conformanceCase{name: "DeadlockVictimInFn", only: "mysql", run: testDeadlockVictimInFn},
		conformanceCase{name: "DeadlockSwallowedThenFnFails", only: "postgres", run: testDeadlockSwallowedThenFnFails},
		conformanceCase{name: "DeadlockSwallowedThenFnFails", only: "mysql", run: testDeadlockSwallowedThenFnFails},
		conformanceCase{name: "DeadlockSwallowedFnReturnsValue", only: "postgres", run: testDeadlockSwallowedFnReturnsValue},
		conformanceCase{name: "DeadlockSwallowedFnReturnsValue", only: "mysql", run: testDeadlockSwallowedFnReturnsValue},
		conformanceCase{name: "DeadlockSwallowedByEmptyResultFn", only: "postgres", run: testDeadlockSwallowedByFn},
		conformanceCase{name: "DeadlockSwallowedByEmptyResultFn", only: "mysql", run: testDeadlockSwallowedByFn},
		conformanceCase{name: "ConnectionKilledInFn", only: "postgres", run: testConnectionKilledInFn},
		conformanceCase{name: "ConnectionKilledInFn", only: "mysql", run: testConnectionKilledInFn},
		conformanceCase{name: "InterruptedStatementInFn", only: "sqlite", run: testInterruptedStatementInFn},
	)
}

// mariaDB reports whether the backend is a MariaDB server.
func (e *env) mariaDB() bool {
	if e.dialect != "mysql" {
		return false
	}
	return strings.Contains(e.queryString("SELECT VERSION()"), "MariaDB")
}

// sqliteLongWrite is a write into table that runs far longer than any
// deadline a test gives it: interrupted, it makes SQLite roll the whole
// transaction back.
func sqliteLongWrite(table string) string {
	return "INSERT INTO " + table + " (idem_key, amount) " +
		"SELECT 'filler', x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT x FROM c)"
}

// connID is the server's id of tx's connection.
func (e *env) connID(ctx context.Context, tx testTx) int64 {
	e.t.Helper()
	q := "SELECT CONNECTION_ID()"
	if e.dialect == "postgres" {
		q = "SELECT pg_backend_pid()"
	}
	id, err := tx.QueryInt(ctx, q)
	if err != nil {
		e.t.Fatalf("connection id: %v", err)
	}
	return id
}

// kill ends another session's connection from the server's side.
func (e *env) kill(id int64) error {
	if e.dialect == "postgres" {
		_, err := e.db.Exec("SELECT pg_terminate_backend($1)", id)
		return err
	}
	_, err := e.db.Exec(fmt.Sprintf("KILL CONNECTION %d", id))
	return err
}

// waitUntilBlocked polls the server's own lock view until the session id is
// waiting for a lock: a test that needs a waiter then has one, instead of
// hoping a pause was long enough.
func (e *env) waitUntilBlocked(ctx context.Context, id int64) {
	e.t.Helper()
	if e.dialect == "postgres" {
		e.waitForLockView(ctx, "pid = $1", id)
		return
	}
	e.waitForLockView(ctx, "trx_mysql_thread_id = ?", id)
}

// waitUntilTableBlocked polls the server's own lock view until a session
// waits for a lock in a statement on the test's idempotency table.
func (e *env) waitUntilTableBlocked(ctx context.Context) {
	e.t.Helper()
	name := "%" + strings.Trim(e.table[strings.LastIndex(e.table, ".")+1:], "\"`") + "%"
	if e.dialect == "postgres" {
		e.waitForLockView(ctx, "query LIKE $1", name)
		return
	}
	e.waitForLockView(ctx, "trx_query LIKE ?", name)
}

// waitForLockView polls until a session that matches where (with arg)
// waits for a lock.
func (e *env) waitForLockView(ctx context.Context, where string, arg any) {
	e.t.Helper()
	// InnoDB refreshes its INNODB_TRX cache only when nobody read it for
	// 100ms: a faster poll would read the same old snapshot for ever.
	poll := 150 * time.Millisecond
	q := "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' AND " + where
	if e.dialect == "postgres" {
		q = "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND " + where
		poll = 5 * time.Millisecond
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int64
		if err := e.db.QueryRowContext(ctx, q, arg).Scan(&n); err != nil {
			e.t.Errorf("lock view: %v", err)
			return
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Errorf("no session matching %s (%v) ever waited for a lock", where, arg)
			return
		}
		time.Sleep(poll)
	}
}

// afterFn wraps an executor: once fn has returned (fnDone closed), every
// statement Do still sends waits first until release is closed, or a few
// seconds. It puts the duplicate's commit before whatever Do sends after a
// transaction died, the order in which that statement would do harm.
type afterFn struct {
	idemdriver.Executor
	fnDone, release <-chan struct{}
	sent            atomic.Int64
}

func (a *afterFn) hold() {
	select {
	case <-a.fnDone:
		a.sent.Add(1)
		select {
		case <-a.release:
		case <-time.After(5 * time.Second):
		}
	default:
	}
}

func (a *afterFn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	a.hold()
	return a.Executor.Exec(ctx, q, args...)
}

func (a *afterFn) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	a.hold()
	return a.Executor.QueryRow(ctx, q, args...)
}

// deadlock makes a statement of the victim's transaction lose a deadlock
// against an opponent transaction that has written more rows, so that
// InnoDB rolls the victim back (it picks the lighter transaction) and
// PostgreSQL aborts it (the victim's shorter deadlock_timeout makes it the
// one that detects the cycle).
type deadlock struct {
	e        *env
	acct     string
	opponent chan error
}

const deadlockBallast = 40

func (e *env) newDeadlock() *deadlock {
	e.t.Helper()
	d := &deadlock{e: e, acct: "acct_" + uniqueSuffix(e.t), opponent: make(chan error, 1)}
	ctx := context.Background()
	if _, err := e.db.ExecContext(ctx, "CREATE TABLE "+d.acct+" (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _, _ = e.db.Exec("DROP TABLE " + d.acct) })
	for i := 1; i <= deadlockBallast; i++ {
		if _, err := e.db.ExecContext(ctx, e.q("INSERT INTO "+d.acct+" (id, n) VALUES (?, 0)"), i); err != nil {
			e.t.Fatal(err)
		}
	}
	return d
}

// lose runs, in the victim's transaction tx, the statements that lose the
// deadlock, and returns the losing statement's error.
func (d *deadlock) lose(ctx context.Context, tx testTx) error {
	e := d.e
	if e.dialect == "postgres" {
		if err := tx.Exec(ctx, "SET LOCAL deadlock_timeout = '200ms'"); err != nil {
			return err
		}
	}
	if err := tx.Exec(ctx, "UPDATE "+d.acct+" SET n = n + 1 WHERE id = 1"); err != nil {
		return err
	}
	victim := e.connID(ctx, tx)
	holds := make(chan struct{})
	// The opponent commits after the victim's statement fails, which may be
	// after the victim's context ended (an HTTP request's, when its
	// handler returned): it must not share that context.
	octx := context.WithoutCancel(ctx)
	go func() { d.opponent <- d.oppose(octx, victim, holds) }()
	select {
	case <-holds:
	case err := <-d.opponent:
		d.opponent <- err
		return fmt.Errorf("opponent failed: %w", err)
	}
	return tx.Exec(ctx, "UPDATE "+d.acct+" SET n = n + 1 WHERE id = 2")
}

func (d *deadlock) oppose(ctx context.Context, victim int64, holds chan<- struct{}) error {
	e := d.e
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if e.dialect == "postgres" {
		if _, err := tx.ExecContext(ctx, "SET LOCAL deadlock_timeout = '10s'"); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE "+d.acct+" SET n = n + 1 WHERE id >= 2"); err != nil {
		return err
	}
	close(holds)
	e.waitUntilBlocked(ctx, victim)
	if _, err := tx.ExecContext(ctx, "UPDATE "+d.acct+" SET n = n + 1 WHERE id = 1"); err != nil {
		return fmt.Errorf("the opponent lost the deadlock: %w", err)
	}
	return tx.Commit()
}

// wait returns the opponent's outcome: it must have won.
func (d *deadlock) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.opponent:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the opponent transaction did not finish")
	}
}

// duplicate starts, once claimed is closed, a duplicate call of key that
// waits behind the holder's claim; it reports its session id on id and
// closes committed after its commit.
func (e *env) duplicate(ctx context.Context, key string, runs *atomic.Int64, claimed <-chan struct{}, id chan<- int64, committed chan<- struct{}) <-chan waitOutcome {
	out := make(chan waitOutcome, 1)
	go func() {
		defer close(committed)
		<-claimed
		tx, err := e.begin(ctx, sql.LevelDefault)
		if err != nil {
			out <- waitOutcome{err: err}
			return
		}
		if id != nil {
			id <- e.connID(ctx, tx)
		}
		res, err := doIn(ctx, tx, key, e.charge(tx, key, 2, runs))
		if err == nil {
			err = tx.Commit(ctx)
		} else {
			_ = tx.Rollback(ctx)
		}
		out <- waitOutcome{res, err}
	}()
	return out
}

// afterDuplicate checks what must hold once the holder's transaction died
// and the duplicate won: the duplicate's row and effect survive, the holder
// was told to retry, and a retry replays the duplicate's result.
func (e *env) afterDuplicate(key string, holderErr error, dup waitOutcome, runs *atomic.Int64) {
	t := e.t
	t.Helper()
	if !errors.Is(holderErr, idemsql.ErrRetryable) {
		t.Errorf("holder: err = %v, want ErrRetryable", holderErr)
	}
	if errors.Is(holderErr, idemsql.ErrUnexpectedState) {
		t.Errorf("holder: err = %v matches ErrUnexpectedState", holderErr)
	}
	if dup.err != nil || dup.res.Replayed {
		t.Fatalf("duplicate: %+v %v, want a first execution", dup.res, dup.err)
	}
	if n := e.idemRows(key); n != 1 {
		t.Fatalf("%d idempotency rows for %q after the duplicate committed, want 1", n, key)
	}
	if st := e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", key); st != idemsql.StatusCompleted {
		t.Fatalf("status = %q", st)
	}
	if n := e.bizRows(key); n != 1 {
		t.Fatalf("%d business rows for %q, want 1", n, key)
	}
	again, err := e.run(context.Background(), sql.LevelDefault, key, e.insertBiz(key, 3, runs))
	if err != nil || !again.Replayed || again.Value != dup.res.Value {
		t.Fatalf("retry: %+v %v, want a replay of %+v", again, err, dup.res.Value)
	}
}

// fn's statement is the deadlock victim while a duplicate waits behind the
// claim. InnoDB rolls the holder back and the duplicate claims the key and
// commits; nothing the holder's Do sends afterwards may remove that row.
func testDeadlockVictimInFn(t *testing.T, e *env) {
	deadlockWhileDuplicateWaits(t, e, fnReturnsDeadlock)
}

// fn loses the deadlock too, but drops that error and fails for a reason of
// its own. Do cannot know that the transaction is gone and removes its
// claim; on MySQL that statement runs in autocommit, after the duplicate's
// commit. The claim token in its WHERE clause is what keeps it from
// deleting the duplicate's row.
func testDeadlockSwallowedThenFnFails(t *testing.T, e *env) {
	deadlockWhileDuplicateWaits(t, e, fnSwallowsThenFails)
}

// fn loses the deadlock, drops the error and returns a result. Storing it
// runs, on MySQL, in autocommit after the duplicate's commit, at the same
// attempt number as the duplicate's claim: the claim token is what keeps
// it from overwriting the duplicate's result with one whose effect never
// committed. On PostgreSQL the transaction is aborted and the write refused.
func testDeadlockSwallowedFnReturnsValue(t *testing.T, e *env) {
	deadlockWhileDuplicateWaits(t, e, fnSwallowsThenSucceeds)
}

var errValidation = errors.New("validation failed")

// What fn does once its statement lost the deadlock.
type afterDeadlock int

const (
	fnReturnsDeadlock      afterDeadlock = iota // returns the driver's error
	fnSwallowsThenFails                         // drops it, returns an error of its own
	fnSwallowsThenSucceeds                      // drops it, returns a result
)

func deadlockWhileDuplicateWaits(t *testing.T, e *env, then afterDeadlock) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := e.newDeadlock()
	var runs atomic.Int64
	const key = "dl-1"
	holder, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	claimed, fnDone, committed := make(chan struct{}), make(chan struct{}), make(chan struct{})
	dupID := make(chan int64, 1)
	dup := e.duplicate(ctx, key, &runs, claimed, dupID, committed)
	ex := &afterFn{Executor: executorOf(t, holder), fnDone: fnDone, release: committed}
	_, err = idemsql.Do(ctx, e.exStore(), idemdriver.Executor(ex), key, func(ctx context.Context) (invoice, error) {
		defer close(fnDone)
		if err := holder.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), key); err != nil {
			return invoice{}, err
		}
		close(claimed)
		e.waitUntilBlocked(ctx, <-dupID)
		lost := d.lose(ctx, holder)
		switch {
		case lost == nil:
			return invoice{}, errors.New("no deadlock happened")
		case then == fnSwallowsThenFails:
			return invoice{}, errValidation
		case then == fnSwallowsThenSucceeds:
			return invoice{Key: key, Amount: 1}, nil
		}
		return invoice{}, lost
	})
	_ = holder.Rollback(ctx)
	d.wait(t)
	switch then {
	case fnSwallowsThenSucceeds:
		// afterDuplicate wants ErrRetryable, and a retry replaying the
		// duplicate's result, not this one.
	case fnSwallowsThenFails:
		if !errors.Is(err, errValidation) {
			t.Errorf("holder: err = %v, want fn's error", err)
		}
		// MariaDB tells that the session left the transaction
		// (@@in_transaction): the call is retryable, and the claim's
		// removal is not sent.
		if e.mariaDB() && !errors.Is(err, idemsql.ErrRetryable) {
			t.Errorf("holder: err = %v, want ErrRetryable wrapping fn's error", err)
		}
		err = idemsql.ErrRetryable // what afterDuplicate checks of the holder's error does not apply
	default:
		if k := dialectOf(e.dialect).Classify(err); k != idemdriver.KindRetryable && k != idemdriver.KindTxEnded {
			t.Errorf("the deadlock is not reachable in the error (%v): %v", k, err)
		}
		if e.dialect == "mysql" && ex.sent.Load() != 0 {
			t.Errorf("Do sent %d statements after the deadlock ended the transaction", ex.sent.Load())
		}
	}
	e.afterDuplicate(key, err, <-dup, &runs)
}

// fn swallows the deadlock that ended its transaction and returns success
// with nothing to store (the struct{} result). The call must not report
// success that the commit then turns into nothing: on MySQL the session
// runs on in autocommit and COMMIT succeeds.
func testDeadlockSwallowedByFn(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := e.newDeadlock()
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var lost error
	_, err = doIn(ctx, tx, "dl-swallow", func(ctx context.Context) (struct{}, error) {
		lost = d.lose(ctx, tx)
		return struct{}{}, nil // the bug under test: the error is dropped
	})
	if lost == nil {
		t.Fatal("no deadlock happened")
	}
	if err == nil {
		if cerr := tx.Commit(ctx); cerr == nil {
			t.Fatal("Do reported success and the commit succeeded, but the claim died with the transaction")
		}
	} else if !errors.Is(err, idemsql.ErrRetryable) {
		t.Fatalf("err = %v, want ErrRetryable", err)
	}
	_ = tx.Rollback(ctx)
	d.wait(t)
	if n := e.idemRows("dl-swallow"); n != 0 {
		t.Fatalf("%d rows for a call whose transaction died", n)
	}
}

// The holder's connection is killed while fn runs and a duplicate waits.
// The server rolls the holder back; the duplicate wins. The holder's error
// says "retry", not "unexpected state": no row is in a strange state.
func testConnectionKilledInFn(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	const key = "kill-1"
	holder, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	claimed, committed := make(chan struct{}), make(chan struct{})
	dupID := make(chan int64, 1)
	dup := e.duplicate(ctx, key, &runs, claimed, dupID, committed)
	_, err = doIn(ctx, holder, key, func(ctx context.Context) (invoice, error) {
		if err := holder.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), key); err != nil {
			return invoice{}, err
		}
		self := e.connID(ctx, holder)
		close(claimed)
		e.waitUntilBlocked(ctx, <-dupID)
		if err := e.kill(self); err != nil {
			return invoice{}, fmt.Errorf("kill: %w", err)
		}
		<-committed // the duplicate claimed the key once the server rolled the holder back
		return invoice{}, holder.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), key)
	})
	_ = holder.Rollback(ctx)
	e.afterDuplicate(key, err, <-dup, &runs)
}

// SQLite: a context deadline interrupts fn's statement, which rolls the
// whole transaction back while database/sql still believes it open. A
// duplicate waiting for the write lock then claims the key and commits;
// nothing Do sends afterwards may delete that row.
func testInterruptedStatementInFn(t *testing.T, e *env) {
	var runs atomic.Int64
	const key = "intr-1"
	holder, err := e.begin(context.Background(), sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background())
	claimed, fnDone, committed := make(chan struct{}), make(chan struct{}), make(chan struct{})
	dup := e.duplicate(context.Background(), key, &runs, claimed, nil, committed)
	ex := &afterFn{Executor: executorOf(t, holder), fnDone: fnDone, release: committed}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = idemsql.Do(ctx, e.exStore(), idemdriver.Executor(ex), key, func(ctx context.Context) (invoice, error) {
		defer close(fnDone)
		if err := holder.Exec(ctx, "INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)", key); err != nil {
			return invoice{}, err
		}
		close(claimed)
		// Long enough to outlive the deadline by far.
		return invoice{}, holder.Exec(ctx, sqliteLongWrite(e.biz))
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
	_ = holder.Rollback(context.Background())
	o := <-dup
	if o.err != nil || o.res.Replayed {
		t.Fatalf("duplicate: %+v %v", o.res, o.err)
	}
	if n := e.idemRows(key); n != 1 {
		t.Fatalf("%d idempotency rows after the duplicate committed, want 1", n)
	}
	if n := e.bizRows(key); n != 1 {
		t.Fatalf("%d business rows, want 1", n)
	}
	if ex.sent.Load() != 0 {
		t.Errorf("Do sent %d statements after the interrupt", ex.sent.Load())
	}
	again, err := e.run(context.Background(), sql.LevelDefault, key, e.insertBiz(key, 3, &runs))
	if err != nil || !again.Replayed || again.Value != o.res.Value {
		t.Fatalf("retry: %+v %v, want a replay of %+v", again, err, o.res.Value)
	}
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "FaultsUnderLoad", run: testFaultsUnderLoad})
}

// Many clients call Run on a few hot keys while their transactions die
// under them: fn provokes deadlocks with other clients, connections are
// killed at random (PostgreSQL, MySQL), statements are interrupted by
// deadlines (SQLite). The business table has no unique key, so a second
// effect would show. Afterwards: at most one effect per key, every value a
// caller got is that effect's, the stored result is too, and nothing is
// left in progress.
func testFaultsUnderLoad(t *testing.T, e *env) {
	const (
		clients = 12
		rounds  = 40
		perKey  = 4 // clients racing on each key of a round
		acctIDs = 3
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	acct := "acct_" + uniqueSuffix(t)
	if _, err := e.db.ExecContext(ctx, "CREATE TABLE "+acct+" (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = e.db.Exec("DROP TABLE " + acct) })
	for i := 1; i <= acctIDs; i++ {
		if _, err := e.db.ExecContext(ctx, e.q("INSERT INTO "+acct+" (id, n) VALUES (?, 0)"), i); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	live := map[int64]bool{} // connections of running fns, for the killer
	got := map[string][]int64{}
	var amount, kills, fnErrs atomic.Int64
	errCount := map[string]int{}

	fn := func(key string) func(context.Context, testTx) (invoice, error) {
		return func(ctx context.Context, tx testTx) (invoice, error) {
			a := amount.Add(1)
			if e.dialect != "sqlite" {
				q := "SELECT CONNECTION_ID()"
				if e.dialect == "postgres" {
					q = "SELECT pg_backend_pid()"
				}
				id, err := tx.QueryInt(ctx, q)
				if err != nil {
					fnErrs.Add(1)
					return invoice{}, err
				}
				mu.Lock()
				live[id] = true
				mu.Unlock()
				defer func() { mu.Lock(); delete(live, id); mu.Unlock() }()
			}
			if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, a); err != nil {
				fnErrs.Add(1)
				return invoice{}, err
			}
			if e.dialect == "sqlite" && rand.IntN(4) == 0 {
				// A write far too long for its deadline: SQLite interrupts
				// it and rolls the whole transaction back. Half the time fn
				// drops the error and goes on, as a careless fn would.
				sctx, c := context.WithTimeout(ctx, time.Duration(1+rand.IntN(3))*time.Millisecond)
				err := tx.Exec(sctx, sqliteLongWrite(e.biz))
				c()
				if err != nil {
					fnErrs.Add(1)
					if rand.IntN(2) == 0 {
						return invoice{}, err
					}
				}
			}
			if rand.IntN(2) == 0 {
				// Two account rows in a random order: clients doing this at
				// the same time deadlock.
				x, y := 1+rand.IntN(acctIDs), 1+rand.IntN(acctIDs)
				for _, id := range []int{x, y} {
					if err := tx.Exec(ctx, e.q("UPDATE "+acct+" SET n = n + 1 WHERE id = ?"), id); err != nil {
						fnErrs.Add(1)
						return invoice{}, err
					}
					time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
				}
			}
			time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
			return invoice{Key: key, Amount: a}, nil
		}
	}

	done := make(chan struct{})
	var killer sync.WaitGroup
	if e.dialect != "sqlite" {
		killer.Add(1)
		go func() {
			defer killer.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(time.Duration(2+rand.IntN(8)) * time.Millisecond):
				}
				mu.Lock()
				var victim int64 = -1
				for id := range live {
					victim = id
					break
				}
				mu.Unlock()
				if victim >= 0 && e.kill(victim) == nil {
					kills.Add(1)
				}
			}
		}()
	}

	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				key := fmt.Sprintf("fault-%d-%d", i, c%(clients/perKey))
				res, err := e.runTx(ctx, key, fn(key), idemsql.Options{MaxAttempts: 50, Backoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
				mu.Lock()
				switch {
				case err == nil:
					got[key] = append(got[key], res.Value.Amount)
				case errors.Is(err, idemsql.ErrRetryable):
					errCount["retryable, attempts exhausted"]++
				case errors.Is(err, idemsql.ErrCommitUnknown):
					errCount["commit outcome unknown"]++
				case e.dialect == "sqlite" && errors.Is(err, context.DeadlineExceeded):
					errCount["fn's statement interrupted"]++
				default:
					t.Errorf("client %d, %s: %v", c, key, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(done)
	killer.Wait()
	// The killer picks a connection while its fn runs and may land the kill
	// after that connection went back to the pool: close every idle one, so
	// the checks below and the next test start on connections that live.
	e.db.SetMaxIdleConns(0)
	e.db.SetMaxIdleConns(2) // database/sql's default
	t.Logf("%d calls, %d executions of fn (%d failed on a statement), %d connections killed, errors returned: %v",
		clients*rounds, amount.Load(), fnErrs.Load(), kills.Load(), errCount)

	for k := range rounds * clients / perKey {
		key := fmt.Sprintf("fault-%d-%d", k/(clients/perKey), k%(clients/perKey))
		var effects []int64
		rows, err := e.db.QueryContext(ctx, e.q("SELECT amount FROM "+e.biz+" WHERE idem_key = ?"), key)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var a int64
			if err := rows.Scan(&a); err != nil {
				t.Fatal(err)
			}
			effects = append(effects, a)
		}
		rows.Close()
		switch {
		case len(effects) > 1:
			t.Errorf("%s: %d effects %v", key, len(effects), effects)
			continue
		case len(effects) == 0:
			if len(got[key]) > 0 || e.idemRows(key) != 0 {
				t.Errorf("%s: no effect, but %d callers got a value and %d rows exist", key, len(got[key]), e.idemRows(key))
			}
			continue
		}
		for _, v := range got[key] {
			if v != effects[0] {
				t.Errorf("%s: a caller got %d, the effect is %d", key, v, effects[0])
			}
		}
		if st := e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", key); st != idemsql.StatusCompleted {
			t.Errorf("%s: status %s", key, st)
		} else if stored := e.resultField(key, "amount"); stored != fmt.Sprint(effects[0]) {
			t.Errorf("%s: stored amount %s, the effect %d", key, stored, effects[0])
		}
	}
	if n := e.queryInt("SELECT COUNT(*) FROM " + e.table + " WHERE status = 'in_progress'"); n != 0 {
		t.Errorf("%d rows left in progress", n)
	}
}

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "RunAfterIdleConnectionKilled", only: "postgres", run: testRunAfterIdleConnectionKilled},
		conformanceCase{name: "RunAfterIdleConnectionKilled", only: "mysql", run: testRunAfterIdleConnectionKilled},
	)
}

// The server closes a pooled connection while it is idle (a restart, an
// idle timeout, an operator). Neither pgxpool nor pgx's stdlib notices
// before the next BEGIN is sent on it, and that BEGIN fails although
// nothing of the transaction was sent: Run retries it.
func testRunAfterIdleConnectionKilled(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := e.onePoolRun(t)
	var id int64
	res, err := run(ctx, "idle-1", func(ctx context.Context, tx testTx) (invoice, error) {
		id = e.connID(ctx, tx)
		return invoice{Amount: 1}, nil
	})
	if err != nil || res.Replayed {
		t.Fatalf("first: %+v %v", res, err)
	}
	if err := e.kill(id); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the server finish closing it
	res, err = run(ctx, "idle-2", func(ctx context.Context, tx testTx) (invoice, error) {
		if other := e.connID(ctx, tx); other == id {
			return invoice{}, fmt.Errorf("ran on the killed connection %d", id)
		}
		return invoice{Amount: 2}, nil
	})
	if err != nil || res.Replayed || res.Value.Amount != 2 {
		t.Fatalf("Run on a pool whose only connection was killed: %+v %v", res, err)
	}
}

// onePoolRun is e.runTx over a pool of its own with a single connection, so
// that the next transaction reuses the last one's connection.
func (e *env) onePoolRun(t *testing.T) func(ctx context.Context, key string, fn func(context.Context, testTx) (invoice, error)) (idemsql.Result[invoice], error) {
	switch e.backend {
	case "postgres-pgx":
		cfg, err := pgxpool.ParseConfig(postgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = 1
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		pg := storeOn(e, idempostgres.New(pool))
		return func(ctx context.Context, key string, fn func(context.Context, testTx) (invoice, error)) (idemsql.Result[invoice], error) {
			return idemsql.Run(ctx, pg, key, func(ctx context.Context, tx pgx.Tx) (invoice, error) {
				return fn(ctx, pgxTestTx{tx: tx, store: pg})
			})
		}
	}
	driver, dsn := "mysql", mysqlDSN(t)
	if e.dialect == "postgres" {
		driver, dsn = "pgx", postgresDSN(t)
	} else if e.backend == "galera" {
		dsn = galeraDSNs(t)[0]
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	store := storeOn(e, sqlDriver(e.dialect, db))
	return func(ctx context.Context, key string, fn func(context.Context, testTx) (invoice, error)) (idemsql.Result[invoice], error) {
		return idemsql.Run(ctx, store, key, func(ctx context.Context, tx *sql.Tx) (invoice, error) {
			return fn(ctx, sqlTestTx{tx: tx, store: store})
		})
	}
}
