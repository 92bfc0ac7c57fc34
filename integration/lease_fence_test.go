package integration

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// released counts the rows of key that are in_progress with their lease
// ended on purpose.
func (e *leaseEnv) released(key string) int64 {
	e.t.Helper()
	return e.queryInt("SELECT COUNT(*) FROM "+e.table+" WHERE idem_key = ? AND status = 'in_progress' AND error_class = ?",
		key, idemsql.ReleasedClass)
}

func (e *leaseEnv) wantReleased(t *testing.T, key string, attempt int64) {
	t.Helper()
	if e.released(key) != 1 {
		s, a, _ := e.row(key)
		t.Fatalf("row %q: %s at attempt %d, want in_progress and released", key, s, a)
	}
	if _, a, _ := e.row(key); a != attempt {
		t.Fatalf("row %q at attempt %d, want %d", key, a, attempt)
	}
}

func wantLost(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, idemsql.ErrLeaseLost) {
		t.Fatalf("%s: %v, want ErrLeaseLost", what, err)
	}
}

// A stale holder is fenced out after its claim was released and taken over
// (attempts go on: 1, 2, 3, ...), and even when the row was deleted behind
// lease mode's back and claimed again at attempt 1: the owner token is the
// claim's own.
func testLeaseStaleHolderFencedABA(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	old := e.staleClaim(t, "aba-1")
	time.Sleep(60 * time.Millisecond)
	st, err := e.ops.sweep(ctx, func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
		return idemsql.Resolution{Outcome: idemsql.ResolveReleased}, nil
	})
	if err != nil || st.Released != 1 {
		t.Fatalf("sweep: %+v, %v", st, err)
	}
	e.wantReleased(t, "aba-1", 2)
	// A released row waits for callers, not for the next sweep.
	if st, err := e.ops.sweep(ctx, nil); err != nil || st.Found != 0 {
		t.Fatalf("sweep of a released row: %+v, %v", st, err)
	}
	c, err := e.ops.claim(ctx, "aba-1", idemsql.Options{Lease: 10 * time.Second})
	if err != nil || !c.Held || c.Attempt != 3 || c.DownstreamKey != old.DownstreamKey {
		t.Fatalf("claim after release: %+v, %v; old holder %+v", c, err, old.Claim)
	}
	wantLost(t, "stale renew", old.Renew(ctx))
	wantLost(t, "stale completion", old.Complete(ctx, receipt{By: "old"}))
	wantLost(t, "stale failure", old.Fail(ctx, "x", "y"))
	wantLost(t, "stale release", old.Release(ctx))
	// The new holder releases in turn; the next one is attempt 4, same key.
	if err := c.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	c2, err := e.ops.claim(ctx, "aba-1", idemsql.Options{Lease: 10 * time.Second})
	if err != nil || !c2.Held || c2.Attempt != 4 || c2.DownstreamKey != old.DownstreamKey {
		t.Fatalf("claim after the second release: %+v, %v", c2, err)
	}
	wantLost(t, "released holder's completion after a takeover", c.Complete(ctx, receipt{By: "3"}))
	if err := c2.Complete(ctx, receipt{By: "4"}); err != nil {
		t.Fatal(err)
	}
	e.wantRow(t, "aba-1", idemsql.StatusCompleted, 4, "4")
	wantLost(t, "second completion", c2.Complete(ctx, receipt{By: "again"}))
	e.wantRow(t, "aba-1", idemsql.StatusCompleted, 4, "4")

	// The same attempt number twice: the row vanishes under a holder (an
	// operator's DELETE) and the key is claimed again at attempt 1.
	a := e.staleClaim(t, "aba-2")
	if _, err := e.db.ExecContext(ctx, e.q("DELETE FROM "+e.table+" WHERE idem_key = ?"), "aba-2"); err != nil {
		t.Fatal(err)
	}
	wantLost(t, "release of a deleted claim", a.Release(ctx))
	b, err := e.ops.claim(ctx, "aba-2", idemsql.Options{Lease: 10 * time.Second})
	if err != nil || !b.Held || b.Attempt != a.Attempt || b.Owner == a.Owner {
		t.Fatalf("claim anew: %+v, %v", b, err)
	}
	wantLost(t, "renew at a repeated attempt", a.Renew(ctx))
	wantLost(t, "completion at a repeated attempt", a.Complete(ctx, receipt{By: "old"}))
	wantLost(t, "release at a repeated attempt", a.Release(ctx))
	if err := b.Complete(ctx, receipt{By: "new"}); err != nil {
		t.Fatalf("new holder: %v", err)
	}
	e.wantRow(t, "aba-2", idemsql.StatusCompleted, 1, "new")
}

