package integration

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	leaseCases = append(leaseCases,
		leaseCase{"UnrenewedLeaseReleasedIsFnsError", testLeaseUnrenewedThenReleased},
		leaseCase{"HeartbeatRestoresLeaseAfterOutage", testLeaseRestoredAfterOutage},
		leaseCase{"LeaseWaitEndedByContext", testLeaseWaitEndedByContext},
		leaseCase{"RecordingGivesUpWithOneClass", testLeaseRecordingGivesUp},
	)
}

// errUnreachable stands for a database out of reach: BEGIN fails with it.
var errUnreachable = errors.New("injected: the database is out of reach")

// The heartbeat cannot renew while fn runs (BEGIN fails), so fn's context
// is cancelled with a cause matching ErrLeaseLost, of that one class, with
// the failure inside. Then the database is back, and the release of fn's
// error goes through: no one else held the key, so the call returns fn's
// error, not ErrLeaseLost.
func testLeaseUnrenewedThenReleased(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var down atomic.Bool
	ops := e.outageOps(t, &down)
	const lease = 400 * time.Millisecond
	var cause error
	_, err := ops.do(ctx, "unrenewed-1", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
		down.Store(true)
		defer down.Store(false)
		select {
		case <-ctx.Done():
			cause = context.Cause(ctx)
			return receipt{}, ctx.Err()
		case <-time.After(10 * lease):
			return receipt{}, errors.New("fn was not cancelled")
		}
	}, idemsql.Options{Lease: lease, Heartbeat: lease / 4})
	if !errors.Is(err, context.Canceled) || errors.Is(err, idemsql.ErrLeaseLost) {
		t.Errorf("call: %v; want fn's error, and not ErrLeaseLost: the release went through", err)
	}
	oneClass(t, err)
	e.wantReleased(t, "unrenewed-1", 1)
	if !errors.Is(cause, idemsql.ErrLeaseLost) || !errors.Is(cause, errUnreachable) {
		t.Fatalf("fn's context cause: %v, want ErrLeaseLost with the failure inside", cause)
	}
	oneClass(t, cause)
}

// The database is out of reach for longer than the lease: the heartbeat
// cancels fn. But fn cannot stop at once (a call in flight) and goes on
// after the database is back. The heartbeat goes on trying while fn runs:
// its renewal gets through (no one took the key meanwhile) and restores the
// lease, so another caller is told the key is in progress until fn's
// outcome is recorded.
func testLeaseRestoredAfterOutage(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var down atomic.Bool
	ops := e.outageOps(t, &down)
	const lease = 400 * time.Millisecond
	var calls atomic.Int64
	res, err := ops.do(ctx, "outage-1", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
		down.Store(true)
		select {
		case <-ctx.Done():
		case <-time.After(10 * lease):
			down.Store(false)
			return receipt{}, errors.New("fn was not cancelled")
		}
		down.Store(false)
		time.Sleep(lease / 2) // the heartbeat's next tries get through
		for range 6 {
			if _, err := e.ops.do(context.Background(), "outage-1", external("second", &calls)); !errors.Is(err, idemsql.ErrInProgress) {
				return receipt{}, fmt.Errorf("another caller while fn still runs after the outage: %v, want ErrInProgress", err)
			}
			time.Sleep(lease / 4)
		}
		return receipt{By: "fn"}, nil // deaf to ctx: the effect went through
	}, idemsql.Options{Lease: lease, Heartbeat: lease / 4})
	if err != nil || res.Value.By != "fn" {
		t.Fatalf("call: %+v, %v", res, err)
	}
	if calls.Load() != 0 {
		t.Fatalf("another caller ran %d times", calls.Load())
	}
	e.wantRow(t, "outage-1", idemsql.StatusCompleted, 1, "fn")
}

// A LeaseWait wait that ctx ends returns ctx's error, not also
// ErrInProgress: one class.
func testLeaseWaitEndedByContext(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	c, err := e.ops.claim(ctx, "waited-1", idemsql.Options{Lease: time.Minute})
	if err != nil || !c.Held {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	// The first read finds the live lease; ctx ends during the wait
	// before the next.
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	var calls atomic.Int64
	_, err = e.ops.do(wctx, "waited-1", external("x", &calls), idemsql.Options{LeaseWait: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait ended by ctx: %v, want the deadline", err)
	}
	oneClass(t, err)
	if _, err := e.ops.do(ctx, "waited-1", external("x", &calls)); !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatalf("without a wait: %v, want ErrInProgress", err)
	}
	oneClass(t, err)
}

// Every COMMIT of the recording fails on a broken connection (the server
// killed it): the recording tries until the lease runs out and gives up
// with ErrCommitUnknown, of that one class, with the driver's error
// reachable. On SQLite, which has no connection to kill, the driver says
// driver.ErrBadConn in place of every COMMIT: by database/sql's contract
// none of them went out, so nothing is unknown: the recording gives up with
// ErrLeaseLost (nothing was recorded), the driver's error inside.
func testLeaseRecordingGivesUp(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var after atomic.Bool
	var interrupted atomic.Int64
	ops := e.hookedOps(t, &hooks{commit: func(ctx context.Context, c hookConn) error {
		if !after.Load() {
			return nil
		}
		interrupted.Add(1)
		if e.dialect == "sqlite" {
			return driver.ErrBadConn
		}
		e.killAll(t, []int64{c.serverID()})
		return nil
	}})
	const lease = 600 * time.Millisecond
	_, err := ops.do(ctx, "gives-up-1", func(context.Context, idemsql.Claim) (receipt, error) {
		after.Store(true)
		return receipt{By: "fn"}, nil
	}, idemsql.Options{Lease: lease})
	after.Store(false)
	want := idemsql.ErrCommitUnknown
	if e.dialect == "sqlite" {
		want = idemsql.ErrLeaseLost
	}
	if !errors.Is(err, want) {
		t.Fatalf("recording whose every COMMIT broke: %v, want %v", err, want)
	}
	oneClass(t, err)
	if n := interrupted.Load(); n < 2 {
		t.Fatalf("%d COMMITs tried, want the recording to try again", n)
	}
	var pgErr *pgconn.PgError
	switch e.dialect {
	case "postgres":
		if !errors.As(err, &pgErr) {
			t.Fatalf("%v: the driver's *pgconn.PgError is not reachable", err)
		}
	case "mysql":
		if !errors.Is(err, mysql.ErrInvalidConn) && !errors.Is(err, driver.ErrBadConn) {
			t.Fatalf("%v: the driver's error is not reachable", err)
		}
	case "sqlite":
		if !errors.Is(err, driver.ErrBadConn) {
			t.Fatalf("%v: the driver's error is not reachable", err)
		}
	}
	e.wantRow(t, "gives-up-1", idemsql.StatusInProgress, 1, "")
}
