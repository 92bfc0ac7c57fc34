package idemsql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
)

// PurgeStats counts what one [Purge] did.
type PurgeStats struct {
	Deleted int64 // rows deleted
	Batches int   // transactions committed
}

// Purge deletes completed and failed rows whose retention (expires_at, by
// the database's clock) has passed, in batches of [Options.BatchSize], each
// in a short transaction. It serves both modes. It never deletes an
// in_progress row, expired or not: in lease mode such a row may stand for an
// effect that happened, and [Sweep] resolves it; in atomic mode a committed
// row is never in_progress. Nor does it delete a claim Sweep abandoned
// ([AbandonedClass]): the row carries the downstream key of an effect that
// may have happened, which the key's next claim must use again; delete such
// a row with [Forget] once the downstream system's own retention of keys
// has passed (docs/audit.md lists them). Nor does it delete a row another
// transaction holds (PostgreSQL, MySQL/MariaDB: SKIP LOCKED; an atomic-mode
// call re-claiming an expired key holds its row). Expired rows are treated
// as absent by every call anyway; Purge only keeps the table small. It
// returns after one pass: when a batch comes back short. When ctx ends, the
// pass ends before its next batch (a batch whose statements ctx interrupts
// is rolled back) with ctx's error; an observer hears of each batch once it
// committed ([EventPurged]): ending ctx there stops the pass between two
// batches.
//
// On SQLite a batch holds the database's one write lock until it commits,
// and writers wait for it: keep batches small there (the default, 100
// rows, is a few milliseconds; thousands of rows are tens). Elsewhere a
// batch locks only the rows it deletes: its transaction runs at the
// dialect's isolation level (idemdriver.LeaseStatements.Isolation, READ
// COMMITTED on MySQL/MariaDB and PostgreSQL).
//
// It needs a dialect with lease mode (all shipped ones), which holds its
// SQL.
func Purge[X any](ctx context.Context, s *Store[X], opts ...Options) (PurgeStats, error) {
	lr, err := newLeaser(s, opts)
	if err != nil {
		return PurgeStats{}, err
	}
	return lr.purge(ctx)
}

func (lr *leaser) purge(ctx context.Context) (PurgeStats, error) {
	var stats PurgeStats
	batch := int64(lr.cfg.lease.batchSize())
	for {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		var n int64
		err := lr.inHousekeepingTx(ctx, "purge", func(ex idemdriver.Executor) error {
			var err error
			n, err = lr.purgeBatch(ctx, ex, batch)
			return err
		})
		if err != nil {
			return stats, err
		}
		stats.Batches++
		stats.Deleted += n
		// One event per batch that deleted rows; a pass that found nothing
		// says so once, and the empty batch that ends a pass says nothing.
		if len(lr.s.defaults.observers) > 0 && (n > 0 || stats.Batches == 1) {
			lr.s.emit(ctx, Event{Kind: EventPurged, Mode: "lease", Dialect: lr.s.dialect.Name(),
				Duration: time.Since(lr.start), Count: n})
		}
		if n < batch {
			return stats, nil
		}
	}
}

// purgeInChunk is the most keys one PurgeKeys statement deletes.
const purgeInChunk = 500

// purgeBatch deletes up to batch purgeable rows in the transaction ex.
func (lr *leaser) purgeBatch(ctx context.Context, ex idemdriver.Executor, batch int64) (int64, error) {
	if lr.ls.Purge != "" {
		n, err := ex.Exec(ctx, lr.ls.Purge, batch)
		if err != nil {
			return 0, lr.s.dbError(ctx, "purge", "", err)
		}
		return n, nil
	}
	var n int64
	for n < batch {
		keys, asked, err := lr.lockPurgeable(ctx, ex, batch-n)
		if err != nil {
			return n, err
		}
		var deleted int64
		for lo := 0; lo < len(keys); lo += purgeInChunk {
			chunk := keys[lo:min(lo+purgeInChunk, len(keys))]
			d, err := ex.Exec(ctx, lr.ls.PurgeKeys(len(chunk)), chunk...)
			if err != nil {
				return n, lr.s.dbError(ctx, "purge", "", err)
			}
			deleted += d
		}
		n += deleted
		// Fewer keys than asked: no other purgeable row is free. None
		// deleted: the keys no longer qualify, and would come back.
		if int64(len(keys)) < asked || deleted == 0 {
			break
		}
	}
	return n, nil
}

// lockPurgeable runs PurgeLock for up to limit keys: all of them at once
// where the transaction returns many rows, else one.
func (lr *leaser) lockPurgeable(ctx context.Context, ex idemdriver.Executor, limit int64) (keys []any, asked int64, err error) {
	scan := func(r idemdriver.Row) error {
		var key string
		if err := r.Scan(&key); err != nil {
			return err
		}
		keys = append(keys, key)
		return nil
	}
	many, err := queryEach(ctx, ex, lr.ls.PurgeLock, scan, limit)
	if !many {
		limit = 1
		if err = scan(ex.QueryRow(ctx, lr.ls.PurgeLock, 1)); errors.Is(err, sql.ErrNoRows) {
			return nil, 1, nil
		}
	}
	if err != nil {
		return nil, limit, lr.s.dbError(ctx, "purge", "", err)
	}
	return keys, limit, nil
}

// PurgeEvery runs [Purge] at once and then every interval until ctx ends,
// then returns nil. report, if not nil, gets each pass's outcome.
func PurgeEvery[X any](ctx context.Context, s *Store[X], every time.Duration, report func(PurgeStats, error), opts ...Options) error {
	if every <= 0 {
		return fmt.Errorf("%w: purge interval %v", ErrInvalidOption, every)
	}
	lr, err := newLeaser(s, opts)
	if err != nil {
		return err
	}
	return runEvery(ctx, every, func() {
		stats, err := lr.purge(ctx)
		if report != nil && ctx.Err() == nil {
			report(stats, err)
		}
	})
}

func runEvery(ctx context.Context, every time.Duration, pass func()) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		pass()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