// fn fails after the downstream system may have acted (a time-out): the
// retry runs at once, takes the key over, and calls downstream with the
// same key, so the downstream system deduplicates.
func testLeaseFnErrorRetry(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var keys []string
	timeout := errors.New("read timeout from the payment API")
	fail := func(_ context.Context, l idemsql.Claim) (receipt, error) {
		keys = append(keys, l.DownstreamKey)
		return receipt{}, timeout
	}
	if _, err := e.ops.do(ctx, "retry-1", fail); err != timeout {
		t.Fatalf("first call: %v", err)
	}
	e.wantReleased(t, "retry-1", 1)
	if _, err := e.ops.do(ctx, "retry-1", fail); err != timeout {
		t.Fatalf("second call: %v", err)
	}
	e.wantReleased(t, "retry-1", 2)
	var calls atomic.Int64
	res, err := e.ops.do(ctx, "retry-1", external("ok", &calls))
	if err != nil || res.Replayed || res.Value.Attempt != 3 {
		t.Fatalf("retry: %+v, %v", res, err)
	}
	if keys[0] != keys[1] || res.Value.Downstream != keys[0] {
		t.Fatalf("downstream keys %v, then %q: want one key", keys, res.Value.Downstream)
	}
	e.wantRow(t, "retry-1", idemsql.StatusCompleted, 3, "ok")

	// A released row nobody retried within its retention is left to Sweep
	// (without a handler). The retention runs out in real time: a release
	// keeps its end in lease_until too, which a hand-made expiry would miss.
	const ttl = 500 * time.Millisecond
	if _, err := e.ops.do(ctx, "retry-2", fail, idemsql.Options{TTL: ttl, Lease: ttl / 2}); err != timeout {
		t.Fatal(err)
	}
	if st, err := e.ops.sweep(ctx, nil); err != nil || st.Found != 0 {
		t.Fatalf("sweep before the retention ran out: %+v, %v", st, err)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	if st, err := e.ops.sweep(ctx, nil); err != nil || st.Found != 1 || st.Abandoned != 1 {
		t.Fatalf("sweep after the retention ran out: %+v, %v", st, err)
	}
}

// fn panics: the heartbeat stops, nothing is recorded, the lease runs out
// and the key is taken over with the same downstream key.
func testLeasePanicInFn(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	const lease = 400 * time.Millisecond
	var held idemsql.Claim
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want the panic to go on", r)
			}
		}()
		_, _ = e.ops.do(ctx, "panic-1", func(_ context.Context, l idemsql.Claim) (receipt, error) {
			held = l
			panic("boom")
		}, idemsql.Options{Lease: lease, Heartbeat: 50 * time.Millisecond})
	}()
	e.wantRow(t, "panic-1", idemsql.StatusInProgress, 1, "")
	// A leaked heartbeat would keep renewing the lease: the wait below
	// would end in ErrInProgress.
	time.Sleep(2 * lease)
	var calls atomic.Int64
	res, err := e.ops.do(ctx, "panic-1", external("next", &calls))
	if err != nil || res.Value.Attempt != 2 || res.Value.Downstream != held.DownstreamKey {
		t.Fatalf("after the panic: %+v, %v", res, err)
	}
}

// fn succeeded but its result cannot be stored: the effect happened, so the
// key is recorded as failed and never runs again within its retention.
func testLeaseUnencodableResult(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var calls atomic.Int64
	_, err := e.ops.do(ctx, "big-1", external("x", &calls), idemsql.Options{MaxResultSize: 10})
	if !errors.Is(err, idemsql.ErrResultTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	var fe *idemsql.Error
	if res, err := e.ops.do(ctx, "big-1", external("y", &calls)); !errors.Is(err, idemsql.ErrFailureRecorded) || !errors.As(err, &fe) || fe.Class != idemsql.UnencodableClass || !res.Replayed {
		t.Fatalf("duplicate: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("fn ran %d times, want 1", n)
	}
	if s, a, _ := e.row("big-1"); s != idemsql.StatusFailed || a != 1 {
		t.Fatalf("row: %s at attempt %d", s, a)
	}
}

// A renewal that finds the key gone cancels fn with ErrLeaseLost as the
// context's cause, and the call returns it; nothing is recorded.
func testLeaseLostLeaseCause(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	started := make(chan struct{})
	var cause error
	done := make(chan error, 1)
	go func() {
		_, err := e.ops.do(ctx, "cause-1", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
			close(started)
			select {
			case <-ctx.Done():
				cause = context.Cause(ctx)
				return receipt{}, ctx.Err()
			case <-time.After(10 * time.Second):
				return receipt{By: "deaf"}, nil
			}
		}, idemsql.Options{Lease: 3 * time.Second, Heartbeat: 50 * time.Millisecond})
		done <- err
	}()
	<-started
	// Another holder, as far as the fence can tell.
	if _, err := e.db.ExecContext(ctx, e.q("UPDATE "+e.table+" SET attempt = attempt + 1, owner = ? WHERE idem_key = ?"), "someone-else", "cause-1"); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(8 * time.Second):
		t.Fatal("fn was not cancelled")
	}
	if !errors.Is(cause, idemsql.ErrLeaseLost) {
		t.Fatalf("context.Cause(fn's ctx) = %v, want ErrLeaseLost", cause)
	}
	if !errors.Is(err, idemsql.ErrLeaseLost) || !errors.Is(err, context.Canceled) {
		t.Fatalf("call: %v, want ErrLeaseLost joined with fn's error", err)
	}
	e.wantRow(t, "cause-1", idemsql.StatusInProgress, 2, "")
}

