package integration

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	leaseCases = append(leaseCases,
		leaseCase{"SweepScanSkipsReleasedClaims", testSweepScanBounded},
		leaseCase{"TakeOverWhileASweepBatchIsOpen", testTakeOverDuringSweepBatch},
		leaseCase{"CommittedClaimWithoutLease", testLeaseCommittedWithoutLease},
		leaseCase{"SweepHandlerResolvesReleasedClaims", testSweepHandlerResolvesReleased},
		leaseCase{"ResultTypeChecked", testLeaseResultTypeChecked},
	)
}

// releaseMany leaves n claims released by their holders, as fn's errors do,
// prefix followed by a number.
func (e *leaseEnv) releaseMany(t *testing.T, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	keys := make(chan string, n)
	for i := range n {
		keys <- fmt.Sprintf("%s%04d", prefix, i)
	}
	close(keys)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range keys {
				c, err := e.ops.claim(ctx, key, idemsql.Options{Lease: time.Minute})
				if err == nil && c.Held {
					err = c.Release(ctx)
				}
				if err != nil {
					t.Errorf("release %s: %v", key, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// work counts, per backend, what a transaction read: PostgreSQL's rows
// fetched from the table (pg_stat_xact_user_tables, the transaction's own
// counters), MariaDB's index entries read (Handler_read_next, the session's
// counter, read at BEGIN and before COMMIT), SQLite's pages read from its
// cache or from disk (the connection's counters). Timings would say the
// same, but not deterministically.
type work struct {
	e     *leaseEnv
	mu    sync.Mutex
	start map[hookConn]int64
	most  int64 // the largest count of one transaction
}

func (w *work) read(ctx context.Context, c hookConn) int64 {
	switch w.e.dialect {
	case "postgres":
		n, err := c.queryInt(ctx, "SELECT COALESCE(idx_tup_fetch, 0) + COALESCE(seq_tup_read, 0) FROM pg_stat_xact_user_tables WHERE relname = $1", w.e.table)
		if err != nil {
			w.e.t.Errorf("pg_stat_xact_user_tables: %v", err)
		}
		return n
	case "mysql":
		n, err := c.queryInt(ctx, "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'HANDLER_READ_NEXT'")
		if err != nil {
			w.e.t.Errorf("Handler_read_next: %v", err)
		}
		return n
	}
	return sqlitePagesRead(w.e.t, c.driverConn())
}

// sqlitePagesRead is the connection's count of pages read from SQLite's
// cache or from disk: modernc.org/sqlite's conn.Status with
// SQLITE_DBSTATUS_CACHE_HIT (7) and _CACHE_MISS (8), called by reflection,
// as that package is not a direct dependency of this module.
func sqlitePagesRead(t *testing.T, conn driver.Conn) int64 {
	m := reflect.ValueOf(conn).MethodByName("Status")
	if !m.IsValid() {
		t.Errorf("the SQLite connection %T has no Status method", conn)
		return 0
	}
	var n int64
	for _, op := range []int64{7, 8} {
		arg := reflect.New(m.Type().In(0)).Elem()
		arg.SetInt(op)
		out := m.Call([]reflect.Value{arg, reflect.ValueOf(false)})
		if err, _ := out[2].Interface().(error); err != nil {
			t.Errorf("Status(%d): %v", op, err)
		}
		n += out[0].Int()
	}
	return n
}

func (w *work) hooks() *hooks {
	return &hooks{
		began: func(ctx context.Context, c hookConn) {
			if w.e.dialect == "postgres" {
				return // the transaction's counters start at zero
			}
			n := w.read(ctx, c)
			w.mu.Lock()
			w.start[c] = n
			w.mu.Unlock()
		},
		commit: func(ctx context.Context, c hookConn) error {
			n := w.read(ctx, c)
			w.mu.Lock()
			defer w.mu.Unlock()
			w.most = max(w.most, n-w.start[c])
			return nil
		},
	}
}

// A sweep without a handler must not walk the claims released by their
// holders (fn's errors): they are left to callers until their retention
// runs out, and there may be many (a downstream outage releases one per
// call). On PostgreSQL the scan was only filtered by clock_timestamp(), a
// volatile function, so it walked every released row at the head of the
// lease index, once per row of a batch; on MySQL it also locked them.
func testSweepScanBounded(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	const released, stale = 300, 5
	e.releaseMany(t, "released-", released)
	for i := range stale {
		e.staleClaim(t, fmt.Sprintf("stale-%d", i))
	}
	time.Sleep(60 * time.Millisecond)
	if e.dialect == "postgres" {
		if _, err := e.db.Exec("ANALYZE " + e.table); err != nil {
			t.Fatal(err)
		}
	}
	w := &work{e: e, start: map[hookConn]int64{}}
	ops := e.hookedOps(t, w.hooks())
	st, err := ops.sweep(ctx, nil, idemsql.Options{BatchSize: stale})
	if err != nil || st.Found != stale || st.Abandoned != stale {
		t.Fatalf("sweep: %+v, %v; want the %d stale claims abandoned", st, err, stale)
	}
	limit := int64(released / 3)
	if e.dialect == "sqlite" {
		limit = released // pages: a handful per row found
	}
	if w.most > limit {
		t.Fatalf("a sweep transaction read %d (rows, index entries or pages) to find %d stale claims among %d released ones; want at most %d",
			w.most, stale, released, limit)
	}
	t.Logf("the busiest sweep transaction read %d", w.most)
	if n := e.queryInt("SELECT COUNT(*) FROM " + e.table + " WHERE status = 'in_progress' AND error_class = 'released'"); n != released {
		t.Fatalf("%d released claims left, want %d", n, released)
	}
}

// While a sweep's batch is open, a caller takes over a claim released by its
// holder, and a live holder renews: the batch must hold neither. On MySQL
// under REPEATABLE READ the sweep's scan locked every released row it
// passed, and the caller's SKIP LOCKED takeover answered ErrInProgress; a
// locking range scan, even under READ COMMITTED, also keeps the entry that
// ends the range locked (the next lease to run out, or a released claim).
func testTakeOverDuringSweepBatch(t *testing.T, e *leaseEnv) {
	if e.dialect == "sqlite" {
		t.Skip("SQLite has one writer: a batch holds it")
	}
	ctx := context.Background()
	c, err := e.ops.claim(ctx, "retry-me", idemsql.Options{Lease: time.Minute})
	if err != nil || !c.Held {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	if err := c.Release(ctx); err != nil { // released before any lease below ran out
		t.Fatal(err)
	}
	live, err := e.ops.claim(ctx, "live", idemsql.Options{Lease: time.Minute}) // the next lease to run out
	if err != nil || !live.Held {
		t.Fatalf("claim: %+v, %v", live, err)
	}
	for i := range 3 {
		e.staleClaim(t, fmt.Sprintf("dead-%d", i))
	}
	time.Sleep(60 * time.Millisecond)
	g := newGate()
	ops := e.hookedOps(t, &hooks{commit: g.hold})
	done := make(chan error, 1)
	go func() {
		_, err := ops.sweep(ctx, nil, idemsql.Options{BatchSize: 10})
		done <- err
	}()
	select {
	case <-g.reached:
	case err := <-done:
		t.Fatalf("the sweep ended before its batch committed: %v", err)
	}
	renewed := make(chan error, 1)
	go func() { renewed <- live.Renew(ctx) }()
	select {
	case err := <-renewed:
		if err != nil {
			close(g.open)
			t.Fatalf("a live holder's renewal while a sweep batch is open: %v", err)
		}
	case <-time.After(10 * time.Second):
		close(g.open)
		t.Fatal("a live holder's renewal waited for an open sweep batch")
	}
	var calls atomic.Int64
	type outcome struct {
		res idemsql.Result[receipt]
		err error
	}
	retried := make(chan outcome, 1)
	go func() {
		res, err := e.ops.do(ctx, "retry-me", external("retry", &calls))
		retried <- outcome{res, err}
	}()
	var o outcome
	select {
	case o = <-retried:
	case <-time.After(10 * time.Second):
		close(g.open)
		t.Fatal("a caller's retry of a released claim waited for an open sweep batch")
	}
	close(g.open)
	if o.err != nil || o.res.Value.Attempt != 2 {
		t.Fatalf("a caller's retry of a released claim while a sweep batch is open: %+v, %v; want a takeover", o.res, o.err)
	}
	if err := <-done; err != nil {
		t.Fatalf("sweep: %v", err)
	}
}

// insertUnleased inserts, as an atomic-mode claim that committed without an
// outcome leaves it, an in_progress row without a lease.
func (e *leaseEnv) insertUnleased(t *testing.T, key, owner string) {
	t.Helper()
	now, later := e.secondsAgo(0), e.secondsAgo(-3600)
	q := "INSERT INTO " + e.table + " (idem_key, status, attempt, owner, created_at, updated_at, expires_at) VALUES (?, 'in_progress', 1, ?, " +
		now + ", " + now + ", " + later + ")"
	if _, err := e.db.Exec(e.q(q), key, owner); err != nil {
		t.Fatalf("insert: %v", err)
	}
}

// A committed in_progress row without a lease is an atomic-mode claim whose
// transaction committed without an outcome. Lease mode must neither wait
// for it for ever (ErrInProgress) nor run fn over it: callers get
// ErrAbandoned, and Sweep resolves it, with or without a handler. A claim
// of an atomic-mode transaction that is still running is never touched.
func testLeaseCommittedWithoutLease(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var calls atomic.Int64
	e.insertUnleased(t, "unleased-1", "atomic/1")
	_, err := e.ops.do(ctx, "unleased-1", external("x", &calls))
	if !errors.Is(err, idemsql.ErrAbandoned) || errors.Is(err, idemsql.ErrInProgress) {
		t.Fatalf("RunExternal on a claim committed without a lease: %v, want ErrAbandoned", err)
	}
	oneClass(t, err)
	if _, err := e.ops.claim(ctx, "unleased-1"); !errors.Is(err, idemsql.ErrAbandoned) {
		t.Fatalf("ClaimLease on a claim committed without a lease: %v, want ErrAbandoned", err)
	}
	st, err := e.ops.sweep(ctx, nil)
	if err != nil || st.Found != 1 || st.Abandoned != 1 {
		t.Fatalf("sweep without a handler: %+v, %v", st, err)
	}
	var fe *idemsql.Error
	if _, err := e.ops.do(ctx, "unleased-1", external("x", &calls)); !errors.As(err, &fe) || fe.Class != idemsql.AbandonedClass {
		t.Fatalf("after the sweep: %v, want the abandoned failure", err)
	}

	e.insertUnleased(t, "unleased-2", "atomic/2")
	var got idemsql.Stale
	st, err = e.ops.sweep(ctx, func(_ context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
		got = s
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: receipt{By: "sweeper", Attempt: s.Attempt}}, nil
	})
	if err != nil || st.Found != 1 || st.Completed != 1 {
		t.Fatalf("sweep with a handler: %+v, %v", st, err)
	}
	if got.Reason != idemsql.StaleNoLease || got.PreviousOwner != "atomic/2" || got.Attempt != 2 {
		t.Fatalf("the handler got %+v, want a claim without a lease of atomic/2", got)
	}
	if res, err := e.ops.do(ctx, "unleased-2", external("x", &calls)); err != nil || !res.Replayed || res.Value.By != "sweeper" {
		t.Fatalf("after the handler completed it: %+v, %v", res, err)
	}
	if calls.Load() != 0 {
		t.Fatalf("fn ran %d times", calls.Load())
	}

	if e.dialect == "sqlite" {
		return // one writer: no sweep runs while an atomic claim is open
	}
	// An atomic-mode claim in a transaction still running: invisible to the
	// sweep (PostgreSQL) or locked by its transaction and skipped (MySQL).
	tx, err := e.begin(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = doIn(ctx, tx, "atomic-live", func(context.Context) (int, error) {
		for _, h := range []idemsql.SweepHandler{nil, func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
			return idemsql.Resolution{Outcome: idemsql.ResolveAbandoned, Message: "touched a live claim"}, nil
		}} {
			if st, err := e.ops.sweep(sctx, h); err != nil || st.Found != 0 {
				return 0, fmt.Errorf("sweep while an atomic claim is open: %+v, %w", st, err)
			}
		}
		return 7, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if s := e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", "atomic-live"); s != idemsql.StatusCompleted {
		t.Fatalf("the atomic claim ended %s", s)
	}
}

// A claim released by its holder (fn failed: a time-out after the charge)
// is its caller's to retry: a sweep leaves it alone, with a handler too.
// One whose caller never retries stays in_progress until its retention
// runs out; a sweep asked to reconcile (Options.SweepReleased) hands it to
// its handler at once, saying why. A handler that answers "release" for it
// hands it back as its holder left it: attempt, owner and reason stay.
func testSweepHandlerResolvesReleased(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var ds string
	timeout := errors.New("read timeout from the payment API")
	failing := func(_ context.Context, l idemsql.Claim) (receipt, error) {
		ds = l.DownstreamKey
		return receipt{}, timeout
	}
	if _, err := e.ops.do(ctx, "charged-1", failing); err != timeout {
		t.Fatal(err)
	}
	asked := 0
	complete := func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
		asked++
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: receipt{By: "too early"}}, nil
	}
	for _, h := range []idemsql.SweepHandler{nil, complete} {
		if st, err := e.ops.sweep(ctx, h); err != nil || st.Found != 0 {
			t.Fatalf("sweep (handler %v): %+v, %v; want the released claim left to callers", h != nil, st, err)
		}
	}
	if asked != 0 {
		t.Fatalf("a sweep without SweepReleased asked its handler about a released claim")
	}
	if _, err := e.ops.sweep(ctx, nil, idemsql.Options{SweepReleased: true}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("SweepReleased without a handler: %v, want ErrInvalidOption", err)
	}
	var got idemsql.Stale
	st, err := e.ops.sweep(ctx, func(_ context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
		got = s
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: receipt{By: "reconciled", Downstream: s.DownstreamKey}}, nil
	}, idemsql.Options{SweepReleased: true})
	if err != nil || st.Found != 1 || st.Completed != 1 {
		t.Fatalf("sweep with a handler that reconciles: %+v, %v; want the released claim resolved", st, err)
	}
	if got.Reason != idemsql.StaleReleased || got.DownstreamKey != ds || got.Message != "fn failed: "+timeout.Error() {
		t.Fatalf("the handler got %+v; want a released claim with downstream key %q and fn's error", got, ds)
	}
	var calls atomic.Int64
	if res, err := e.ops.do(ctx, "charged-1", external("again", &calls)); err != nil || !res.Replayed || res.Value.By != "reconciled" {
		t.Fatalf("the caller's late retry: %+v, %v; want the reconciled outcome", res, err)
	}

	// A claim the handler releases in turn (never charged: let the next
	// call run) goes back to callers as its holder left it, and is not
	// handed to the handler again at every pass.
	if _, err := e.ops.do(ctx, "never-charged", failing); err != timeout {
		t.Fatal(err)
	}
	owner := e.queryString("SELECT owner FROM "+e.table+" WHERE idem_key = ?", "never-charged")
	asked = 0
	release := func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
		asked++
		return idemsql.Resolution{Outcome: idemsql.ResolveReleased}, nil
	}
	for range 3 {
		if _, err := e.ops.sweep(ctx, release, idemsql.Options{SweepReleased: true}); err != nil {
			t.Fatal(err)
		}
	}
	if asked != 1 {
		t.Fatalf("the handler was asked %d times about a claim it released, want 1", asked)
	}
	e.wantReleased(t, "never-charged", 1)
	if o := e.queryString("SELECT owner FROM "+e.table+" WHERE idem_key = ?", "never-charged"); o != owner {
		t.Fatalf("owner %q after the handler released the claim, want its holder's %q", o, owner)
	}
	want := idemsql.HandlerReleasedMessage + "; before: fn failed: " + timeout.Error()
	if m := e.queryString("SELECT error_message FROM "+e.table+" WHERE idem_key = ?", "never-charged"); m != want {
		t.Fatalf("error_message %q, want %q", m, want)
	}
	if res, err := e.ops.do(ctx, "never-charged", external("retry", &calls)); err != nil || res.Value.Attempt != 2 || res.Value.Downstream != ds {
		t.Fatalf("the caller's retry after the handler released it: %+v, %v", res, err)
	}

	// A handler that abandons a released claim keeps its holder's reason
	// after its own.
	if _, err := e.ops.do(ctx, "refunded", failing); err != timeout {
		t.Fatal(err)
	}
	st, err = e.ops.sweep(ctx, func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
		return idemsql.Resolution{Outcome: idemsql.ResolveAbandoned, Message: "refunded by support"}, nil
	}, idemsql.Options{SweepReleased: true})
	if err != nil || st.Abandoned != 1 {
		t.Fatalf("sweep whose handler abandons: %+v, %v", st, err)
	}
	want = "refunded by support; before: fn failed: " + timeout.Error()
	if m := e.queryString("SELECT error_message FROM "+e.table+" WHERE idem_key = ?", "refunded"); m != want {
		t.Fatalf("error_message %q, want %q", m, want)
	}
}

