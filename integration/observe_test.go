package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// recorder is an Observer and CallTracer that keeps what it was told.
type recorder struct {
	mu     sync.Mutex
	events []idemsql.Event
	calls  []string // op + " " + key + " " + outcome, when the call ended
}

func (r *recorder) Observe(_ context.Context, e idemsql.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) StartCall(ctx context.Context, c idemsql.Event) (context.Context, func(idemsql.Event)) {
	return ctx, func(end idemsql.Event) {
		r.mu.Lock()
		defer r.mu.Unlock()
		s := c.Op + " " + c.Key + " " + end.Outcome
		if end.Duration <= 0 {
			s += fmt.Sprintf(" (duration %v)", end.Duration)
		}
		r.calls = append(r.calls, s)
	}
}

// take returns and forgets what was recorded.
func (r *recorder) take() (events []idemsql.Event, calls []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	events, calls = r.events, r.calls
	r.events, r.calls = nil, nil
	return events, calls
}

func kinds(events []idemsql.Event) string {
	s := ""
	for i, e := range events {
		if i > 0 {
			s += " "
		}
		s += e.Kind
	}
	return s
}

// wantEvent is what one event must carry, besides the mode and dialect of
// every event of a test and a Duration that is positive and no longer than
// the test measured around the call.
type wantEvent struct {
	kind    string
	key     string
	attempt int64
	// err is what Err must be (errors.Is); nil: Err must be nil.
	err error
	// class, if set, is the Class of the recorded failure in Err.
	class string
	count int64
}

func (w wantEvent) String() string {
	return fmt.Sprintf("%v key=%q attempt=%d err=%v class=%q count=%d", w.kind, w.key, w.attempt, w.err, w.class, w.count)
}

// observed checks what a recorder saw of one store's calls.
type observed struct {
	t    *testing.T
	e    *env
	rec  *recorder
	mode string // "atomic" or "lease"
}

// withRecorder gives e's store a recorder; e's transactions, Run and the pools
// bound with e.store from then on report to it.
func withRecorder(t *testing.T, e *env, mode string) (*env, *observed) {
	rec := &recorder{}
	e = e.withStoreOptions(idemsql.Options{Observers: []idemsql.Observer{rec}})
	return e, &observed{t: t, e: e, rec: rec, mode: mode}
}

// want takes what was recorded since the last check, which came from calls
// started after before, each timed from its own start: the events, in this
// order, and the calls that ended.
func (o *observed) want(what string, before time.Time, want []wantEvent, wantCalls ...string) []idemsql.Event {
	o.t.Helper()
	got, calls := o.rec.take()
	o.nondecreasing(what, got)
	o.check(what, before, got, want)
	o.wantCalls(what, calls, wantCalls)
	return got
}

// nondecreasing checks that events timed from one start do not go back.
func (o *observed) nondecreasing(what string, got []idemsql.Event) {
	o.t.Helper()
	for i := 1; i < len(got); i++ {
		if got[i].Duration < got[i-1].Duration {
			o.t.Errorf("%s: event %d (%v) has Duration %v, less than the %v of the event before it (%v)",
				what, i, got[i].Kind, got[i].Duration, got[i-1].Duration, got[i-1].Kind)
		}
	}
}

