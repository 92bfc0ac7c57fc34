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
	calls  []string // op + " " + outcome, when the call ended
}

func (r *recorder) Observe(_ context.Context, e idemsql.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) StartCall(ctx context.Context, c idemsql.Call) (context.Context, func(idemsql.CallEnd)) {
	return ctx, func(end idemsql.CallEnd) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls = append(r.calls, c.Op+" "+c.Key+" "+end.Outcome)
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
		s += e.Kind.String()
	}
	return s
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "ObserverAtomicMode", run: testObserverAtomicMode})
}

func (rec *recorder) want(t *testing.T, e *env, what, wantKinds string, wantCalls ...string) []idemsql.Event {
	t.Helper()
	events, calls := rec.take()
	if got := kinds(events); got != wantKinds {
		t.Errorf("%s: events %q, want %q", what, got, wantKinds)
	}
	for _, ev := range events {
		if ev.Dialect != e.dialect || ev.Mode != "atomic" || ev.Duration < 0 {
			t.Errorf("%s: event %+v", what, ev)
		}
	}
	if fmt.Sprint(calls) != fmt.Sprint(wantCalls) {
		t.Errorf("%s: calls %q, want %q", what, calls, wantCalls)
	}
	return events
}

// Each event of atomic mode fires once, with the key, the dialect and the
// attempt, and a call tracer sees each call end with its outcome.
func testObserverAtomicMode(t *testing.T, e *env) {
	rec := &recorder{}
	e = e.withStoreOptions(idemsql.WithObserver(rec))
	ctx := context.Background()
	var runs atomic.Int64

	e.mustGuarded("obs-1", 1, &runs)
	ev := rec.want(t, e, "first call", "claimed completed", "Do obs-1 executed")
	if ev[0].Key != "obs-1" || ev[0].Attempt != 1 {
		t.Errorf("claimed: %+v", ev[0])
	}
	e.mustGuarded("obs-1", 1, &runs)
	rec.want(t, e, "duplicate", "replayed", "Do obs-1 replayed")

	_, err := e.guarded("obs-1", 1, &runs, idemsql.WithFingerprint("other"))
	if !errors.Is(err, idemsql.ErrFingerprintMismatch) {
		t.Fatal(err)
	}
	rec.want(t, e, "mismatch", "fingerprint_mismatch", "Do obs-1 fingerprint_mismatch")

	e.expire("obs-1")
	e.mustGuarded("obs-1", 1, &runs)
	if ev := rec.want(t, e, "re-claim", "claimed completed", "Do obs-1 executed"); len(ev) > 0 && ev[0].Attempt != 2 {
		t.Errorf("re-claim attempt %d, want 2", ev[0].Attempt)
	}

	_, err = e.run(ctx, sql.LevelDefault, "obs-2", func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		return invoice{}, idemsql.Permanent("declined", errDeclined)
	}, idemsql.WithRecordedFailures(true))
	if !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatal(err)
	}
	rec.want(t, e, "recorded failure", "claimed failure_recorded", "Run obs-2 failure_recorded")

	tries := 0
	_, err = e.run(ctx, sql.LevelDefault, "obs-3", func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		if tries++; tries == 1 {
			return invoice{}, idemsql.ErrRetryable
		}
		return invoice{Amount: 3}, nil
	}, idemsql.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	rec.want(t, e, "retry", "claimed retried claimed completed", "Run obs-3 executed")

	ctxT, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	holder := e.holdKey(ctxT, "obs-4", &runs)
	defer holder.Rollback(ctxT)
	rec.take()
	other, err := e.beginOther(ctxT)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctxT)
	if _, err := idemsql.Do(ctxT, other.Bind(), "obs-4", e.charge(other, "obs-4", 1, &runs), idemsql.WithInFlight(idemsql.InFlightFailFast)); !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatal(err)
	}
	rec.want(t, e, "in progress", "in_progress", "Do obs-4 in_progress")
}