// A sweep handler's result is stored for callers who decode it into their
// own type; one of another type would make every duplicate fail with
// ErrDecode. With Options.ResultType it is refused before anything is stored,
// and so is one given to Lease.Complete.
func testLeaseResultTypeChecked(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	const lease = 300 * time.Millisecond
	e.staleClaim(t, "typed-1")
	time.Sleep(60 * time.Millisecond)
	st, err := e.ops.sweep(ctx, func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: "charged"}, nil // a string, where callers decode a receipt
	}, idemsql.Options{ResultType: reflect.TypeFor[receipt](), Lease: lease})
	if !errors.Is(err, idemsql.ErrEncode) || st.Failed != 1 || st.Completed != 0 {
		t.Fatalf("sweep whose handler stores a string for receipts: %+v, %v; want it refused", st, err)
	}
	e.wantRow(t, "typed-1", idemsql.StatusInProgress, 2, "")
	time.Sleep(2 * lease)
	st, err = e.ops.sweep(ctx, func(_ context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: &receipt{By: "sweeper", Attempt: s.Attempt}}, nil
	}, idemsql.Options{ResultType: reflect.TypeFor[receipt]()})
	if err != nil || st.Completed != 1 {
		t.Fatalf("sweep whose handler stores a *receipt: %+v, %v", st, err)
	}
	var calls atomic.Int64
	if res, err := e.ops.do(ctx, "typed-1", external("x", &calls)); err != nil || res.Value.By != "sweeper" {
		t.Fatalf("replay: %+v, %v", res, err)
	}

	c, err := e.ops.claim(ctx, "typed-2", idemsql.Options{ResultType: reflect.TypeFor[receipt]()})
	if err != nil || !c.Held {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	if err := c.Complete(ctx, map[string]string{"by": "a map"}); !errors.Is(err, idemsql.ErrEncode) {
		t.Fatalf("Complete with a map for receipts: %v, want ErrEncode", err)
	}
	if err := c.Complete(ctx, receipt{By: "holder"}); err != nil {
		t.Fatalf("Complete with a receipt: %v", err)
	}
	e.wantRow(t, "typed-2", idemsql.StatusCompleted, 1, "holder")
}

// sentinels are the classes an error of the library can have: each error
// must match at most one of them.
var sentinels = []error{
	idemsql.ErrInvalidKey, idemsql.ErrInvalidOption, idemsql.ErrFingerprintMismatch, idemsql.ErrInProgress,
	idemsql.ErrRetryable, idemsql.ErrCommitUnknown, idemsql.ErrLockTimeout, idemsql.ErrEncode, idemsql.ErrDecode,
	idemsql.ErrResultTooLarge, idemsql.ErrDuplicate, idemsql.ErrFailureRecorded, idemsql.ErrReentrant,
	idemsql.ErrAbandoned, idemsql.ErrUnexpectedState, idemsql.ErrLeaseLost, idemsql.ErrStoreUnusable,
	context.Canceled, context.DeadlineExceeded,
}

// oneClass fails the test when err matches more than one class.
func oneClass(t *testing.T, err error) {
	t.Helper()
	var got []error
	for _, s := range sentinels {
		if errors.Is(err, s) {
			got = append(got, s)
		}
	}
	if len(got) > 1 {
		t.Fatalf("%v matches %d classes: %v", err, len(got), got)
	}
}
