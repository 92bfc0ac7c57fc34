package idemsql_test

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// A call of a wrapped function takes Options of its own over the
// wrapper's: a fingerprint per request, which the wrapper's Options, fixed
// when it was made, cannot hold. The same key with another request is a
// mismatch; fn does not run.
func TestWrapOptionsPerCall(t *testing.T) {
	db, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	type refund struct {
		OrderID int64
		Cents   int64
	}
	runs := 0
	do := idemsql.Wrap(store, func(r refund) (string, error) { return "refund:" + strconv.FormatInt(r.OrderID, 10), nil },
		func(ctx context.Context, tx *sql.Tx, r refund) (int64, error) {
			runs++
			_, err := tx.ExecContext(ctx, `INSERT INTO orders (total) VALUES (?)`, -r.Cents)
			return r.Cents, err
		}, idemsql.Options{TTL: time.Hour})
	call := func(r refund, opts ...idemsql.Options) (idemsql.Result[int64], error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := do(ctx, tx, r, opts...)
		if err != nil {
			_ = tx.Rollback()
			return res, err
		}
		return res, tx.Commit()
	}
	first := refund{OrderID: 7, Cents: 100}
	if res, err := call(first, idemsql.Options{Fingerprint: first}); err != nil || res.Replayed || res.Value != 100 {
		t.Fatalf("first: %+v %v", res, err)
	}
	other := refund{OrderID: 7, Cents: 9900}
	if res, err := call(other, idemsql.Options{Fingerprint: other}); !errors.Is(err, idemsql.ErrFingerprintMismatch) || res.Value != 0 {
		t.Fatalf("another request under the key: %+v %v; want ErrFingerprintMismatch", res, err)
	}
	if res, err := call(first, idemsql.Options{Fingerprint: first}); err != nil || !res.Replayed || res.Value != 100 {
		t.Fatalf("the same request again: %+v %v", res, err)
	}
	if runs != 1 {
		t.Fatalf("fn ran %d times", runs)
	}
	r, found, err := idemsql.Lookup(ctx, store, "refund:7")
	if err != nil || !found {
		t.Fatal(found, err)
	}
	if ttl := r.ExpiresAt.Sub(r.CompletedAt); ttl < 59*time.Minute || ttl > 61*time.Minute {
		t.Fatalf("the wrapper's TTL lost under the call's Options: %v", ttl)
	}
	if _, err := call(first, idemsql.Options{}, idemsql.Options{}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("two Options for one call: %v", err)
	}
}
