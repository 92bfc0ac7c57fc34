package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// staleClaims opens a migrated SQLite database with n stale lease-mode
// claims, through a store that watches its batches as the command's does.
func staleClaims(t *testing.T, n int) *conn {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(t.TempDir(), "app.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	watch := &batchWatch{}
	store, err := idemsql.New(idemsqlite.New(db), idemsql.Options{Observers: []idemsql.Observer{watch}})
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, db, store); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if c, err := idemsql.ClaimLease(ctx, store, fmt.Sprintf("k%02d", i), idemsql.Options{Lease: 10 * time.Millisecond}); err != nil || !c.Held {
			t.Fatalf("claim: %+v %v", c, err)
		}
	}
	time.Sleep(30 * time.Millisecond)
	return &conn{db: db, store: store, watch: watch}
}

// An interrupt during a sweep lets the batch in flight finish, the
// handler's writes included, and stops before the next batch.
func TestSweepStopsBetweenBatches(t *testing.T) {
	db := staleClaims(t, 6)
	soft, stop := context.WithCancel(context.Background())
	defer stop()
	red := &redactor{}
	c := &cli{stdout: io.Discard, stderr: redacting{io.Discard, red}, red: red, ctx: soft, hard: context.Background()}
	h := func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
		stop() // Ctrl-C while the first batch's handlers run
		return idemsql.Resolution{Outcome: idemsql.ResolveReleased}, nil
	}
	var st idemsql.SweepStats
	err := c.batched(db, "sweep", "swept", func(ctx context.Context) (err error) {
		st, err = idemsql.Sweep(ctx, db.store, h, idemsql.Options{BatchSize: 2})
		return err
	})
	if !errors.Is(err, context.Canceled) || st.Found != 2 || st.Released != 2 || st.Failed != 0 || st.Batches != 1 {
		t.Fatalf("Sweep: %+v, %v; want the first batch of 2 released, then a stop", st, err)
	}
	s, err := idemsql.Stats(context.Background(), db.store)
	if err != nil || s.Released != 2 || s.StaleLeases != 4 {
		t.Fatalf("after the stop: %+v %v", s, err)
	}
}

// ctrlC is an observer, ahead of the command's, that interrupts at the
// first batch event: as Ctrl-C during the first batch would.
type ctrlC struct {
	once sync.Once
	stop func()
}

func (i *ctrlC) Observe(context.Context, idemsql.Event) { i.once.Do(i.stop) }

// An interrupt during a purge stops it before its next batch.
func TestPurgeStopsBetweenBatches(t *testing.T) {
	db := staleClaims(t, 0)
	for i := range 5 {
		if _, err := idemsql.Run(context.Background(), db.store, fmt.Sprintf("p%d", i), func(context.Context, *sql.Tx) (struct{}, error) {
			return struct{}{}, nil
		}, idemsql.Options{TTL: time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	soft, stop := context.WithCancel(context.Background())
	defer stop()
	red := &redactor{}
	c := &cli{stdout: io.Discard, stderr: redacting{io.Discard, red}, red: red, ctx: soft, hard: context.Background()}
	store, err := idemsql.New(idemsqlite.New(db.db), idemsql.Options{Observers: []idemsql.Observer{&ctrlC{stop: stop}, db.watch}})
	if err != nil {
		t.Fatal(err)
	}
	db.store = store
	var st idemsql.PurgeStats
	err = c.batched(db, "purge", "deleted", func(ctx context.Context) (err error) {
		st, err = idemsql.Purge(ctx, db.store, idemsql.Options{BatchSize: 1})
		return err
	})
	if !errors.Is(err, context.Canceled) || st.Deleted != 1 || st.Batches != 1 {
		t.Fatalf("Purge: %+v %v; want one batch, then a stop", st, err)
	}
}
