package docsnippets

import (
	"context"
	"database/sql"
	"log"
	"reflect"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// provider is a payment provider's client: it charges under an
// idempotency key of the caller's, and looks a charge up by that key.
type provider interface {
	Charge(ctx context.Context, amount int64, idempotencyKey string) (Charge, error)
	LookUp(ctx context.Context, idempotencyKey string) (c Charge, found bool, err error)
}

func leaseRunExternal(ctx context.Context, store *idemsql.Store[*sql.Tx], psp provider, orderID string, amount int64) (idemsql.Result[Charge], error) {
	// snippet: lease-runexternal
	res, err := idemsql.RunExternal(ctx, store, "charge:"+orderID,
		func(ctx context.Context, claim idemsql.Claim) (Charge, error) {
			// The provider's own guard (Stripe's Idempotency-Key): the same key
			// across retries and takeovers.
			c, err := psp.Charge(ctx, amount, claim.DownstreamKey)
			if err != nil {
				return Charge{}, err // a time-out may hide a charge: the retry reuses the key
			}
			return c, nil
		}, idemsql.Options{Lease: 30 * time.Second})
	// end snippet
	return res, err
}

func leaseSweep(ctx context.Context, store *idemsql.Store[*sql.Tx], psp provider) (idemsql.SweepStats, idemsql.PurgeStats, error) {
	// snippet: lease-sweep
	// Claims no holder has (lease run out, committed without a lease), in
	// batches with SKIP LOCKED: safe with several sweepers. Claims released by
	// fn's error are their callers' to retry until their retention has run
	// out; SweepReleased hands them to the handler at once, to reconcile a
	// request whose caller never retries. The handler resumes or compensates
	// under a lease of its own (s.Reason says why the claim had no holder); a
	// nil handler marks each one failed ("abandoned").
	stats, err := idemsql.Sweep(ctx, store, func(ctx context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
		c, found, err := psp.LookUp(ctx, s.DownstreamKey)
		switch {
		case err != nil:
			return idemsql.Resolution{}, err // try again in a later sweep
		case !found:
			return idemsql.Resolution{Outcome: idemsql.ResolveReleased}, nil // never charged: the next call runs again, same downstream key
		}
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: c}, nil
	}, idemsql.Options{SweepReleased: true, BatchSize: 100, ResultType: reflect.TypeFor[Charge]()})
	if err != nil {
		log.Printf("sweep: %v (%+v)", err, stats) // the batches before the error stand
	}

	// Completed and failed rows past their retention, in bounded batches;
	// never an in_progress row (Sweep resolves those). Serves atomic mode too.
	purged, err := idemsql.Purge(ctx, store)
	// end snippet
	return stats, purged, err
}
