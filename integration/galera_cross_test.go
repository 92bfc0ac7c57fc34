package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/idemsql/idemsql/idemsql"
)

// The tests below spread their callers over the three nodes of a Galera
// cluster. Nodes do not wait for each other's locks: two nodes can both
// claim a key locally; the write set certified first wins, and the other
// transaction is aborted with 1213, at its next statement (brute-force
// abort) or at COMMIT (certification failure). After that abort the
// session runs later statements in autocommit.

// galeraCluster is one test's tables, reached through every node of the
// cluster. nodes[i] works on node i+1; all share the idempotency table,
// the business table (no unique key on idem_key, so a second effect shows
// as a second row) and the store. check reads on node 1 with
// wsrep_sync_wait, so it sees every commit the cluster made before the read.
type galeraCluster struct {
	nodes []*leaseEnv
	check *leaseEnv
	runs  atomic.Int64 // executions of the business function
	errs  errTally
}

func newGaleraCluster(t *testing.T) *galeraCluster {
	dsns := galeraDSNs(t)
	first := setupMySQLAt(t, dsns[0])
	c := &galeraCluster{}
	for i, dsn := range dsns {
		e := first
		if i > 0 {
			e = &env{t: t, dialect: "mysql", db: openMySQL(t, dsn), table: first.table, biz: first.biz, store: first.store}
			useSQL(e)
			// The tables were created on node 1; DDL runs in the same
			// total order on every node, but each applies it on its own
			// time.
			syncRead(t, e.db, "SELECT COUNT(*) FROM "+e.table+" JOIN "+e.biz+" ON FALSE")
		}
		c.nodes = append(c.nodes, &leaseEnv{env: e, backend: "galera", dsn: dsn, ops: opsFor(e.store)})
	}
	check := *first
	check.db = openMySQL(t, withParam(t, dsns[0], "wsrep_sync_wait", "1"))
	c.check = &leaseEnv{env: &check, backend: "galera", dsn: dsns[0]}
	before := c.conflicts(t)
	t.Cleanup(func() {
		if s := c.errs.String(); s != "" {
			t.Logf("errors seen, by where they surfaced:\n%s", s)
		}
		after := c.conflicts(t)
		for i := range after {
			after[i][0] -= before[i][0]
			after[i][1] -= before[i][1]
		}
		t.Logf("certification failures and brute-force aborts on nodes 1-3 during the test: %v", after)
	})
	return c
}

