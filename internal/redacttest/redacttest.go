// Package redacttest drives real calls of idemsql, on SQLite, that end in
// errors about a key: for the tests of the observers (idemslog, the otel
// module), which check that with their redaction option set nothing they
// emit holds a key. Every key it uses contains [Secret]; a test searches
// what its observer emitted for it.
package redacttest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// Secret is part of every key Drive uses, as an e-mail address would be.
const Secret = "alice@example.com"

func key(name string) string { return name + ":" + Secret }

// Drive opens a migrated SQLite database with a store that reports to obs
// and makes calls whose errors are about a key: a fingerprint mismatch, a
// duplicate with Options.ErrorOnDuplicate, a result that does not decode, a
// context that ended before the call started or while Run waited to run
// again, nested calls (with other keys) whose errors fn returns, a key
// held by a lease (both modes), recorded failures and their replays, a
// lost lease, and a sweep handler's error. Each error must carry its key in
// a typed field of the library's errors and must not hold it in its text;
// Drive fails t where one does not, and goes on.
func Drive(t *testing.T, obs idemsql.Observer) {
	t.Helper()
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(t.TempDir(), "app.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	o := &retryCanceller{inner: obs}
	store, err := idemsql.New(idemsqlite.New(db), idemsql.Options{Observers: []idemsql.Observer{o}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := migrations.Up(ctx, db, store); err != nil {
		t.Fatal(err)
	}
	pool := store
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	// check checks an error about key k ("": any of the library's
	// keys), of class class (nil: not checked).
	check := func(what, k string, err error, class error) {
		t.Helper()
		switch {
		case err == nil:
			t.Errorf("%s: no error", what)
			return
		case class != nil && !errors.Is(err, class):
			t.Errorf("%s: %v, want %v", what, err, class)
		}
		if got, ok := KeyOf(err); !ok || (k != "" && got != k) {
			t.Errorf("%s: the error's typed key is %q (found %v), want %q: %v", what, got, ok, k, err)
		}
		if strings.Contains(err.Error(), Secret) {
			t.Errorf("%s: the error's text holds the key: %v", what, err)
		}
	}
	one := func(ctx context.Context, tx *sql.Tx) (int, error) { return 1, nil }

	// Atomic mode.
	kA := key("a")
	if _, err := idemsql.Run(ctx, pool, kA, one); err != nil {
		t.Fatal(err)
	}
	_, err = idemsql.Run(ctx, pool, kA, one, idemsql.Options{Fingerprint: "another request"})
	check("fingerprint mismatch", kA, err, idemsql.ErrFingerprintMismatch)
	_, err = idemsql.Run(ctx, pool, kA, one, idemsql.Options{ErrorOnDuplicate: true})
	check("ErrorOnDuplicate", kA, err, idemsql.ErrDuplicate)
	_, err = idemsql.Run(ctx, pool, kA, func(ctx context.Context, tx *sql.Tx) (string, error) { return "", nil })
	check("replay into another type", kA, err, idemsql.ErrDecode)

	kStart := key("not-started")
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = idemsql.Do(cancelled, store, tx, kStart, func(ctx context.Context) (int, error) { return 1, nil })
	check("Do with an ended context", kStart, err, context.Canceled)
	_ = tx.Rollback()
	_, err = idemsql.Run(cancelled, pool, kStart, one)
	check("Run with an ended context", kStart, err, context.Canceled)

	// Nested calls: fn returns the error of a call with another key, which
	// the outer call passes on (or records).
	kOuter, kOuter2, kInner := key("outer"), key("outer-2"), key("inner")
	_, err = idemsql.Run(ctx, pool, kOuter, func(ctx context.Context, tx *sql.Tx) (int, error) {
		_, err := idemsql.Do(ctx, store, tx, kA, func(ctx context.Context) (int, error) { return 2, nil },
			idemsql.Options{Fingerprint: "yet another request"})
		check("nested mismatch", kA, err, idemsql.ErrFingerprintMismatch)
		return 0, fmt.Errorf("charging: %w", err)
	})
	check("outer call of a nested mismatch", kA, err, idemsql.ErrFingerprintMismatch)
	_, err = idemsql.Run(ctx, pool, kOuter2, func(ctx context.Context, tx *sql.Tx) (int, error) {
		_, err := idemsql.Do(cancelled, store, tx, kInner, func(ctx context.Context) (int, error) { return 2, nil })
		check("nested call with an ended context", kInner, err, context.Canceled)
		return 0, fmt.Errorf("charging: %w", err)
	}, idemsql.Options{MaxAttempts: 2})
	// Its class is the dialect's to say (SQLite: the transaction ended);
	// the text must hold neither key.
	check("outer call of a nested call with an ended context", "", err, nil)
	_, err = idemsql.Run(ctx, pool, kOuter, func(ctx context.Context, tx *sql.Tx) (int, error) {
		_, err := idemsql.Do(ctx, store, tx, kA, func(ctx context.Context) (int, error) { return 2, nil },
			idemsql.Options{ErrorOnDuplicate: true})
		check("nested duplicate", kA, err, idemsql.ErrDuplicate)
		return 0, idemsql.Permanent("nested", fmt.Errorf("charging: %w", err))
	}, idemsql.Options{RecordFailures: true})
	check("recorded failure of a nested call", kOuter, err, idemsql.ErrFailureRecorded)
	_, err = idemsql.Run(ctx, pool, kOuter, one, idemsql.Options{RecordFailures: true})
	check("replayed failure of a nested call", kOuter, err, idemsql.ErrFailureRecorded)

	// Run's wait before it runs again, ended by the context.
	kRetry := key("retry")
	rctx, rcancel := context.WithCancel(ctx)
	o.retried = rcancel
	_, err = idemsql.Run(rctx, pool, kRetry, func(ctx context.Context, tx *sql.Tx) (int, error) {
		return 0, fmt.Errorf("conflict: %w", idemsql.ErrRetryable)
	}, idemsql.Options{Backoff: time.Minute, MaxBackoff: time.Minute})
	o.retried = nil
	rcancel()
	check("context ended while Run waited to retry", kRetry, err, context.Canceled)
	if errors.Is(err, idemsql.ErrRetryable) {
		t.Errorf("context ended while Run waited to retry: %v has two classes", err)
	}

	// Lease mode.
	kHeld := key("held")
	c, err := idemsql.ClaimLease(ctx, pool, kHeld, idemsql.Options{Lease: time.Minute})
	if err != nil || !c.Held {
		t.Fatalf("ClaimLease: %+v %v", c, err)
	}
	_, err = idemsql.RunExternal(ctx, pool, kHeld, func(ctx context.Context, l idemsql.Claim) (int, error) { return 1, nil })
	check("RunExternal on a live lease", kHeld, err, idemsql.ErrInProgress)
	_, err = idemsql.Run(ctx, pool, kHeld, one)
	check("Run on a live lease", kHeld, err, idemsql.ErrInProgress)
	_, err = idemsql.ClaimLease(ctx, pool, kHeld, idemsql.Options{Fingerprint: "another request"})
	check("lease-mode fingerprint mismatch", kHeld, err, idemsql.ErrFingerprintMismatch)
	if err := c.Complete(ctx, 1); err != nil {
		t.Fatal(err)
	}

	kFail := key("declined")
	declined := func(ctx context.Context, l idemsql.Claim) (int, error) {
		return 0, idemsql.Permanent("card_declined", errors.New("card declined"))
	}
	_, err = idemsql.RunExternal(ctx, pool, kFail, declined, idemsql.Options{RecordFailures: true})
	check("lease-mode recorded failure", kFail, err, idemsql.ErrFailureRecorded)
	_, err = idemsql.RunExternal(ctx, pool, kFail, declined, idemsql.Options{RecordFailures: true})
	check("lease-mode replayed failure", kFail, err, idemsql.ErrFailureRecorded)

	kClaim := key("not-claimed")
	_, err = idemsql.RunExternal(cancelled, pool, kClaim, func(ctx context.Context, l idemsql.Claim) (int, error) { return 1, nil })
	check("RunExternal with an ended context", kClaim, err, context.Canceled)

	// A holder whose lease another took over: its write is refused.
	kLost := key("lost")
	first, err := idemsql.ClaimLease(ctx, pool, kLost, idemsql.Options{Lease: idemsql.MinLease})
	if err != nil || !first.Held {
		t.Fatalf("ClaimLease: %+v %v", first, err)
	}
	second := claimOnceStale(t, pool, kLost)
	err = first.Complete(ctx, 1)
	check("write of a holder whose lease was taken over", kLost, err, idemsql.ErrLeaseLost)
	if err := second.Complete(ctx, 2); err != nil {
		t.Fatal(err)
	}

	// A sweep handler's error.
	kSwept := key("swept")
	if c, err := idemsql.ClaimLease(ctx, pool, kSwept, idemsql.Options{Lease: idemsql.MinLease}); err != nil || !c.Held {
		t.Fatalf("ClaimLease: %+v %v", c, err)
	}
	handled := false
	for i := 0; !handled && i < 500; i++ {
		time.Sleep(10 * time.Millisecond) // until the lease runs out by the database's clock
		_, err = idemsql.Sweep(ctx, pool, func(ctx context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
			handled = true
			return idemsql.Resolution{}, errors.New("the payment provider is down")
		})
	}
	if !handled {
		t.Fatal("the swept lease never ran out")
	}
	check("sweep handler's error", kSwept, err, nil) // a handler's error has no class of the library's

	// The read API.
	rec, found, err := idemsql.Lookup(ctx, pool, kA)
	if err != nil || !found {
		t.Fatalf("Lookup: %v %v", found, err)
	}
	var s string
	check("Record.Decode into another type", kA, rec.Decode(&s), idemsql.ErrDecode)
	if rec, _, err = idemsql.Lookup(ctx, pool, kOuter); err != nil {
		t.Fatal(err)
	}
	check("Record.Decode without a result", kOuter, rec.Decode(&s), idemsql.ErrDecode)
}

// claimOnceStale claims key once the lease of its holder ran out by the
// database's clock.
func claimOnceStale(t *testing.T, pool *idemsql.Store[*sql.Tx], key string) idemsql.Lease {
	t.Helper()
	for range 500 {
		c, err := idemsql.ClaimLease(context.Background(), pool, key)
		switch {
		case err == nil && c.Held:
			return c
		case !errors.Is(err, idemsql.ErrInProgress):
			t.Fatalf("ClaimLease: %+v %v", c, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the lease never ran out")
	return idemsql.Lease{}
}

// KeyOf is the key in the first of the library's errors met in err's tree
// (depth first, as errors.As searches).
func KeyOf(err error) (string, bool) {
	switch e := err.(type) {
	case nil:
		return "", false
	case *idemsql.Error:
		return e.Key, true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return KeyOf(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, next := range u.Unwrap() {
			if k, ok := KeyOf(next); ok {
				return k, true
			}
		}
	}
	return "", false
}

// retryCanceller passes everything on to the observer under test, and
// calls retried (when set) when Run is about to wait before running
// again: to end the context during that wait, without timing.
type retryCanceller struct {
	inner   idemsql.Observer
	retried func()
}

func (o *retryCanceller) Observe(ctx context.Context, e idemsql.Event) {
	o.inner.Observe(ctx, e)
	if e.Kind == idemsql.EventRetried && o.retried != nil {
		o.retried()
	}
}

func (o *retryCanceller) StartCall(ctx context.Context, c idemsql.Event) (context.Context, func(idemsql.Event)) {
	if t, ok := o.inner.(idemsql.CallTracer); ok {
		return t.StartCall(ctx, c)
	}
	return ctx, func(idemsql.Event) {}
}