// check compares got with want, field by field.
func (o *observed) check(what string, before time.Time, got []idemsql.Event, want []wantEvent) {
	o.t.Helper()
	bound := time.Since(before)
	var wantKinds string
	for i, w := range want {
		if i > 0 {
			wantKinds += " "
		}
		wantKinds += w.kind
	}
	if k := kinds(got); k != wantKinds || len(got) != len(want) {
		o.t.Errorf("%s: events %q, want %q", what, k, wantKinds)
		return
	}
	for i, ev := range got {
		w := want[i]
		bad := func(field string, v any) {
			o.t.Helper()
			o.t.Errorf("%s: event %d (%v of %q): %s %v; want %v", what, i, ev.Kind, ev.Key, field, v, w)
		}
		if ev.Mode != o.mode {
			bad("Mode", ev.Mode)
		}
		if ev.Dialect != o.e.dialect {
			bad("Dialect", ev.Dialect)
		}
		if ev.Key != w.key {
			bad("Key", ev.Key)
		}
		if ev.Attempt != w.attempt {
			bad("Attempt", ev.Attempt)
		}
		if ev.Count != w.count {
			bad("Count", ev.Count)
		}
		if ev.Duration <= 0 || ev.Duration > bound {
			o.t.Errorf("%s: event %d (%v of %q): Duration %v, want more than 0 and at most %v", what, i, ev.Kind, ev.Key, ev.Duration, bound)
		}
		switch {
		case w.err == nil && ev.Err != nil:
			bad("Err", ev.Err)
		case w.err != nil && !errors.Is(ev.Err, w.err):
			bad("Err", ev.Err)
		}
		if w.class != "" {
			var fe *idemsql.Error
			if !errors.As(ev.Err, &fe) || fe.Class != w.class || fe.Key != w.key {
				bad("Err (a recorded failure)", ev.Err)
			}
		}
	}
}

func (o *observed) wantCalls(what string, calls, wantCalls []string) {
	o.t.Helper()
	if fmt.Sprint(calls) != fmt.Sprint(wantCalls) {
		o.t.Errorf("%s: calls %q, want %q", what, calls, wantCalls)
	}
}

// insertClaimWithoutLease inserts, as an atomic-mode claim that committed
// without an outcome leaves it, an in_progress row without a lease at
// attempt.
func (e *env) insertClaimWithoutLease(key string, attempt int64) {
	e.t.Helper()
	now, later := e.secondsAgo(0), e.secondsAgo(-3600)
	q := "INSERT INTO " + e.table + " (idem_key, status, attempt, owner, created_at, updated_at, expires_at) VALUES (?, 'in_progress', ?, 'atomic/dead', " +
		now + ", " + now + ", " + later + ")"
	if _, err := e.db.Exec(e.q(q), key, attempt); err != nil {
		e.t.Fatalf("insert: %v", err)
	}
}

// leaseRanOut ends key's lease by the database's clock, as if its holder
// had stopped renewing it a second ago: no waiting for a real lease.
func (e *env) leaseRanOut(key string) {
	e.t.Helper()
	stmt := e.q("UPDATE " + e.table + " SET lease_until = " + e.secondsAgo(1) + " WHERE idem_key = ? AND status = 'in_progress' AND lease_until IS NOT NULL")
	res, err := e.db.ExecContext(context.Background(), stmt, key)
	if err != nil {
		e.t.Fatalf("end the lease of %q: %v", key, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		e.t.Fatalf("end the lease of %q: %d rows", key, n)
	}
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "ObserverAtomicMode", run: testObserverAtomicMode})
}

