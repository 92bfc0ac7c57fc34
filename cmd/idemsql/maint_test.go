package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/idemsql/idemsql/dialects/sqlite"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/migrations"
)

// staleClaims opens a migrated SQLite database with n stale lease-mode
// claims.
func staleClaims(t *testing.T, n int) (*sql.DB, *idemsql.Store) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", sqlite.DSN(filepath.Join(t.TempDir(), "app.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := sqlite.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, db, store); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if c, err := idemsql.ClaimLease(ctx, store.DB(db, nil), fmt.Sprintf("k%02d", i), idemsql.WithLease(10*time.Millisecond)); err != nil || !c.Held {
			t.Fatalf("claim: %+v %v", c, err)
		}
	}
	time.Sleep(30 * time.Millisecond)
	return db, store
}

// An interrupt during a sweep lets the batch in flight finish, the
// handler's writes included, and stops the next batch at its first
// statement.
func TestSweepStopsBetweenBatches(t *testing.T) {
	db, store := staleClaims(t, 6)
	soft, stop := context.WithCancel(context.Background())
	defer stop()
	red := &redactor{}
	c := &cli{stdout: io.Discard, stderr: redacting{io.Discard, red}, red: red, ctx: soft, hard: context.Background()}
	sweepNext := sqlite.Dialect.(idemsql.LeaseDialect).LeaseStatements(idemsql.Table{Name: store.Table()}).SweepNext
	p := newStopPool(c, db, "sweep", sweepNext)
	defer p.done()
	h := func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
		stop() // Ctrl-C while the first batch's handlers run
		return idemsql.ResolveReleased(), nil
	}
	st, err := idemsql.Sweep(context.Background(), idemsql.BindPool[*sql.Tx](store, p), h, idemsql.WithBatchSize(2))
	if !errors.Is(err, errStopped) {
		t.Fatalf("Sweep: %+v, %v; want it stopped", st, err)
	}
	if st.Found != 2 || st.Released != 2 || st.Failed != 0 {
		t.Fatalf("Sweep: %+v; want the first batch of 2 released", st)
	}
	if p.batches.Load() != 1 || p.rows.Load() != 2 {
		t.Fatalf("counted %d batches, %d rows", p.batches.Load(), p.rows.Load())
	}
	s, err := idemsql.Stats(context.Background(), store.DB(db, nil))
	if err != nil || s.Released != 2 || s.StaleLeases != 4 {
		t.Fatalf("after the stop: %+v %v", s, err)
	}
}

// An interrupt before a purge's next batch stops it before it begins.
func TestPurgeStopsBetweenBatches(t *testing.T) {
	db, store := staleClaims(t, 0)
	for i := range 5 {
		if _, err := idemsql.Run(context.Background(), store.DB(db, nil), fmt.Sprintf("p%d", i), func(context.Context, *sql.Tx) (struct{}, error) {
			return struct{}{}, nil
		}, idemsql.WithTTL(time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	soft, stop := context.WithCancel(context.Background())
	red := &redactor{}
	c := &cli{stdout: io.Discard, stderr: redacting{io.Discard, red}, red: red, ctx: soft, hard: context.Background()}
	p := newStopPool(c, db, "purge", "")
	defer p.done()
	n := 0
	pool := countingPool{stopPool: p, begun: func() {
		if n++; n == 2 {
			stop() // after the first batch began
		}
	}}
	st, err := idemsql.Purge(context.Background(), idemsql.BindPool[*sql.Tx](store, pool), idemsql.WithBatchSize(1))
	if !errors.Is(err, errStopped) || st.Deleted != 1 || st.Batches != 1 || p.rows.Load() != 1 {
		t.Fatalf("Purge: %+v %v, counted %d rows", st, err, p.rows.Load())
	}
}

type countingPool struct {
	*stopPool
	begun func()
}

func (p countingPool) Begin(ctx context.Context) (idemsql.PoolTx[*sql.Tx], error) {
	p.begun()
	return p.stopPool.Begin(ctx)
}
