package integration

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "ObserverSweep", run: testObserverSweep},
		conformanceCase{name: "ObserverPurge", run: testObserverPurge},
	)
}

// wantSweep takes the events of one Sweep, in any order of keys: timed
// from the sweep's start, they do not go back; sorted by key, they are
// want (sorted by key too).
func (o *observed) wantSweep(what string, before time.Time, want []wantEvent) {
	o.t.Helper()
	got, calls := o.rec.take()
	o.nondecreasing(what, got)
	slices.SortStableFunc(got, func(a, b idemsql.Event) int { return strings.Compare(a.Key, b.Key) })
	o.check(what, before, got, want)
	o.wantCalls(what, calls, nil) // Sweep is not a call a CallTracer sees
}

// Sweep reports each claim it abandons (no handler) and each it takes over
// for its handler, with the key: a lease that ran out, a claim committed
// without a lease, a released claim; and each batch once its claims are
// resolved, with how many it found, about no one key (a pass that found
// nothing says so once, with Count 0).
func testObserverSweep(t *testing.T, e *env) {
	e, o := withRecorder(t, e, "lease")
	ctx := context.Background()
	db := e.store
	type w = wantEvent

	// Without a handler: a lease that ran out and a claim committed without
	// a lease are abandoned.
	beforeOld := time.Now()
	old, err := idemsql.ClaimLease(ctx, db, "sw-1", idemsql.Options{Lease: time.Hour})
	if err != nil || !old.Held {
		t.Fatalf("claim: %+v %v", old, err)
	}
	o.want("claim", beforeOld, []w{{kind: idemsql.EventClaimed, key: "sw-1", attempt: 1}})
	e.leaseRanOut("sw-1")
	e.insertClaimWithoutLease("sw-2", 4)
	before := time.Now()
	st, err := idemsql.Sweep(ctx, db, nil)
	if err != nil || st.Found != 2 || st.Abandoned != 2 {
		t.Fatalf("sweep without a handler: %+v, %v", st, err)
	}
	// Attempt 0 and no Err: the sweep reports neither the abandoned
	// claim's attempt nor an error (lease_sweep.go).
	o.wantSweep("sweep without a handler", before, []w{
		{kind: idemsql.EventSwept, count: 2},
		{kind: idemsql.EventAbandoned, key: "sw-1", attempt: 0},
		{kind: idemsql.EventAbandoned, key: "sw-2", attempt: 0},
	})
	if err := old.Complete(ctx, receipt{By: "old"}); !errors.Is(err, idemsql.ErrLeaseLost) {
		t.Fatalf("the old holder's completion after the sweep: %v", err)
	}
	o.want("lost lease", beforeOld, []w{{kind: idemsql.EventLeaseLost, key: "sw-1", attempt: 1, err: idemsql.ErrLeaseLost}})

	// With a handler that reconciles released claims too: each claim is
	// taken over at its attempt + 1.
	before = time.Now()
	c, err := idemsql.ClaimLease(ctx, db, "sw-3", idemsql.Options{Lease: time.Hour})
	if err != nil || !c.Held {
		t.Fatalf("claim: %+v %v", c, err)
	}
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}
	o.want("claim and release", before, []w{{kind: idemsql.EventClaimed, key: "sw-3", attempt: 1}})
	before = time.Now()
	if c, err = idemsql.ClaimLease(ctx, db, "sw-3", idemsql.Options{Lease: time.Hour}); err != nil || !c.Held {
		t.Fatalf("claim after a release: %+v %v", c, err)
	}
	o.want("take over a released claim", before, []w{{kind: idemsql.EventTakenOver, key: "sw-3", attempt: 2}})
	e.leaseRanOut("sw-3")
	before = time.Now()
	c, err = idemsql.ClaimLease(ctx, db, "sw-4", idemsql.Options{Lease: time.Hour})
	if err != nil || !c.Held {
		t.Fatalf("claim: %+v %v", c, err)
	}
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}
	o.want("claim and release", before, []w{{kind: idemsql.EventClaimed, key: "sw-4", attempt: 1}})
	e.insertClaimWithoutLease("sw-5", 5)

	var mu sync.Mutex
	stale := map[string]idemsql.Stale{}
	before = time.Now()
	st, err = idemsql.Sweep(ctx, db, func(_ context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
		mu.Lock()
		defer mu.Unlock()
		stale[s.Key] = s
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: receipt{By: "sweeper", Attempt: s.Attempt}}, nil
	}, idemsql.Options{SweepReleased: true})
	if err != nil || st.Found != 3 || st.Completed != 3 {
		t.Fatalf("sweep with a handler: %+v, %v", st, err)
	}
	o.wantSweep("sweep with a handler", before, []w{
		{kind: idemsql.EventSwept, count: 3},
		{kind: idemsql.EventTakenOver, key: "sw-3", attempt: 3},
		{kind: idemsql.EventTakenOver, key: "sw-4", attempt: 2},
		{kind: idemsql.EventTakenOver, key: "sw-5", attempt: 6},
	})
	for key, want := range map[string]struct {
		attempt int64
		reason  string
	}{
		"sw-3": {3, idemsql.StaleLeaseRanOut},
		"sw-4": {2, idemsql.StaleReleased},
		"sw-5": {6, idemsql.StaleNoLease},
	} {
		if s := stale[key]; s.Attempt != want.attempt || s.Reason != want.reason {
			t.Errorf("the handler got %s at attempt %d for %v, want attempt %d for %v", key, s.Attempt, s.Reason, want.attempt, want.reason)
		}
	}

	before = time.Now()
	if st, err := idemsql.Sweep(ctx, db, nil); err != nil || st.Found != 0 {
		t.Fatalf("a sweep with nothing to do: %+v, %v", st, err)
	}
	o.wantSweep("a sweep with nothing to do", before, []w{{kind: idemsql.EventSwept, count: 0}})

	before = time.Now()
	res, err := idemsql.RunExternal(ctx, db, "sw-5", func(context.Context, idemsql.Claim) (receipt, error) {
		return receipt{By: "fn"}, nil
	})
	if err != nil || !res.Replayed || res.Value.By != "sweeper" {
		t.Fatalf("after the sweeper completed it: %+v, %v", res, err)
	}
	o.want("replay of the sweeper's result", before, []w{{kind: idemsql.EventReplayed, key: "sw-5", attempt: 6}}, "RunExternal sw-5 replayed")
}

