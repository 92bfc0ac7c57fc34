package integration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	leaseCases = append(leaseCases, leaseCase{"AbandonedClaimKeepsDownstreamKey", testLeaseAbandonedKeepsGeneration})
}

// A stale claim that Sweep abandons (no handler) may hide an effect the dead
// holder performed. When the abandoned outcome's retention runs out and the
// key is claimed again, fn runs with the dead holder's downstream key, so
// that the downstream system can still absorb the repeat; Purge keeps the
// abandoned row for that reason. So after a handler's ResolveAbandoned. A
// completed outcome that expired is a new operation: a new downstream key.
func testLeaseAbandonedKeepsGeneration(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var calls atomic.Int64
	for _, c := range []struct {
		key string
		h   idemsql.SweepHandler
	}{
		{"abandon-gen-1", nil},
		{"abandon-gen-2", func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
			return idemsql.Resolution{Outcome: idemsql.ResolveAbandoned, Message: "no trace of the charge"}, nil
		}},
	} {
		dead := e.staleClaim(t, c.key)
		time.Sleep(60 * time.Millisecond)
		if st, err := e.ops.sweep(ctx, c.h); err != nil || st.Abandoned != 1 {
			t.Fatalf("%s: sweep: %+v, %v", c.key, st, err)
		}
		e.expire(c.key)
		// Purge keeps the abandoned row past its retention: deleting it
		// would lose the downstream key.
		if st, err := e.ops.purge(ctx); err != nil || st.Deleted != 0 {
			t.Fatalf("%s: purge: %+v, %v; want the abandoned row kept", c.key, st, err)
		}
		time.Sleep(5 * time.Millisecond) // a new claim time would show in the downstream key
		res, err := e.ops.do(ctx, c.key, external("again", &calls))
		if err != nil || res.Replayed || res.Value.Attempt != 3 {
			t.Fatalf("%s: claim after the abandoned outcome expired: %+v, %v", c.key, res, err)
		}
		if res.Value.Downstream != dead.DownstreamKey {
			t.Fatalf("%s: downstream key %q after the abandoned claim expired, the dead holder had %q",
				c.key, res.Value.Downstream, dead.DownstreamKey)
		}
	}

	first, err := e.ops.do(ctx, "abandon-gen-3", external("first", &calls))
	if err != nil {
		t.Fatal(err)
	}
	e.expire("abandon-gen-3")
	if st, err := e.ops.purge(ctx); err != nil || st.Deleted != 1 {
		t.Fatalf("purge: %+v, %v; want the expired completed row deleted", st, err)
	}
	time.Sleep(5 * time.Millisecond)
	again, err := e.ops.do(ctx, "abandon-gen-3", external("again", &calls))
	if err != nil || again.Value.Downstream == first.Value.Downstream {
		t.Fatalf("a completed outcome that expired: %+v, %v; want a new downstream key", again, err)
	}
}
