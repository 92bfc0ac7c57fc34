package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	leaseCases = append(leaseCases,
		leaseCase{"SlowClaimGetsAWholeLease", testLeaseSlowClaim},
		leaseCase{"DeadlineMovesWithRenewals", testLeaseDeadline},
	)
}

// The claim's transaction waits before its BEGIN goes out (a busy pool, a
// SQLite writer holding the lock for up to busy_timeout) for longer than
// the lease. The lease starts when the statement that sets lease_until
// runs, so the heartbeat's first tick finds a fresh lease, renews it, and
// fn runs to the end.
func testLeaseSlowClaim(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	const lease = 600 * time.Millisecond
	h := &hooks{begin: func(_ context.Context, n int64) error {
		if n == 2 { // the first transaction reads the key; the second claims it
			time.Sleep(3 * lease / 2)
		}
		return nil
	}}
	ops := e.hookedOps(t, h)
	res, err := ops.do(ctx, "slow-claim", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
		select {
		case <-ctx.Done():
			return receipt{}, context.Cause(ctx)
		case <-time.After(3 * lease / 2):
		}
		return receipt{By: "fn", Attempt: l.Attempt}, nil
	}, idemsql.Options{Lease: lease, Heartbeat: lease / 4})
	if err != nil || res.Value.By != "fn" {
		t.Fatalf("after a slow claim: %+v, %v; want fn to run to the end", res, err)
	}
	e.wantRow(t, "slow-claim", idemsql.StatusCompleted, 1, "fn")
}

// fn sees when its lease ends by the local clock: within one lease from
// now, and later after the heartbeat renewed it.
func testLeaseDeadline(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	const lease = time.Second
	if d := (idemsql.Claim{}).Deadline(); !d.IsZero() {
		t.Fatalf("zero Claim's deadline: %v", d)
	}
	_, err := e.ops.do(ctx, "deadline-1", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
		first := l.Deadline()
		if now := time.Now(); !first.After(now) || first.After(now.Add(lease)) {
			return receipt{}, errors.New("the first deadline is not within a lease from now")
		}
		for wait := time.After(2 * lease); ; {
			select {
			case <-wait:
				return receipt{}, errors.New("the deadline did not move with the heartbeat")
			case <-time.After(10 * time.Millisecond):
			}
			if l.Deadline().After(first) {
				return receipt{By: "fn"}, nil
			}
		}
	}, idemsql.Options{Lease: lease, Heartbeat: lease / 6})
	if err != nil {
		t.Fatal(err)
	}

	c, err := e.ops.claim(ctx, "deadline-2", idemsql.Options{Lease: lease})
	if err != nil || !c.Held {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	first := c.Deadline()
	time.Sleep(20 * time.Millisecond)
	if err := c.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.Deadline().After(first) {
		t.Fatalf("Renew did not move the deadline from %v", first)
	}
}
