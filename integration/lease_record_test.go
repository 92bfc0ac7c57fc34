package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	leaseCases = append(leaseCases,
		leaseCase{"OutcomeRecordedAfterPoolKilled", testLeaseRecordAfterPoolKilled},
		leaseCase{"OutcomeRecordedAfterCommitInterrupted", testLeaseRecordAfterCommitKilled},
		leaseCase{"OutcomeRecordedWhenCommitReplyLost", testLeaseRecordCommitReplyLost},
		leaseCase{"HeartbeatSurvivesKilledConnections", testLeaseHeartbeatSurvivesKills},
		leaseCase{"CallerDeadlineDoesNotEndTheLease", testLeaseCallerDeadline},
	)
}

// armed is a switch a test flips when fn returns: the hooks act on the
// transactions that record the outcome, not on the claim's.
type armed struct{ on atomic.Bool }

// once reports true the first time it is asked after the switch was set.
func (a *armed) once() bool { return a.on.CompareAndSwap(true, false) }

// Between fn's return and the recording, every connection of the pool is
// killed from the server's side: more of them than Options.MaxAttempts (10
// here: the pool has 16 connections), each idle for less than the second
// after which pgx pings a connection before handing it out. The recording meets them one after the other and must get
// through, without fn running a second time. Both outcomes are tried: a
// result, and fn's error (the lease is released).
func testLeaseRecordAfterPoolKilled(t *testing.T, e *leaseEnv) {
	if e.dialect == "sqlite" {
		t.Skip("SQLite has no connections to kill")
	}
	ctx := context.Background()
	h := &hooks{}
	ops := e.hookedOps(t, h)
	var calls atomic.Int64
	const attempts = 10
	tries := idemsql.Options{MaxAttempts: attempts}
	const idle = attempts + 2
	res, err := ops.do(ctx, "killed-1", func(_ context.Context, l idemsql.Claim) (receipt, error) {
		calls.Add(1)
		if err := h.warm(ctx, idle); err != nil {
			return receipt{}, err
		}
		e.killAll(t, h.connIDs())
		return receipt{By: "fn", Attempt: l.Attempt}, nil
	}, tries)
	if err != nil || res.Value.By != "fn" {
		t.Fatalf("after the pool's connections were killed: %+v, %v", res, err)
	}
	t.Logf("BEGINs that failed on killed connections: %d of %d connections", h.failedBegins(), len(h.connIDs()))
	e.wantRow(t, "killed-1", idemsql.StatusCompleted, 1, "fn")

	boom := errors.New("gateway timeout")
	_, err = ops.do(ctx, "killed-2", func(context.Context, idemsql.Claim) (receipt, error) {
		calls.Add(1)
		if err := h.warm(ctx, idle); err != nil {
			return receipt{}, err
		}
		e.killAll(t, h.connIDs())
		return receipt{}, boom
	}, tries)
	if err != boom {
		t.Fatalf("fn's error after the pool's connections were killed: %v, want fn's error unchanged", err)
	}
	e.wantReleased(t, "killed-2", 1)
	if n := calls.Load(); n != 2 {
		t.Fatalf("fn ran %d times, want 2", n)
	}
}

// The connection of the recording's transaction is killed just before its
// COMMIT: the COMMIT fails on a dead connection, and whether it committed
// is, to the client, unknown. The recording tries again and finds out.
func testLeaseRecordAfterCommitKilled(t *testing.T, e *leaseEnv) {
	if e.dialect == "sqlite" {
		t.Skip("SQLite has no connections to kill")
	}
	ctx := context.Background()
	var a armed
	h := &hooks{commit: func(ctx context.Context, c hookConn) error {
		if a.once() {
			e.killAll(t, []int64{c.serverID()})
		}
		return nil
	}}
	ops := e.hookedOps(t, h)
	var calls atomic.Int64
	res, err := ops.do(ctx, "commit-killed", func(_ context.Context, l idemsql.Claim) (receipt, error) {
		calls.Add(1)
		a.on.Store(true)
		return receipt{By: "fn", Attempt: l.Attempt}, nil
	})
	if err != nil || res.Value.By != "fn" {
		t.Fatalf("after the recording's COMMIT met a killed connection: %+v, %v", res, err)
	}
	if a.on.Load() {
		t.Fatal("no COMMIT was interrupted")
	}
	e.wantRow(t, "commit-killed", idemsql.StatusCompleted, 1, "fn")
	if n := calls.Load(); n != 1 {
		t.Fatalf("fn ran %d times", n)
	}
}