// Purge reports each batch that deleted rows, with how many, about no one
// key; a pass that found nothing says so once, with Count 0; the empty
// batch that ends a pass whose rows filled every batch before it says
// nothing.
func testObserverPurge(t *testing.T, e *env) {
	e, o := withRecorder(t, e, "lease")
	ctx := context.Background()
	db := e.store
	type w = wantEvent
	fn := func(context.Context, idemsql.Claim) (receipt, error) { return receipt{By: "fn"}, nil }
	completed := func(keys ...string) {
		t.Helper()
		for _, key := range keys {
			before := time.Now()
			if _, err := idemsql.RunExternal(ctx, db, key, fn); err != nil {
				t.Fatal(err)
			}
			o.want("first call", before, []w{
				{kind: idemsql.EventClaimed, key: key, attempt: 1},
				{kind: idemsql.EventCompleted, key: key, attempt: 1},
			}, "RunExternal "+key+" executed")
			e.expire(key)
		}
	}
	purge := func(what string, wantDeleted int64, batches int, counts ...int64) {
		t.Helper()
		before := time.Now()
		st, err := idemsql.Purge(ctx, db, idemsql.Options{BatchSize: 2})
		if err != nil || st.Deleted != wantDeleted || st.Batches != batches {
			t.Fatalf("%s: %+v, %v; want %d rows deleted in %d batches", what, st, err, wantDeleted, batches)
		}
		var want []w
		for _, n := range counts {
			want = append(want, w{kind: idemsql.EventPurged, count: n})
		}
		o.want(what, before, want)
	}

	purge("nothing to purge", 0, 1, 0)
	completed("pg-1", "pg-2", "pg-3")
	purge("a full batch and a short one", 3, 2, 2, 1)
	completed("pg-4", "pg-5")
	purge("one full batch, then an empty one", 2, 2, 2)
}
