package integration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	leaseCases = append(leaseCases, leaseCase{"ReleaseEndsTheFence", testLeaseReleaseEndsFence})
}

// Release ends the lease, and with it the fence of that Lease: a renewal
// must not re-arm the released row (the next caller would get ErrInProgress
// for a whole lease), and no outcome may be recorded through it.
func testLeaseReleaseEndsFence(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	c, err := e.ops.claim(ctx, "rel-1", idemsql.Options{Lease: 10 * time.Second})
	if err != nil || !c.Held {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	l := c
	if err := l.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	wantLost(t, "renewal after the release", l.Renew(ctx))
	e.wantReleased(t, "rel-1", 1)
	wantLost(t, "completion after the release", l.Complete(ctx, receipt{By: "released"}))
	wantLost(t, "failure after the release", l.Fail(ctx, "x", "y"))
	wantLost(t, "second release", l.Release(ctx))
	e.wantReleased(t, "rel-1", 1)

	var calls atomic.Int64
	res, err := e.ops.do(ctx, "rel-1", external("next", &calls))
	if err != nil || res.Replayed || res.Value.Attempt != 2 || res.Value.Downstream != l.DownstreamKey {
		t.Fatalf("the next call after the release: %+v, %v; want a takeover at attempt 2 with %q", res, err, l.DownstreamKey)
	}
	e.wantRow(t, "rel-1", idemsql.StatusCompleted, 2, "next")
}
