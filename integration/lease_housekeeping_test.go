package integration

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	leaseCases = append(leaseCases,
		leaseCase{"SweepBatchDoesNotBlockNewKeys", func(t *testing.T, e *leaseEnv) { testHousekeepingBlocksNothing(t, e, "sweep") }},
		leaseCase{"PurgeBatchDoesNotBlockNewKeys", func(t *testing.T, e *leaseEnv) { testHousekeepingBlocksNothing(t, e, "purge") }},
	)
}

// gate holds the first COMMIT of a hooked pool until it is opened: a
// housekeeping batch stays open, with every lock it took.
type gate struct {
	reached, open chan struct{}
	once          atomic.Bool
}

func newGate() *gate { return &gate{reached: make(chan struct{}), open: make(chan struct{})} }

func (g *gate) hold(context.Context, hookConn) error {
	if g.once.CompareAndSwap(false, true) {
		close(g.reached)
		select {
		case <-g.open:
		case <-time.After(30 * time.Second):
		}
	}
	return nil
}

// While a batch of Sweep or Purge is open, a claim of a new, unrelated key
// on another connection must not wait for it. On MySQL/MariaDB a locking
// scan under REPEATABLE READ takes gap locks: Sweep's scan of the lease
// index covers where every new atomic claim's entry lands, and Purge's
// scan that reaches the end of the expires_at index covers where every new
// row lands. A fail-fast claim then got ErrInProgress, a waiting one
// ErrLockTimeout. SQLite has one writer: a batch holds it by design.
func testHousekeepingBlocksNothing(t *testing.T, e *leaseEnv, which string) {
	if e.dialect == "sqlite" {
		t.Skip("SQLite has one writer: a batch holds it")
	}
	ctx := context.Background()
	switch which {
	case "sweep":
		for i := range 5 {
			e.staleClaim(t, fmt.Sprintf("hk-stale-%d", i))
		}
		time.Sleep(60 * time.Millisecond)
	case "purge":
		// Only expired rows: the scan runs to the end of the index.
		e.insertCompleted(t, "hk-old-", 50)
		e.expirePrefix(t, "hk-old-")
	}
	g := newGate()
	ops := e.hookedOps(t, &hooks{commit: g.hold})
	done := make(chan error, 1)
	go func() {
		var err error
		switch which {
		case "sweep":
			_, err = ops.sweep(ctx, nil, idemsql.Options{BatchSize: 10})
		case "purge":
			_, err = ops.purge(ctx, idemsql.Options{BatchSize: 100})
		}
		done <- err
	}()
	select {
	case <-g.reached:
	case err := <-done:
		t.Fatalf("%s ended before its batch committed: %v", which, err)
	}

	for i, key := range []string{"hk-new-1", "zz-hk-new-2", "0-hk-new-3"} {
		tx, err := e.begin(ctx, sql.LevelDefault)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = doIn(ctx, tx, key, func(context.Context) (int, error) { return i, nil },
			idemsql.Options{FailFast: true})
		if err == nil {
			err = tx.Commit(ctx)
		} else {
			_ = tx.Rollback(ctx)
		}
		if err != nil {
			close(g.open)
			t.Fatalf("a fail-fast claim of the new key %q while a %s batch is open: %v (after %v)", key, which, err, time.Since(start))
		}
	}
	close(g.open)
	if err := <-done; err != nil {
		t.Fatalf("%s: %v", which, err)
	}
}