// A claim whose retention ran out while fn ran keeps its result for the TTL
// from completion.
func testLeaseCompletionKeepsTTL(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	c, err := e.ops.claim(ctx, "ttl-1", idemsql.Options{TTL: time.Hour, Lease: 10 * time.Second})
	if err != nil || !c.Held {
		t.Fatal(c, err)
	}
	e.expire("ttl-1")
	if err := c.Complete(ctx, receipt{By: "slow"}); err != nil {
		t.Fatal(err)
	}
	if s := e.ttlSeconds("ttl-1"); s < 3590 {
		t.Fatalf("expires %ds after the claim, want about an hour", s)
	}
	var calls atomic.Int64
	res, err := e.ops.do(ctx, "ttl-1", external("x", &calls))
	if err != nil || !res.Replayed || res.Value.By != "slow" {
		t.Fatalf("duplicate: %+v, %v", res, err)
	}
}

// An in_progress row past its retention is never treated as absent: a stale
// one is taken over under the same downstream key, a live one is left to
// its holder by lease mode and by atomic mode alike.
func testLeaseExpiredInProgress(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	old := e.staleClaim(t, "exp-1")
	e.expire("exp-1")
	time.Sleep(60 * time.Millisecond)
	var calls atomic.Int64
	res, err := e.ops.do(ctx, "exp-1", external("x", &calls))
	if err != nil || res.Value.Attempt != 2 || res.Value.Downstream != old.DownstreamKey {
		t.Fatalf("expired stale claim: %+v, %v; want a takeover of %+v", res, err, old.Claim)
	}

	live, err := e.ops.claim(ctx, "exp-2", idemsql.Options{Lease: 10 * time.Second})
	if err != nil || !live.Held {
		t.Fatal(live, err)
	}
	e.expire("exp-2")
	if _, err := e.ops.do(ctx, "exp-2", external("x", &calls)); !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatalf("lease mode on an expired live claim: %v", err)
	}
	tx, err := e.begin(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	_, err = doIn(ctx, tx, "exp-2", func(context.Context) (int, error) { ran = true; return 1, nil })
	_ = tx.Rollback(ctx)
	if !errors.Is(err, idemsql.ErrInProgress) || ran {
		t.Fatalf("atomic mode on an expired live claim: %v (ran %v)", err, ran)
	}
	if err := live.Complete(ctx, receipt{By: "live"}); err != nil {
		t.Fatal(err)
	}
	e.wantRow(t, "exp-2", idemsql.StatusCompleted, 1, "live")
}

// leaseOnly wraps a dialect and drops its LockStale statement: the takeover
// UPDATE's own re-check is all that keeps two contenders from both winning.
type leaseOnly struct{ idemdriver.Dialect }

func (d leaseOnly) LeaseStatements(table idemdriver.Table) idemdriver.LeaseStatements {
	ls := d.Dialect.(idemdriver.LeaseDialect).LeaseStatements(table)
	ls.LockStale = ""
	return ls
}

func testLeaseRaceWithoutLockStale(t *testing.T, e *leaseEnv) {
	if e.dialect == "sqlite" {
		t.Skip("SQLite has no LockStale: the plain race case already covers it")
	}
	s := storeOn(e.env, testDriver[*sql.Tx]{inner: sqlDriver(e.dialect, e.db), dia: leaseOnly{dialectOf(e.dialect)}})
	raceOneWinner(t, e, opsFor(s), "nolock")
}

// Options of atomic mode are refused by lease-mode calls, and the reverse.
func testLeaseOptionScopes(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var calls atomic.Int64
	for _, o := range []idemsql.Options{{FailFast: true}, {LockTimeout: time.Second}} {
		if _, err := e.ops.do(ctx, "scope-1", external("x", &calls), o); !errors.Is(err, idemsql.ErrInvalidOption) {
			t.Fatalf("atomic option to RunExternal: %v", err)
		}
	}
	for _, o := range []idemsql.Options{{Lease: time.Second}, {Heartbeat: time.Second}, {LeaseWait: time.Second}, {BatchSize: 5}} {
		_, err := e.run(ctx, 0, "scope-2", func(context.Context, func(context.Context, string, ...any) error) (invoice, error) {
			return invoice{}, nil
		}, o)
		if !errors.Is(err, idemsql.ErrInvalidOption) || !strings.Contains(err.Error(), "lease mode") {
			t.Fatalf("lease option to Run: %v", err)
		}
	}
	if calls.Load() != 0 || e.idemRows("scope-1")+e.idemRows("scope-2") != 0 {
		t.Fatal("a refused call wrote something")
	}
}
