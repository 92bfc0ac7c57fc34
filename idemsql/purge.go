package idemsql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// PurgeStats counts what one [Purge] did.
type PurgeStats struct {
	Deleted int64 // rows deleted
	Batches int   // transactions committed
}

// Purge deletes completed and failed rows whose retention (expires_at, by
// the database's clock) has passed, in batches of [WithBatchSize], each in a
// short transaction. It serves both modes. It never deletes an in_progress
// row, expired or not: in lease mode such a row may stand for an effect
// that happened, and [Sweep] resolves it; in atomic mode a committed row is
// never in_progress. Nor does it delete a row another transaction holds
// (PostgreSQL, MySQL/MariaDB: SKIP LOCKED; an atomic-mode call re-claiming
// an expired key holds its row). Expired rows are treated as absent by
// every call anyway; Purge only keeps the table small. It returns after one
// pass: when a batch comes back short.
//
// It needs a dialect with lease mode (all shipped ones), which holds its
// SQL.
func Purge[X any](ctx context.Context, db DB[X], opts ...Option) (PurgeStats, error) {
	lr, err := newLeaser(db, opts)
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
		err := lr.inTx(ctx, "purge", "", func(ex Executor) error {
			n = 0
			if lr.ls.Purge != "" {
				var err error
				if n, err = ex.Exec(ctx, lr.ls.Purge, batch); err != nil {
					return lr.s.dbError(ctx, "purge", "", err)
				}
				return nil
			}
			for n < batch {
				var key string
				err := ex.QueryRow(ctx, lr.ls.PurgeNext).Scan(&key)
				if errors.Is(err, sql.ErrNoRows) {
					return nil
				}
				if err != nil {
					return lr.s.dbError(ctx, "purge", "", err)
				}
				d, err := ex.Exec(ctx, lr.ls.PurgeOne, key)
				if err != nil {
					return lr.s.dbError(ctx, "purge", key, err)
				}
				if d != 1 {
					return nil
				}
				n++
			}
			return nil
		})
		if err != nil {
			return stats, err
		}
		stats.Batches++
		stats.Deleted += n
		if n < batch {
			return stats, nil
		}
	}
}

// PurgeEvery runs [Purge] at once and then every interval until ctx ends,
// then returns nil. report, if not nil, gets each pass's outcome.
func PurgeEvery[X any](ctx context.Context, db DB[X], every time.Duration, report func(PurgeStats, error), opts ...Option) error {
	if every <= 0 {
		return fmt.Errorf("%w: purge interval %v", ErrInvalidOption, every)
	}
	lr, err := newLeaser(db, opts)
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