// Each event of atomic mode fires once, with the key, the dialect, the
// claim's attempt, the error it reports and a positive duration, and a call
// tracer sees each call end with its outcome.
func testObserverAtomicMode(t *testing.T, e *env) {
	e, o := withRecorder(t, e, "atomic")
	ctx := context.Background()
	var runs atomic.Int64
	type w = wantEvent

	before := time.Now()
	e.mustGuarded("obs-1", 1, &runs)
	o.want("first call", before, []w{
		{kind: idemsql.EventClaimed, key: "obs-1", attempt: 1},
		{kind: idemsql.EventCompleted, key: "obs-1", attempt: 1},
	}, "Do obs-1 executed")

	before = time.Now()
	e.mustGuarded("obs-1", 1, &runs)
	o.want("duplicate", before, []w{{kind: idemsql.EventReplayed, key: "obs-1", attempt: 1}}, "Do obs-1 replayed")

	before = time.Now()
	if _, err := e.guarded("obs-1", 1, &runs, idemsql.Options{Fingerprint: "other"}); !errors.Is(err, idemsql.ErrFingerprintMismatch) {
		t.Fatal(err)
	}
	o.want("mismatch", before, []w{{kind: idemsql.EventFingerprintMismatch, key: "obs-1", attempt: 1, err: idemsql.ErrFingerprintMismatch}},
		"Do obs-1 fingerprint_mismatch")

	e.expire("obs-1")
	before = time.Now()
	e.mustGuarded("obs-1", 1, &runs)
	o.want("re-claim", before, []w{
		{kind: idemsql.EventClaimed, key: "obs-1", attempt: 2},
		{kind: idemsql.EventCompleted, key: "obs-1", attempt: 2},
	}, "Do obs-1 executed")
	before = time.Now()
	e.mustGuarded("obs-1", 1, &runs)
	o.want("duplicate after the re-claim", before, []w{{kind: idemsql.EventReplayed, key: "obs-1", attempt: 2}}, "Do obs-1 replayed")

	declined := func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		return invoice{}, idemsql.Permanent("declined", errDeclined)
	}
	before = time.Now()
	if _, err := e.run(ctx, sql.LevelDefault, "obs-2", declined, idemsql.Options{RecordFailures: true}); !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatal(err)
	}
	o.want("recorded failure", before, []w{
		{kind: idemsql.EventClaimed, key: "obs-2", attempt: 1},
		{kind: idemsql.EventFailureRecorded, key: "obs-2", attempt: 1, err: idemsql.ErrFailureRecorded, class: "declined"},
	}, "Run obs-2 failure_recorded")
	before = time.Now()
	if _, err := e.run(ctx, sql.LevelDefault, "obs-2", declined, idemsql.Options{RecordFailures: true}); !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatal(err)
	}
	o.want("recorded failure replayed", before, []w{
		{kind: idemsql.EventReplayed, key: "obs-2", attempt: 1, err: idemsql.ErrFailureRecorded, class: "declined"},
	}, "Run obs-2 failure_recorded")

	tries := 0
	before = time.Now()
	_, err := e.run(ctx, sql.LevelDefault, "obs-3", func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		if tries++; tries == 1 {
			return invoice{}, idemsql.ErrRetryable
		}
		return invoice{Amount: 3}, nil
	}, idemsql.Options{Backoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Every try's events are timed from Run's start: they never go back.
	o.want("retry", before, []w{
		{kind: idemsql.EventClaimed, key: "obs-3", attempt: 1}, // rolled back with the try
		{kind: idemsql.EventRetried, key: "obs-3", attempt: 0, err: idemsql.ErrRetryable},
		{kind: idemsql.EventClaimed, key: "obs-3", attempt: 1},
		{kind: idemsql.EventCompleted, key: "obs-3", attempt: 1},
	}, "Run obs-3 executed")

	func() { // the holder's and the other's transactions end with it (SQLite: one writer)
		ctxT, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		before := time.Now()
		holder := e.holdKey(ctxT, "obs-4", &runs)
		defer holder.Rollback(ctxT)
		o.want("holder", before, []w{
			{kind: idemsql.EventClaimed, key: "obs-4", attempt: 1},
			{kind: idemsql.EventCompleted, key: "obs-4", attempt: 1},
		}, "Do obs-4 executed")
		other, err := e.beginOther(ctxT)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Rollback(ctxT)
		before = time.Now()
		if _, err := doIn(ctxT, other, "obs-4", e.charge(other, "obs-4", 1, &runs), idemsql.Options{FailFast: true}); !errors.Is(err, idemsql.ErrInProgress) {
			t.Fatal(err)
		}
		// The holder's claim is not committed: no attempt to report.
		o.want("in progress", before, []w{{kind: idemsql.EventInProgress, key: "obs-4", attempt: 0, err: idemsql.ErrInProgress}},
			"Do obs-4 in_progress")
	}()

	// A claim committed without an outcome (the caller committed although
	// Do failed): ErrAbandoned, reported with the claim's attempt.
	e.insertClaimWithoutLease("obs-5", 3)
	before = time.Now()
	if _, err := e.guarded("obs-5", 1, &runs); !errors.Is(err, idemsql.ErrAbandoned) {
		t.Fatalf("Do on a claim committed without an outcome: %v, want ErrAbandoned", err)
	}
	o.want("abandoned", before, []w{{kind: idemsql.EventAbandoned, key: "obs-5", attempt: 3, err: idemsql.ErrAbandoned}},
		"Do obs-5 failed")
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "ObserverLeaseMode", run: testObserverLeaseMode})
}