// The recording's COMMIT goes through, but the client learns nothing: the
// connection breaks before the reply (an unexpected EOF where the reply
// should be). The next try finds its own write in the row and reports what
// happened, for each kind of outcome.
func testLeaseRecordCommitReplyLost(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var a armed
	h := &hooks{committed: func(err error) error {
		if err == nil && a.once() {
			return fmt.Errorf("injected: reply lost: %w", io.ErrUnexpectedEOF)
		}
		return err
	}}
	ops := e.hookedOps(t, h)
	arm := func(v receipt, err error) func(context.Context, idemsql.Claim) (receipt, error) {
		return func(context.Context, idemsql.Claim) (receipt, error) {
			a.on.Store(true)
			return v, err
		}
	}
	check := func(what string) {
		t.Helper()
		if a.on.Load() {
			t.Fatalf("%s: no COMMIT reply was lost", what)
		}
	}

	res, err := ops.do(ctx, "reply-1", arm(receipt{By: "fn"}, nil))
	check("completion")
	if err != nil || res.Value.By != "fn" {
		t.Fatalf("completion whose COMMIT reply was lost: %+v, %v", res, err)
	}
	e.wantRow(t, "reply-1", idemsql.StatusCompleted, 1, "fn")

	boom := errors.New("gateway timeout")
	_, err = ops.do(ctx, "reply-2", arm(receipt{}, boom))
	check("release")
	if err != boom {
		t.Fatalf("release whose COMMIT reply was lost: %v, want fn's error unchanged", err)
	}
	e.wantReleased(t, "reply-2", 1)

	failed, err := ops.do(ctx, "reply-3", arm(receipt{}, idemsql.Permanent("card_declined", errors.New("declined"))),
		idemsql.Options{RecordFailures: true})
	check("failure")
	var fe *idemsql.Error
	if !errors.Is(err, idemsql.ErrFailureRecorded) || !errors.As(err, &fe) || fe.Class != "card_declined" || failed.Replayed {
		t.Fatalf("failure whose COMMIT reply was lost: %v", err)
	}
	if s, at, _ := e.row("reply-3"); s != idemsql.StatusFailed || at != 1 {
		t.Fatalf("reply-3: %s at attempt %d", s, at)
	}

	// A sweep handler that hands the released claim back to callers: the
	// row goes back to its holder's attempt, which the next try must
	// recognise as its own write.
	st, err := ops.sweep(ctx, func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
		a.on.Store(true)
		return idemsql.Resolution{Outcome: idemsql.ResolveReleased}, nil
	}, idemsql.Options{SweepReleased: true})
	check("a sweep handler's release of a released claim")
	if err != nil || st.Found != 1 || st.Released != 1 {
		t.Fatalf("sweep whose release's COMMIT reply was lost: %+v, %v", st, err)
	}
	e.wantReleased(t, "reply-2", 1)
}

// While fn runs for several leases, every connection of the pool is killed
// again and again. The heartbeat's renewals meet dead connections and must
// get through anyway: fn is not cancelled and no one else takes the key.
func testLeaseHeartbeatSurvivesKills(t *testing.T, e *leaseEnv) {
	if e.dialect == "sqlite" {
		t.Skip("SQLite has no connections to kill")
	}
	ctx := context.Background()
	const lease = time.Second
	h := &hooks{}
	ops := e.hookedOps(t, h)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(lease / 2):
				e.killAll(t, h.connIDs())
			}
		}
	}()
	res, err := ops.do(ctx, "hb-killed", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
		select {
		case <-ctx.Done():
			return receipt{}, context.Cause(ctx)
		case <-time.After(2 * lease):
		}
		close(stop)
		wg.Wait()
		return receipt{By: "fn"}, nil
	}, idemsql.Options{Lease: lease, Heartbeat: lease / 4})
	select {
	case <-stop:
	default:
		close(stop)
		wg.Wait()
	}
	if err != nil || res.Value.By != "fn" {
		t.Fatalf("fn under a heartbeat whose connections were killed: %+v, %v", res, err)
	}
	e.wantRow(t, "hb-killed", idemsql.StatusCompleted, 1, "fn")
}

// The caller's deadline is shorter than fn, which cannot be stopped (a
// call in flight to the external system). fn's context ends with the
// deadline, but the lease must not: until fn returns, every other caller is
// told the key is in progress, and fn's outcome is recorded.
func testLeaseCallerDeadline(t *testing.T, e *leaseEnv) {
	const lease = 600 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), lease/4)
	defer cancel()
	started := make(chan struct{})
	var ctxEnded atomic.Bool
	done := make(chan error, 1)
	var res idemsql.Result[receipt]
	go func() {
		var err error
		res, err = e.ops.do(ctx, "deadline-short", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
			close(started)
			time.Sleep(5 * lease / 2) // deaf to ctx
			ctxEnded.Store(ctx.Err() != nil)
			return receipt{By: "slow", Attempt: l.Attempt}, nil
		}, idemsql.Options{Lease: lease, Heartbeat: lease / 4})
		done <- err
	}()
	<-started
	var calls atomic.Int64
	probes := 0
	for {
		select {
		case err := <-done:
			if err != nil || res.Value.By != "slow" {
				t.Fatalf("the slow call: %+v, %v", res, err)
			}
			if !ctxEnded.Load() {
				t.Fatal("fn's context did not end with the caller's deadline")
			}
			if calls.Load() != 0 || probes < 5 {
				t.Fatalf("another caller ran %d times while fn ran (%d probes)", calls.Load(), probes)
			}
			e.wantRow(t, "deadline-short", idemsql.StatusCompleted, 1, "slow")
			return
		case <-time.After(lease / 4):
			probes++
			if _, err := e.ops.do(context.Background(), "deadline-short", external("second", &calls), idemsql.Options{Lease: lease}); !errors.Is(err, idemsql.ErrInProgress) {
				t.Fatalf("another caller while fn runs past the caller's deadline: %v, want ErrInProgress", err)
			}
		}
	}
}
