package integration

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// stallingPool holds back its n-th Begin until release is closed, so a test
// can put other work between a caller's read and its takeover.
type stallingPool struct {
	inner   func(context.Context, sql.IsolationLevel) (idemdriver.Tx[*sql.Tx], error)
	n       atomic.Int64
	stallAt int64
	reached chan struct{}
	release chan struct{}
}

func (p *stallingPool) Begin(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[*sql.Tx], error) {
	if p.n.Add(1) == p.stallAt {
		close(p.reached)
		<-p.release
	}
	return p.inner(ctx, level)
}

// A takeover must take over the claim it read, not a later claim that
// happens to have the same attempt number: B reads A's stale claim (attempt
// 1) and stalls; A completes late, the row expires, is purged and claimed
// anew by D (attempt 1 again) who dies; B must not hold D's claim under A's
// downstream key.
func TestLeaseTakeOverMatchesTheClaimRead(t *testing.T) {
	for _, b := range backends {
		if b.name == "postgres-pgx" {
			continue // the pool wrapper below is database/sql's
		}
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			ctx := context.Background()
			db := e.store
			opts := idemsql.Options{Lease: 300 * time.Millisecond, Heartbeat: 100 * time.Millisecond, TTL: 300 * time.Millisecond}
			key := "gen-aba"
			a, err := idemsql.ClaimLease(ctx, db, key, opts)
			if err != nil || !a.Held {
				t.Fatalf("A: %+v %v", a, err)
			}
			time.Sleep(600 * time.Millisecond) // A's lease runs out

			// B's first transaction (the read) goes through; its second (the
			// takeover) waits.
			pool := &stallingPool{stallAt: 2, reached: make(chan struct{}), release: make(chan struct{})}
			pool.inner = plainPool{e.db}.Begin
			type outcome struct {
				downstream string
				err        error
			}
			done := make(chan outcome, 1)
			go func() {
				var ds string
				_, err := idemsql.RunExternal(ctx, storeOn(e, testDriver[*sql.Tx]{inner: sqlDriver(e.dialect, e.db), begin: pool.Begin}), key,
					func(ctx context.Context, l idemsql.Claim) (string, error) {
						ds = l.DownstreamKey
						return "B", nil
					}, opts)
				done <- outcome{ds, err}
			}()
			<-pool.reached

			if err := a.Complete(ctx, "A"); err != nil { // late, but nobody took over
				t.Fatalf("A's late completion: %v", err)
			}
			time.Sleep(600 * time.Millisecond) // A's outcome expires
			if _, err := idemsql.Purge(ctx, db, opts); err != nil {
				t.Fatal(err)
			}
			d, err := idemsql.ClaimLease(ctx, db, key, opts)
			if err != nil || !d.Held || d.Attempt != 1 {
				t.Fatalf("D: %+v %v", d, err)
			}
			time.Sleep(600 * time.Millisecond) // D dies: its lease runs out

			close(pool.release)
			o := <-done
			if o.err != nil {
				t.Fatalf("B: %v", o.err)
			}
			if o.downstream != d.DownstreamKey {
				t.Fatalf("B took over D's claim with downstream key %q; D's is %q (A's was %q)",
					o.downstream, d.DownstreamKey, a.DownstreamKey)
			}
		})
	}
}

// plainPool begins database/sql transactions, without the library's
// prepared statements.
type plainPool struct{ db *sql.DB }

type plainTx struct{ tx *sql.Tx }

func (p plainPool) Begin(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[*sql.Tx], error) {
	tx, err := p.db.BeginTx(ctx, &sql.TxOptions{Isolation: level})
	if err != nil {
		return nil, err
	}
	return plainTx{tx}, nil
}

func (t plainTx) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	r, err := t.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

func (t plainTx) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return t.tx.QueryRowContext(ctx, q, args...)
}

func (t plainTx) Tx() *sql.Tx                    { return t.tx }
func (t plainTx) Commit(context.Context) error   { return t.tx.Commit() }
func (t plainTx) Rollback(context.Context) error { return t.tx.Rollback() }
