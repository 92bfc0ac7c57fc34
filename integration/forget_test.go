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

// TestForget deletes one key on every backend: the key runs again, and
// no holder's key is ever freed while the holder has it.
func TestForget(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range []struct {
				name string
				run  func(t *testing.T, e *env)
			}{
				{"CompletedKeyRunsAgain", testForgetCompleted},
				{"LiveLeaseRefused", testForgetLiveLease},
				{"StaleLeaseDeletedAndHolderFenced", testForgetStaleLease},
				{"OpenTransactionsClaimRefused", testForgetOpenClaim},
				{"NeverBesideALiveHolder", testForgetRace},
			} {
				t.Run(c.name, func(t *testing.T) { c.run(t, b.setup(t)) })
			}
		})
	}
}

// forget calls Forget through the backend's own pool type.
func (e *env) forget(ctx context.Context, key string) (bool, error) {
	if e.pgxStore != nil {
		return idemsql.Forget(ctx, e.pgxStore, key)
	}
	return idemsql.Forget(ctx, e.store, key)
}

func testForgetCompleted(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	if _, err := e.run(ctx, sql.LevelDefault, "f-1", e.insertBiz("f-1", 5, &runs)); err != nil {
		t.Fatal(err)
	}
	found, err := e.forget(ctx, "f-1")
	if err != nil || !found {
		t.Fatalf("Forget: %v, %v", found, err)
	}
	if n := e.idemRows("f-1"); n != 0 {
		t.Fatalf("%d rows left", n)
	}
	res, err := e.run(ctx, sql.LevelDefault, "f-1", e.insertBiz("f-1", 5, &runs))
	if err != nil || res.Replayed || runs.Load() != 2 || e.bizRows("f-1") != 2 {
		t.Fatalf("after Forget: %+v, %v; fn ran %d times, %d business rows", res, err, runs.Load(), e.bizRows("f-1"))
	}
	// The database/sql store of a pgx backend's pool forgets as well.
	if found, err := idemsql.Forget(ctx, e.store, "f-1"); err != nil || !found {
		t.Fatalf("Forget through database/sql: %v, %v", found, err)
	}
	if found, err := e.forget(ctx, "f-1"); err != nil || found {
		t.Fatalf("Forget of a key the table does not hold: %v, %v", found, err)
	}
	if _, err := e.forget(ctx, ""); !errors.Is(err, idemsql.ErrInvalidKey) {
		t.Fatalf("Forget of an empty key: %v", err)
	}
}

// A live lease's claim is refused, and its holder goes on to record its
// outcome.
func testForgetLiveLease(t *testing.T, e *env) {
	ctx := context.Background()
	l, err := idemsql.ClaimLease(ctx, e.store, "f-live", idemsql.Options{Lease: time.Minute})
	if err != nil || !l.Held {
		t.Fatalf("claim: %+v, %v", l, err)
	}
	found, err := e.forget(ctx, "f-live")
	if !errors.Is(err, idemsql.ErrInProgress) || found {
		t.Fatalf("Forget of a live lease: %v, %v; want ErrInProgress", found, err)
	}
	oneClass(t, err)
	var ie *idemsql.Error
	if !errors.As(err, &ie) || ie.Op != "forget" || ie.Key != "f-live" {
		t.Fatalf("error %#v", err)
	}
	if err := l.Complete(ctx, receipt{By: "holder"}); err != nil {
		t.Fatalf("the holder's Complete after the refused Forget: %v", err)
	}
	if found, err := e.forget(ctx, "f-live"); err != nil || !found {
		t.Fatalf("Forget once completed: %v, %v", found, err)
	}
}

// A claim whose lease ran out is deleted; its holder, back, records
// nothing; the next call runs anew, with a new downstream key.
func testForgetStaleLease(t *testing.T, e *env) {
	ctx := context.Background()
	l, err := idemsql.ClaimLease(ctx, e.store, "f-stale", idemsql.Options{Lease: 20 * time.Millisecond})
	if err != nil || !l.Held {
		t.Fatalf("claim: %+v, %v", l, err)
	}
	waitLease(t, e, "f-stale", idemsql.LeaseStale)
	found, err := e.forget(ctx, "f-stale")
	if err != nil || !found {
		t.Fatalf("Forget of a stale claim: %v, %v", found, err)
	}
	if err := l.Complete(ctx, receipt{By: "late holder"}); !errors.Is(err, idemsql.ErrLeaseLost) {
		t.Fatalf("the forgotten holder's Complete: %v, want ErrLeaseLost", err)
	}
	if n := e.idemRows("f-stale"); n != 0 {
		t.Fatalf("the forgotten holder wrote: %d rows", n)
	}
	time.Sleep(2 * time.Millisecond) // a new generation is a new millisecond
	var calls atomic.Int64
	res, err := idemsql.RunExternal(ctx, e.store, "f-stale", external("next", &calls))
	if err != nil || res.Replayed || calls.Load() != 1 || res.Value.Attempt != 1 || res.Value.Downstream == l.DownstreamKey {
		t.Fatalf("after Forget: %+v, %v, %d calls (old downstream key %s)", res, err, calls.Load(), l.DownstreamKey)
	}
	// A released claim is not live either.
	r, err := idemsql.ClaimLease(ctx, e.store, "f-released", idemsql.Options{Lease: time.Minute})
	if err != nil || !r.Held {
		t.Fatalf("claim: %+v, %v", r, err)
	}
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if found, err := e.forget(ctx, "f-released"); err != nil || !found {
		t.Fatalf("Forget of a released claim: %v, %v", found, err)
	}
}