// conflicts reads each node's wsrep_local_cert_failures and
// wsrep_local_bf_aborts: how many local transactions lost to another
// node's write set, at commit and before it.
func (c *galeraCluster) conflicts(t *testing.T) [][2]int64 {
	out := make([][2]int64, len(c.nodes))
	for i, n := range c.nodes {
		rows, err := n.db.Query("SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_cert_failures', 'wsrep_local_bf_aborts')")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name string
			var v int64
			if err := rows.Scan(&name, &v); err != nil {
				t.Fatal(err)
			}
			if name == "wsrep_local_cert_failures" {
				out[i][0] = v
			} else {
				out[i][1] = v
			}
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// withParam sets a DSN parameter; go-sql-driver sends unknown ones as
// session variables when it connects.
func withParam(t *testing.T, dsn, name, value string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params[name] = value
	return cfg.FormatDSN()
}

// syncRead runs a read on a connection of db that first waits until its
// node has applied everything the cluster committed before it.
func syncRead(t *testing.T, db *sql.DB, query string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n int64
	for _, q := range []string{"SET SESSION wsrep_sync_wait = 1", query, "SET SESSION wsrep_sync_wait = 0"} {
		if q == query {
			err = conn.QueryRowContext(ctx, q).Scan(&n)
		} else {
			_, err = conn.ExecContext(ctx, q)
		}
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// errTally counts errors by where they surfaced and the server's error
// number: the tests' log shows at which statement a losing node was told.
type errTally struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *errTally) add(where string, err error) {
	what := "-"
	var me *mysql.MySQLError
	var ie *idemsql.Error
	switch {
	case errors.As(err, &me):
		what = "error " + strconv.Itoa(int(me.Number))
	case errors.As(err, &ie):
		what = ie.Kind.Error()
	case err != nil:
		what = err.Error()
	}
	if errors.As(err, &ie) && ie.Op != "" {
		where += " (" + ie.Op + ")"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[where+": "+what]++
}

func (c *errTally) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines := make([]string, 0, len(c.n))
	for k, n := range c.n {
		lines = append(lines, fmt.Sprintf("  %s ×%d", k, n))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// business is fn of the atomic-mode tests: after a moment, in which another
// node's write set may arrive and abort the transaction, it inserts the
// key's business row with amount, a value no other call uses.
func (c *galeraCluster) business(node *leaseEnv, key string, amount int64) bizFunc {
	insert := node.insertBiz(key, amount, &c.runs)
	return func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		v, err := insert(ctx, exec)
		if err != nil {
			c.errs.add("fn: business INSERT", err)
		}
		return v, err
	}
}

// bizAmounts reads the amounts of a key's business rows.
func (e *env) bizAmounts(key string) []int64 {
	e.t.Helper()
	rows, err := e.db.Query("SELECT amount FROM "+e.biz+" WHERE idem_key = ? ORDER BY id", key)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var amounts []int64
	for rows.Next() {
		var a int64
		if err := rows.Scan(&a); err != nil {
			e.t.Fatal(err)
		}
		amounts = append(amounts, a)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return amounts
}

const (
	hotClientsPerNode = 4
	hotCallsPerClient = 25
	hotKeyCount       = 15
	hotAttempts       = 20
)

// hotCall is one guarded call on node: fn inserts the key's business row
// with amount.
type hotCall func(ctx context.Context, node *leaseEnv, key string, amount int64) (idemsql.Result[invoice], error)

// hotKeys has clients on every node call with the same few keys at the same
// moments, then checks that each key's effect happened at most once and
// that every caller got that effect's value. Retryable errors left after
// the retries ran out are counted, not failures; any other error is one.
func (c *galeraCluster) hotKeys(t *testing.T, call hotCall) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var amounts, retryable atomic.Int64
	var mu sync.Mutex
	got := map[string][]idemsql.Result[invoice]{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 3 * hotClientsPerNode {
		node := c.nodes[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for j := range hotCallsPerClient {
				key := fmt.Sprintf("hot-%02d", j%hotKeyCount)
				res, err := call(ctx, node, key, amounts.Add(1))
				switch {
				case err == nil:
					mu.Lock()
					got[key] = append(got[key], res)
					mu.Unlock()
				case node.retryable(err):
					retryable.Add(1)
					c.errs.add("returned to the caller", err)
				default:
					t.Errorf("client %d on node %d, key %s: %v", i, i%3+1, key, err)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	t.Logf("%d calls, fn ran %d times, %d calls gave up with a retryable error",
		amounts.Load(), c.runs.Load(), retryable.Load())

	for k := range hotKeyCount {
		key := fmt.Sprintf("hot-%02d", k)
		c.checkOnce(t, key, got[key])
	}
	if n := c.check.queryInt("SELECT COUNT(*) FROM " + c.check.table + " WHERE status = 'in_progress'"); n != 0 {
		t.Errorf("%d rows left in_progress", n)
	}
}

// checkOnce checks that key's effect happened at most once, and that the
// callers and the stored result all have its value.
func (c *galeraCluster) checkOnce(t *testing.T, key string, got []idemsql.Result[invoice]) {
	t.Helper()
	fresh := 0
	for _, r := range got {
		if !r.Replayed {
			fresh++
		}
	}
	amounts := c.check.bizAmounts(key)
	idem := c.check.idemRows(key)
	switch {
	case len(amounts) > 1:
		t.Errorf("key %s: %d business rows (amounts %v): the effect happened more than once; %d callers saw a first execution",
			key, len(amounts), amounts, fresh)
		return
	case len(amounts) == 0:
		if len(got) > 0 || idem != 0 {
			t.Errorf("key %s: no business row, but %d callers got a value and %d idempotency rows exist", key, len(got), idem)
		}
		return
	case idem != 1:
		t.Errorf("key %s: a business row but %d idempotency rows", key, idem)
		return
	}
	want := amounts[0]
	for _, r := range got {
		if r.Value.Amount != want {
			t.Errorf("key %s: a caller got amount %d (replayed=%v), the business row has %d", key, r.Value.Amount, r.Replayed, want)
		}
	}
	if fresh > 1 {
		t.Errorf("key %s: %d callers saw a first execution", key, fresh)
	}
	if st := c.check.queryString("SELECT status FROM "+c.check.table+" WHERE idem_key = ?", key); st != idemsql.StatusCompleted {
		t.Errorf("key %s: status %s", key, st)
		return
	}
	if stored := c.check.resultField(key, "amount"); stored != strconv.FormatInt(want, 10) {
		t.Errorf("key %s: stored result has amount %s, the business row %d", key, stored, want)
	}
}

// Atomic mode, Run: clients on three nodes call with the same hot keys.
func TestGaleraRunHotKeys(t *testing.T) {
	c := newGaleraCluster(t)
	c.hotKeys(t, func(ctx context.Context, node *leaseEnv, key string, amount int64) (idemsql.Result[invoice], error) {
		return node.run(ctx, sql.LevelDefault, key, c.business(node, key, amount),
			idemsql.Options{MaxAttempts: hotAttempts, Backoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	})
}

// Atomic mode, Do in the caller's own transaction, retried by the caller
// on a retryable error.
func TestGaleraDoHotKeys(t *testing.T) {
	c := newGaleraCluster(t)
	c.hotKeys(t, c.doWithRetry)
}

// doWithRetry is a caller with a transaction of its own: begin, Do, commit;
// on a retryable error roll back and begin again. It notes where each error
// surfaced.
func (c *galeraCluster) doWithRetry(ctx context.Context, node *leaseEnv, key string, amount int64) (idemsql.Result[invoice], error) {
	for attempt := 1; ; attempt++ {
		tx, err := node.begin(ctx, sql.LevelDefault)
		if err != nil {
			return idemsql.Result[invoice]{}, err
		}
		biz := c.business(node, key, amount)
		var fnErr error
		res, err := doIn(ctx, tx, key, func(ctx context.Context) (invoice, error) {
			v, err := biz(ctx, tx.Exec)
			fnErr = err
			return v, err
		})
		switch {
		case err == nil:
			if err = tx.Commit(ctx); err != nil {
				c.errs.add("COMMIT", err)
			}
		case fnErr != nil:
			// Do has cleaned up after fn; is the session still in the
			// transaction it began?
			if n, qerr := tx.QueryInt(ctx, "SELECT @@in_transaction"); qerr == nil {
				c.errs.add(fmt.Sprintf("after fn's error, @@in_transaction = %d", n), nil)
			}
			_ = tx.Rollback(ctx)
		default:
			c.errs.add("Do", err)
			_ = tx.Rollback(ctx)
		}
		if err == nil {
			return res, nil
		}
		if !node.retryable(err) || attempt >= hotAttempts {
			return res, err
		}
		time.Sleep(time.Duration(rand.IntN(attempt*2000)) * time.Microsecond)
	}
}

// Lease mode: a claim whose holder died, and contenders on three nodes at
// once. Exactly one runs the external call; the others replay its result
// or are told it is in progress.
func TestGaleraLeaseTakeOverOneWinner(t *testing.T) {
	c := newGaleraCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const perNode = 4
	for round := range 5 {
		key := fmt.Sprintf("stale-%d", round)
		c.nodes[round%3].staleClaim(t, key)
		time.Sleep(60 * time.Millisecond)

		var calls atomic.Int64
		type outcome struct {
			res idemsql.Result[receipt]
			err error
		}
		outcomes := make([]outcome, 3*perNode)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range outcomes {
			node := c.nodes[i%3]
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := node.ops.do(ctx, key, external(fmt.Sprintf("contender %d on node %d", i, i%3+1), &calls))
				outcomes[i] = outcome{res, err}
			}()
		}
		close(start)
		wg.Wait()

		var winner *idemsql.Result[receipt]
		for i, o := range outcomes {
			switch {
			case o.err == nil && !o.res.Replayed:
				if winner != nil {
					t.Errorf("round %d: %q and %q both ran", round, winner.Value.By, o.res.Value.By)
				}
				winner = &outcomes[i].res
			case o.err == nil, errors.Is(o.err, idemsql.ErrInProgress):
			default:
				c.errs.add("RunExternal", o.err)
				t.Errorf("round %d, contender %d: %v", round, i, o.err)
			}
		}
		if n := calls.Load(); n != 1 || winner == nil {
			t.Fatalf("round %d: the external call ran %d times (winner %v)", round, n, winner)
		}
		for i, o := range outcomes {
			if o.err == nil && o.res.Replayed && o.res.Value != winner.Value {
				t.Errorf("round %d, contender %d replayed %+v, the winner got %+v", round, i, o.res.Value, winner.Value)
			}
		}
		if winner.Value.Attempt != 2 {
			t.Errorf("round %d: winner at attempt %d, want 2", round, winner.Value.Attempt)
		}
		c.check.wantRow(t, key, idemsql.StatusCompleted, 2, winner.Value.By)
	}
}

// Lease mode: A claims on node 1 and stalls past its lease; B takes over on
// another node and completes. A's late writes record nothing.
func TestGaleraFencedHolderRecordsNothing(t *testing.T) {
	c := newGaleraCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := c.nodes[0]
	for round := range 4 {
		key := fmt.Sprintf("fence-%d", round)
		b := c.nodes[1+round%2]
		claim, err := a.ops.claim(ctx, key, idemsql.Options{Lease: 50 * time.Millisecond})
		if err != nil || !claim.Held {
			t.Fatalf("round %d: A's claim: %+v, %v", round, claim, err)
		}
		time.Sleep(100 * time.Millisecond)

		var calls atomic.Int64
		res, err := b.ops.do(ctx, key, external("B", &calls))
		if err != nil || res.Replayed || res.Value.Attempt != 2 || calls.Load() != 1 {
			t.Fatalf("round %d: B's takeover: %+v, %v, %d calls", round, res, err, calls.Load())
		}
		l := claim
		for _, w := range []struct {
			what  string
			write func() error
		}{
			{"completion", func() error { return l.Complete(ctx, receipt{By: "A"}) }},
			{"renewal", func() error { return l.Renew(ctx) }},
			{"failure", func() error { return l.Fail(ctx, "declined", "by A") }},
			{"release", func() error { return l.Release(ctx) }},
		} {
			if err := w.write(); !errors.Is(err, idemsql.ErrLeaseLost) {
				c.errs.add("A's "+w.what, err)
				t.Errorf("round %d: A's %s after B completed: %v, want ErrLeaseLost", round, w.what, err)
			}
		}
		c.check.wantRow(t, key, idemsql.StatusCompleted, 2, "B")
	}
}

// Sweep (no handler: stale claims are abandoned) and Purge, each from two
// nodes at once, on a table holding stale claims, a live lease and expired
// outcomes: every stale claim is resolved once, every expired row deleted
// once, the live lease left alone.
func TestGaleraSweepAndPurgeFromTwoNodes(t *testing.T) {
	c := newGaleraCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const stale, expired = 40, 600
	for i := range stale {
		c.nodes[i%3].staleClaim(t, fmt.Sprintf("stale-%02d", i))
	}
	live, err := c.nodes[2].ops.claim(ctx, "live", idemsql.Options{Lease: 30 * time.Second})
	if err != nil || !live.Held {
		t.Fatalf("live claim: %+v, %v", live, err)
	}
	c.nodes[0].insertCompleted(t, "old-", expired)
	c.nodes[0].expirePrefix(t, "old-")
	time.Sleep(60 * time.Millisecond)

	var found, abandoned, deleted atomic.Int64
	var byNode [3][2]atomic.Int64 // stale claims found, rows deleted
	// Each worker goes on until a pass of its own finds nothing: a pass
	// ends early on a row another node holds.
	sweeper := func(node *leaseEnv, i int) {
		for range 50 {
			st, err := node.ops.sweep(ctx, nil, idemsql.Options{BatchSize: 5})
			found.Add(int64(st.Found))
			byNode[i][0].Add(int64(st.Found))
			abandoned.Add(int64(st.Abandoned))
			switch {
			case err != nil && node.retryable(err):
				c.errs.add("Sweep", err)
			case err != nil:
				t.Errorf("sweep: %+v, %v", st, err)
				return
			case st.Found == 0:
				return
			}
		}
		t.Error("sweeper did not finish")
	}
	purger := func(node *leaseEnv, i int) {
		for range 50 {
			st, err := node.ops.purge(ctx, idemsql.Options{BatchSize: 20})
			deleted.Add(st.Deleted)
			byNode[i][1].Add(st.Deleted)
			switch {
			case err != nil && node.retryable(err):
				c.errs.add("Purge", err)
			case err != nil:
				t.Errorf("purge: %+v, %v", st, err)
				return
			case st.Deleted == 0:
				return
			}
		}
		t.Error("purger did not finish")
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, work := range []func(){
		func() { sweeper(c.nodes[0], 0) }, func() { sweeper(c.nodes[1], 1) },
		func() { purger(c.nodes[1], 1) }, func() { purger(c.nodes[2], 2) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); <-start; work() }()
	}
	close(start)
	wg.Wait()
	t.Logf("stale claims found by the sweepers on nodes 1 and 2: %d, %d; rows deleted by the purgers on nodes 2 and 3: %d, %d",
		byNode[0][0].Load(), byNode[1][0].Load(), byNode[1][1].Load(), byNode[2][1].Load())

	if n := found.Load(); n != stale || abandoned.Load() != stale {
		t.Errorf("sweepers found %d and abandoned %d stale claims, want %d", n, abandoned.Load(), stale)
	}
	if n := c.check.queryInt("SELECT COUNT(*) FROM "+c.check.table+" WHERE idem_key LIKE 'stale-%' AND status = ? AND error_class = ? AND attempt = 2",
		idemsql.StatusFailed, idemsql.AbandonedClass); n != stale {
		t.Errorf("%d of %d stale claims ended abandoned at attempt 2", n, stale)
	}
	if n := deleted.Load(); n != expired {
		t.Errorf("purgers deleted %d rows, want %d", n, expired)
	}
	if n := c.check.queryInt("SELECT COUNT(*) FROM " + c.check.table + " WHERE idem_key LIKE 'old-%'"); n != 0 {
		t.Errorf("%d expired rows left", n)
	}
	c.check.wantRow(t, "live", idemsql.StatusInProgress, 1, "")
	if err := live.Complete(ctx, receipt{By: "live"}); err != nil {
		t.Errorf("live holder after the sweeps: %v", err)
	}
}
