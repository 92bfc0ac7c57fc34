package integration

import (
	"context"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// TestSweepableAgrees: on a table with live, stale, released, abandoned,
// completed and expired rows, and a released claim past its retention, the
// rows ListFilter.Sweepable lists are those Stats counts as sweepable, and
// those Sweep takes, with a handler or without; the claim its holder
// released a moment ago is left as it was.
func TestSweepableAgrees(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			e := b.setup(t)
			fx := makeInspectFixture(t, e)
			old, err := opsFor(e.store).claim(ctx, "pay:released-long-ago", idemsql.Options{Lease: time.Hour})
			if err != nil || !old.Held {
				t.Fatalf("claim: %+v %v", old, err)
			}
			if err := old.Release(ctx); err != nil {
				t.Fatal(err)
			}
			e.exec(t, "UPDATE "+e.table+" SET lease_until = "+e.secondsAgo(5)+", expires_at = "+e.secondsAgo(5)+" WHERE idem_key = ?", "pay:released-long-ago")
			want := []string{"atomic:abandoned", "pay:released-long-ago", "pay:stale"}

			var listed []string
			for f := (idemsql.ListFilter{Sweepable: true}); ; {
				recs, next, err := idemsql.List(ctx, e.store, f)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					listed = append(listed, r.Key)
				}
				if next == "" {
					break
				}
				f.After = next
			}
			st, err := idemsql.Stats(ctx, e.store)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(listed, want) || st.Sweepable != int64(len(want)) {
				t.Fatalf("List lists %q, Stats counts %d sweepable; want %q", listed, st.Sweepable, want)
			}

			released := func() idemsql.Record {
				t.Helper()
				r, found, err := idemsql.Lookup(ctx, e.store, "pay:released")
				if err != nil || !found {
					t.Fatalf("Lookup: %v %v", found, err)
				}
				return r
			}
			before := released()
			var mu sync.Mutex
			var handed []string
			sw, err := idemsql.Sweep(ctx, e.store, func(_ context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
				mu.Lock()
				handed = append(handed, s.Key)
				mu.Unlock()
				return idemsql.Resolution{Outcome: idemsql.ResolveReleased}, nil
			})
			sort.Strings(handed)
			if err != nil || sw.Found != len(want) || !slices.Equal(handed, want) {
				t.Fatalf("Sweep with a handler took %q: %+v, %v; want %q", handed, sw, err, want)
			}
			after := released()
			if after.Attempt != before.Attempt || after.Owner != before.Owner || after.ErrorMessage != before.ErrorMessage ||
				after.Lease != idemsql.LeaseReleased || before.Attempt != fx.released.Attempt {
				t.Fatalf("the claim its holder released: %+v before the sweep, %+v after", before, after)
			}
			// The claim released long ago went back to callers for another
			// retention, its attempt and reason kept; nothing is sweepable.
			r, _, err := idemsql.Lookup(ctx, e.store, "pay:released-long-ago")
			if err != nil || r.Attempt != 1 || r.Owner != old.Owner || r.Lease != idemsql.LeaseReleased ||
				r.ErrorMessage != idemsql.HandlerReleasedMessage+"; before: released by its holder" || r.Expired {
				t.Fatalf("the claim released long ago, after the sweep: %+v, %v", r, err)
			}
			if st, err := idemsql.Stats(ctx, e.store); err != nil || st.Sweepable != 0 {
				t.Fatalf("after the sweep: %+v, %v", st, err)
			}
			if sw, err := idemsql.Sweep(ctx, e.store, nil); err != nil || sw.Found != 0 {
				t.Fatalf("a sweep without a handler after it: %+v, %v", sw, err)
			}
		})
	}
}