func waitLease(t *testing.T, e *env, key, state string) {
	t.Helper()
	for i := 0; ; i++ {
		r, found, err := idemsql.Lookup(context.Background(), e.store, key)
		if err != nil || !found {
			t.Fatalf("lookup: %v, %v", found, err)
		}
		if r.Lease == state {
			return
		}
		if i > 1000 {
			t.Fatalf("lease of %q is %s, never %s", key, r.Lease, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A claim in a transaction still open, new or re-claiming an expired key,
// is refused at once where the database has row locks: Forget never
// waits for the holder (it would here forever: the holder ends only after
// Forget returned). SQLite's one writer makes Forget wait for the holder's
// COMMIT instead, after which the row is an outcome like any other.
func testForgetOpenClaim(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	e.mustGuarded("f-old", 1, &runs)
	e.expire("f-old")
	for _, key := range []string{"f-new", "f-old"} {
		holder := e.holdKey(ctx, key, &runs)
		if e.dialect == "sqlite" {
			done := make(chan error, 1)
			go func() { _, err := e.forget(ctx, key); done <- err }()
			if err := holder.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("%s: Forget after the holder committed: %v", key, err)
			}
			continue
		}
		found, err := e.forget(ctx, key)
		if !errors.Is(err, idemsql.ErrInProgress) || found {
			t.Fatalf("%s: Forget beside an open claim: %v, %v; want ErrInProgress", key, found, err)
		}
		oneClass(t, err)
		if err := holder.Commit(ctx); err != nil {
			t.Fatalf("%s: the holder's commit: %v", key, err)
		}
		r, found, err := idemsql.Lookup(ctx, e.store, key)
		if err != nil || !found || r.Status != idemsql.StatusCompleted || r.Expired {
			t.Fatalf("%s: the holder's outcome: %+v, %v, %v", key, r, found, err)
		}
	}
}

// Workers guard one key in lease mode while another forgets it over and
// over: the key runs again after each Forget, but never two runs at once.
// A Forget that deleted a live claim would let the next worker claim the
// key beside the running holder.
func testForgetRace(t *testing.T, e *env) {
	ctx := context.Background()
	var running, overlaps, calls, forgotten atomic.Int64
	fn := func(ctx context.Context, c idemsql.Claim) (receipt, error) {
		if running.Add(1) > 1 {
			overlaps.Add(1)
		}
		defer running.Add(-1)
		calls.Add(1)
		time.Sleep(3 * time.Millisecond)
		return receipt{Attempt: c.Attempt}, nil
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := idemsql.RunExternal(ctx, e.store, "f-race", fn, idemsql.Options{Lease: 30 * time.Second})
				if err != nil && !errors.Is(err, idemsql.ErrInProgress) && !errors.Is(err, idemsql.ErrRetryable) {
					t.Errorf("RunExternal: %v", err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			found, err := e.forget(ctx, "f-race")
			switch {
			case err == nil && found:
				forgotten.Add(1)
			case err != nil && !errors.Is(err, idemsql.ErrInProgress) && !errors.Is(err, idemsql.ErrRetryable):
				t.Errorf("Forget: %v", err)
				return
			}
		}
	}()
	for i := 0; i < 3000 && (forgotten.Load() < 20 || calls.Load() < 20); i++ {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if overlaps.Load() != 0 {
		t.Fatalf("fn ran beside itself %d times (%d calls, %d keys forgotten)", overlaps.Load(), calls.Load(), forgotten.Load())
	}
	if forgotten.Load() < 2 || calls.Load() < 2 {
		t.Fatalf("%d calls, %d keys forgotten: the race did not happen", calls.Load(), forgotten.Load())
	}
	t.Logf("%d calls, %d keys forgotten", calls.Load(), forgotten.Load())
}
