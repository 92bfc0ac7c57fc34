package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// staleClaims opens a migrated SQLite database with n stale lease-mode
// claims.
func staleClaims(t *testing.T, n int) (*sql.DB, *idemsql.Store[*sql.Tx]) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(t.TempDir(), "app.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := idemsql.New(idemsqlite.New(db))
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
	return db, store
}

// An interrupt during a sweep lets the batch in flight finish, the
// handler's writes included, and stops before the next batch.
func TestSweepStopsBetweenBatches(t *testing.T) {
	_, store := staleClaims(t, 6)
	soft, stop := context.WithCancel(context.Background())
	defer stop()
	red := &redactor{}
	c := &cli{stdout: io.Discard, stderr: redacting{io.Discard, red}, red: red, ctx: soft, hard: context.Background()}
	p := newProgress(c, "sweep", "swept")
	h := func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
		stop() // Ctrl-C while the first batch's handlers run
		return idemsql.ResolveReleased(), nil
	}
	st, err := idemsql.Sweep(context.Background(), store, h, idemsql.Options{BatchSize: 2, Progress: p.report})
	if err != nil || st.Found != 2 || st.Released != 2 || st.Failed != 0 || st.Batches != 1 {
		t.Fatalf("Sweep: %+v, %v; want the first batch of 2 released, then a stop", st, err)
	}
	s, err := idemsql.Stats(context.Background(), store)
	if err != nil || s.Released != 2 || s.StaleLeases != 4 {
		t.Fatalf("after the stop: %+v %v", s, err)
	}
}

// An interrupt during a purge stops it before its next batch.
func TestPurgeStopsBetweenBatches(t *testing.T) {
	_, store := staleClaims(t, 0)
	for i := range 5 {
		if _, err := idemsql.Run(context.Background(), store, fmt.Sprintf("p%d", i), func(context.Context, *sql.Tx) (struct{}, error) {
			return struct{}{}, nil
		}, idemsql.Options{TTL: time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	soft, stop := context.WithCancel(context.Background())
	red := &redactor{}
	c := &cli{stdout: io.Discard, stderr: redacting{io.Discard, red}, red: red, ctx: soft, hard: context.Background()}
	p := newProgress(c, "purge", "deleted")
	report := func(pr idemsql.Progress) bool {
		stop() // Ctrl-C while the first batch ran
		return p.report(pr)
	}
	st, err := idemsql.Purge(context.Background(), store, idemsql.Options{BatchSize: 1, Progress: report})
	if err != nil || st.Deleted != 1 || st.Batches != 1 {
		t.Fatalf("Purge: %+v %v; want one batch, then a stop", st, err)
	}
}
