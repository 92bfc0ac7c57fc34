package integration

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	leaseCases = append(leaseCases,
		leaseCase{"PanickingSweepHandlerIsCounted", testLeaseSweepHandlerPanics},
		leaseCase{"PanicInFnLeavesNoConnectionBehind", testLeasePanicFreesConnection},
	)
}

// A sweep handler that panics must not take the process down (SweepEvery
// runs handlers in the background of a service): the panic is recovered
// for that claim, counted as failed and returned as an error; the other
// claims of the batch are resolved; the panicking one keeps the sweeper's
// lease until it runs out, and is taken over after that.
func testLeaseSweepHandlerPanics(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	e.staleClaim(t, "sweep-panic")
	e.staleClaim(t, "sweep-calm")
	time.Sleep(60 * time.Millisecond)
	const lease = 300 * time.Millisecond
	h := func(_ context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
		if s.Key == "sweep-panic" {
			panic("handler bug")
		}
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: receipt{By: "sweeper", Attempt: s.Attempt}}, nil
	}
	st, err := e.ops.sweep(ctx, h, idemsql.Options{Lease: lease, Heartbeat: lease / 4})
	if err == nil || !strings.Contains(err.Error(), "handler bug") {
		t.Fatalf("sweep with a panicking handler: %v, want an error with the panic", err)
	}
	if st.Found != 2 || st.Completed != 1 || st.Failed != 1 {
		t.Fatalf("sweep stats %+v, want 2 found, 1 completed, 1 failed", st)
	}
	e.wantRow(t, "sweep-calm", idemsql.StatusCompleted, 2, "sweeper")
	e.wantRow(t, "sweep-panic", idemsql.StatusInProgress, 2, "")
	var calls atomic.Int64
	if _, err := e.ops.do(ctx, "sweep-panic", external("caller", &calls)); !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatalf("while the sweeper's lease holds: %v, want ErrInProgress", err)
	}
	time.Sleep(2 * lease)
	res, err := e.ops.do(ctx, "sweep-panic", external("caller", &calls))
	if err != nil || res.Value.Attempt != 3 {
		t.Fatalf("after the sweeper's lease ran out: %+v, %v; want a takeover at attempt 3", res, err)
	}

	// In the background, the same: each pass reports the panic, the loop
	// goes on.
	e.staleClaim(t, "sweep-panic-bg")
	time.Sleep(60 * time.Millisecond)
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	reports := make(chan error, 16)
	done := make(chan error, 1)
	go func() {
		done <- e.ops.every(bctx, 10*time.Millisecond, func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
			panic("background handler bug")
		}, func(_ idemsql.SweepStats, err error) {
			if err != nil {
				select {
				case reports <- err:
				default:
				}
			}
		}, idemsql.Options{Lease: lease})
	}()
	select {
	case err := <-reports:
		if !strings.Contains(err.Error(), "background handler bug") {
			t.Fatalf("report: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SweepEvery reported no panic")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("SweepEvery: %v", err)
	}
}

// fn panics while the heartbeat renews, on a pool of one connection: the
// panic goes on to the caller, who recovers it, and the pool's only
// connection must be back, so that the next call works.
func testLeasePanicFreesConnection(t *testing.T, e *leaseEnv) {
	ops := e.opsWithPoolSize(t, 1)
	const lease = 200 * time.Millisecond
	for i, key := range []string{"panic-pool-1", "panic-pool-2"} {
		func() {
			defer func() {
				if r := recover(); r != "boom" {
					t.Fatalf("call %d: recovered %v, want the panic to go on", i, r)
				}
			}()
			_, _ = ops.do(context.Background(), key, func(context.Context, idemsql.Claim) (receipt, error) {
				time.Sleep(lease / 2) // a few renewals
				panic("boom")
			}, idemsql.Options{Lease: lease, Heartbeat: 5 * time.Millisecond})
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var calls atomic.Int64
	if _, err := ops.do(ctx, "panic-pool-3", external("next", &calls)); err != nil {
		t.Fatalf("the call after the panics, on a pool of one connection: %v", err)
	}
	time.Sleep(2 * lease)
	res, err := ops.do(ctx, "panic-pool-1", external("next", &calls), idemsql.Options{Lease: lease})
	if err != nil || res.Value.Attempt != 2 {
		t.Fatalf("takeover after the panic: %+v, %v", res, err)
	}
}

// opsWithPoolSize is the lease-mode API on a pool of its own with at most
// n connections.
func (e *leaseEnv) opsWithPoolSize(t *testing.T, n int) leaseOps {
	t.Helper()
	if e.backend == "postgres-pgx" {
		cfg, err := pgxpool.ParseConfig(e.dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = int32(n)
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return opsFor(storeOn(e.env, idempostgres.New(pool)))
	}
	db, err := sql.Open(e.sqlDriver())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(n)
	t.Cleanup(func() { db.Close() })
	return opsFor(storeOn(e.env, sqlDriver(e.dialect, db)))
}
