package idemsql_test

import (
	"context"
	"fmt"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

type receipt struct {
	ChargeID string `json:"charge_id"`
}

func ExampleRunExternal() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	calls := 0
	charge := func(ctx context.Context, l idemsql.Claim) (receipt, error) {
		calls++ // the payment provider's API, called with l.DownstreamKey as its idempotency key
		return receipt{ChargeID: "ch_1"}, nil
	}
	for range 2 {
		res, err := idemsql.RunExternal(ctx, store, "charge:order-7", charge, idemsql.Options{Lease: 10 * time.Second})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(res.Value.ChargeID, "replayed:", res.Replayed)
	}
	fmt.Println("provider called", calls, "time")
	// Output:
	// ch_1 replayed: false
	// ch_1 replayed: true
	// provider called 1 time
}

func ExampleClaimLease() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	pool := store

	c, err := idemsql.ClaimLease(ctx, pool, "email:welcome-42", idemsql.Options{Lease: time.Minute})
	if err != nil || !c.Held {
		fmt.Println(c.Held, err)
		return
	}
	// Send the e-mail with c.DownstreamKey as its Message-ID, renewing
	// with c.Renew while it takes long; then record the outcome.
	if err := c.Complete(ctx, receipt{ChargeID: "msg-1"}); err != nil {
		fmt.Println(err)
		return
	}
	again, err := idemsql.ClaimLease(ctx, pool, "email:welcome-42")
	fmt.Println(again.Held, string(again.Result), err)
	// Output:
	// false {"charge_id":"msg-1"} <nil>
}

func ExampleSweep() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	pool := store

	// A holder that claims and dies: its lease runs out.
	if _, err := idemsql.ClaimLease(ctx, pool, "charge:order-8", idemsql.Options{Lease: 50 * time.Millisecond}); err != nil {
		fmt.Println(err)
		return
	}
	time.Sleep(100 * time.Millisecond)

	stats, err := idemsql.Sweep(ctx, pool, func(ctx context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
		// Ask the provider what became of s.DownstreamKey; here it charged.
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: receipt{ChargeID: "ch_8"}}, nil
	})
	fmt.Println(stats.Found, stats.Completed, err)
	res, err := idemsql.RunExternal(ctx, pool, "charge:order-8", func(context.Context, idemsql.Claim) (receipt, error) {
		return receipt{}, fmt.Errorf("must not run again")
	})
	fmt.Println(res.Value.ChargeID, res.Replayed, err)
	// Output:
	// 1 1 <nil>
	// ch_8 true <nil>
}

func ExamplePurge() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	pool := store
	if _, err := idemsql.RunExternal(ctx, pool, "report:2026-11", func(context.Context, idemsql.Claim) (receipt, error) {
		return receipt{ChargeID: "r1"}, nil
	}, idemsql.Options{TTL: time.Millisecond, Lease: 10 * time.Millisecond}); err != nil {
		fmt.Println(err)
		return
	}
	time.Sleep(50 * time.Millisecond) // the retention runs out
	stats, err := idemsql.Purge(ctx, pool)
	fmt.Println(stats.Deleted, err)
	// Output:
	// 1 <nil>
}