func init() {
	conformanceCases = append(conformanceCases, conformanceCase{name: "ObserverLeaseMode", run: testObserverLeaseMode})
}

// Each event of lease mode fires once: a claim and its completion, a
// replay, a mismatch, a key in progress, a takeover after a lease really
// ran out, the old holder's lost lease, a purge.
func testObserverLeaseMode(t *testing.T, e *env) {
	rec := &recorder{}
	e = e.withStoreOptions(idemsql.WithObserver(rec))
	ctx := context.Background()
	db := e.store.DB(e.db, nil)
	var calls atomic.Int64
	fn := func(ctx context.Context, l idemsql.LeaseInfo) (receipt, error) {
		calls.Add(1)
		return receipt{By: "x"}, nil
	}
	want := func(what, wantKinds string, wantCalls ...string) []idemsql.Event {
		t.Helper()
		events, got := rec.take()
		if k := kinds(events); k != wantKinds {
			t.Errorf("%s: events %q, want %q", what, k, wantKinds)
		}
		for _, ev := range events {
			if ev.Dialect != e.dialect || ev.Mode != "lease" {
				t.Errorf("%s: event %+v", what, ev)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(wantCalls) {
			t.Errorf("%s: calls %q, want %q", what, got, wantCalls)
		}
		return events
	}

	if _, err := idemsql.RunExternal(ctx, db, "lobs-1", fn); err != nil {
		t.Fatal(err)
	}
	want("first call", "claimed completed", "RunExternal lobs-1 executed")
	if _, err := idemsql.RunExternal(ctx, db, "lobs-1", fn); err != nil {
		t.Fatal(err)
	}
	want("duplicate", "replayed", "RunExternal lobs-1 replayed")
	if _, err := idemsql.RunExternal(ctx, db, "lobs-1", fn, idemsql.WithFingerprint("other")); !errors.Is(err, idemsql.ErrFingerprintMismatch) {
		t.Fatal(err)
	}
	want("mismatch", "fingerprint_mismatch", "RunExternal lobs-1 fingerprint_mismatch")

	holder, err := idemsql.ClaimLease(ctx, db, "lobs-2", idemsql.WithLease(time.Hour))
	if err != nil || !holder.Held {
		t.Fatalf("claim: %+v %v", holder, err)
	}
	rec.take()
	if _, err := idemsql.RunExternal(ctx, db, "lobs-2", fn); !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatal(err)
	}
	want("in progress", "in_progress", "RunExternal lobs-2 in_progress")

	// A lease that really runs out: nobody renews it.
	old, err := idemsql.ClaimLease(ctx, db, "lobs-3", idemsql.WithLease(100*time.Millisecond))
	if err != nil || !old.Held {
		t.Fatalf("claim: %+v %v", old, err)
	}
	rec.take()
	time.Sleep(300 * time.Millisecond)
	if _, err := idemsql.RunExternal(ctx, db, "lobs-3", fn); err != nil {
		t.Fatal(err)
	}
	if ev := want("takeover", "taken_over completed", "RunExternal lobs-3 executed"); len(ev) > 0 && ev[0].Attempt != 2 {
		t.Errorf("taken over at attempt %d, want 2", ev[0].Attempt)
	}
	if err := old.Lease.Complete(ctx, receipt{By: "old"}); !errors.Is(err, idemsql.ErrLeaseLost) {
		t.Fatalf("the old holder's completion: %v", err)
	}
	if ev := want("lost lease", "lease_lost"); len(ev) > 0 && ev[0].Attempt != 1 {
		t.Errorf("lease lost at attempt %d, want 1", ev[0].Attempt)
	}

	e.expire("lobs-1")
	st, err := idemsql.Purge(ctx, db)
	if err != nil || st.Deleted != 1 {
		t.Fatalf("purge: %+v %v", st, err)
	}
	if ev := want("purge", "purged"); len(ev) > 0 && ev[0].Count != 1 {
		t.Errorf("purged %d, want 1", ev[0].Count)
	}
}