// Each event of lease mode fires once, with the key, the dialect, the
// attempt, the error it reports and a positive duration: a claim and its
// completion, a replay, a mismatch, a key in progress, a takeover after a
// lease ran out and the old holder's lost lease, a takeover of a released
// claim, a recorded failure and its replay, a claim committed without a
// lease, a purge.
func testObserverLeaseMode(t *testing.T, e *env) {
	e, o := withRecorder(t, e, "lease")
	ctx := context.Background()
	db := e.store
	var calls atomic.Int64
	fn := func(ctx context.Context, l idemsql.Claim) (receipt, error) {
		calls.Add(1)
		return receipt{By: "x", Attempt: l.Attempt}, nil
	}
	type w = wantEvent

	before := time.Now()
	if _, err := idemsql.RunExternal(ctx, db, "lobs-1", fn); err != nil {
		t.Fatal(err)
	}
	o.want("first call", before, []w{
		{kind: idemsql.EventClaimed, key: "lobs-1", attempt: 1},
		{kind: idemsql.EventCompleted, key: "lobs-1", attempt: 1},
	}, "RunExternal lobs-1 executed")
	before = time.Now()
	if _, err := idemsql.RunExternal(ctx, db, "lobs-1", fn); err != nil {
		t.Fatal(err)
	}
	o.want("duplicate", before, []w{{kind: idemsql.EventReplayed, key: "lobs-1", attempt: 1}}, "RunExternal lobs-1 replayed")
	before = time.Now()
	if _, err := idemsql.RunExternal(ctx, db, "lobs-1", fn, idemsql.Options{Fingerprint: "other"}); !errors.Is(err, idemsql.ErrFingerprintMismatch) {
		t.Fatal(err)
	}
	o.want("mismatch", before, []w{{kind: idemsql.EventFingerprintMismatch, key: "lobs-1", attempt: 1, err: idemsql.ErrFingerprintMismatch}},
		"RunExternal lobs-1 fingerprint_mismatch")

	before = time.Now()
	holder, err := idemsql.ClaimLease(ctx, db, "lobs-2", idemsql.Options{Lease: time.Hour})
	if err != nil || !holder.Held {
		t.Fatalf("claim: %+v %v", holder, err)
	}
	o.want("claim", before, []w{{kind: idemsql.EventClaimed, key: "lobs-2", attempt: 1}})
	before = time.Now()
	if _, err := idemsql.RunExternal(ctx, db, "lobs-2", fn); !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatal(err)
	}
	o.want("in progress", before, []w{{kind: idemsql.EventInProgress, key: "lobs-2", attempt: 1, err: idemsql.ErrInProgress}},
		"RunExternal lobs-2 in_progress")

	// A lease that ran out: nobody renewed it. The database's clock says
	// so at once; nothing waits for it.
	beforeOld := time.Now()
	old, err := idemsql.ClaimLease(ctx, db, "lobs-3", idemsql.Options{Lease: time.Hour})
	if err != nil || !old.Held {
		t.Fatalf("claim: %+v %v", old, err)
	}
	o.want("claim", beforeOld, []w{{kind: idemsql.EventClaimed, key: "lobs-3", attempt: 1}})
	e.leaseRanOut("lobs-3")
	before = time.Now()
	if res, err := idemsql.RunExternal(ctx, db, "lobs-3", fn); err != nil || res.Value.Attempt != 2 {
		t.Fatalf("takeover: %+v, %v", res, err)
	}
	o.want("takeover", before, []w{
		{kind: idemsql.EventTakenOver, key: "lobs-3", attempt: 2},
		{kind: idemsql.EventCompleted, key: "lobs-3", attempt: 2},
	}, "RunExternal lobs-3 executed")
	// The old holder's events are timed from its ClaimLease.
	if err := old.Complete(ctx, receipt{By: "old"}); !errors.Is(err, idemsql.ErrLeaseLost) {
		t.Fatalf("the old holder's completion: %v", err)
	}
	o.want("lost lease", beforeOld, []w{{kind: idemsql.EventLeaseLost, key: "lobs-3", attempt: 1, err: idemsql.ErrLeaseLost}})

	// fn's error releases the claim; the next call takes it over at once.
	before = time.Now()
	if _, err := idemsql.RunExternal(ctx, db, "lobs-4", func(context.Context, idemsql.Claim) (receipt, error) {
		return receipt{}, errDeclined
	}); !errors.Is(err, errDeclined) {
		t.Fatal(err)
	}
	o.want("fn failed", before, []w{{kind: idemsql.EventClaimed, key: "lobs-4", attempt: 1}}, "RunExternal lobs-4 failed")
	before = time.Now()
	if res, err := idemsql.RunExternal(ctx, db, "lobs-4", fn); err != nil || res.Value.Attempt != 2 {
		t.Fatalf("after a release: %+v, %v", res, err)
	}
	o.want("takeover of a released claim", before, []w{
		{kind: idemsql.EventTakenOver, key: "lobs-4", attempt: 2},
		{kind: idemsql.EventCompleted, key: "lobs-4", attempt: 2},
	}, "RunExternal lobs-4 executed")

	// A permanent failure, recorded, then replayed.
	declined := func(context.Context, idemsql.Claim) (receipt, error) {
		return receipt{}, idemsql.Permanent("declined", errDeclined)
	}
	before = time.Now()
	if _, err := idemsql.RunExternal(ctx, db, "lobs-5", declined, idemsql.Options{RecordFailures: true}); !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatal(err)
	}
	o.want("recorded failure", before, []w{
		{kind: idemsql.EventClaimed, key: "lobs-5", attempt: 1},
		{kind: idemsql.EventFailureRecorded, key: "lobs-5", attempt: 1, err: idemsql.ErrFailureRecorded, class: "declined"},
	}, "RunExternal lobs-5 failure_recorded")
	before = time.Now()
	if _, err := idemsql.RunExternal(ctx, db, "lobs-5", declined, idemsql.Options{RecordFailures: true}); !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatal(err)
	}
	o.want("recorded failure replayed", before, []w{
		{kind: idemsql.EventReplayed, key: "lobs-5", attempt: 1, err: idemsql.ErrFailureRecorded, class: "declined"},
	}, "RunExternal lobs-5 failure_recorded")

	// A claim committed without a lease (atomic mode's): ErrAbandoned.
	e.insertClaimWithoutLease("lobs-6", 4)
	before = time.Now()
	if _, err := idemsql.RunExternal(ctx, db, "lobs-6", fn); !errors.Is(err, idemsql.ErrAbandoned) {
		t.Fatalf("RunExternal on a claim committed without a lease: %v, want ErrAbandoned", err)
	}
	o.want("abandoned", before, []w{{kind: idemsql.EventAbandoned, key: "lobs-6", attempt: 4, err: idemsql.ErrAbandoned}},
		"RunExternal lobs-6 failed")

	e.expire("lobs-1")
	before = time.Now()
	st, err := idemsql.Purge(ctx, db)
	if err != nil || st.Deleted != 1 || st.Batches != 1 {
		t.Fatalf("purge: %+v %v", st, err)
	}
	o.want("purge", before, []w{{kind: idemsql.EventPurged, count: 1}})

	if n := calls.Load(); n != 3 {
		t.Errorf("fn ran %d times, want 3", n)
	}
}
