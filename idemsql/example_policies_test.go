package idemsql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// Run owns the transaction and retries it when the database asks.
func ExampleRun() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()

	for range 2 {
		res, err := idemsql.Run(ctx, store, "order-request-7", func(ctx context.Context, tx *sql.Tx) (int64, error) {
			var id int64
			err := tx.QueryRowContext(ctx, `INSERT INTO orders (total) VALUES (1999) RETURNING id`).Scan(&id)
			return id, err
		})
		if err != nil {
			panic(err)
		}
		fmt.Printf("order %d, replayed: %v\n", res.Value, res.Replayed)
	}
	// Output:
	// order 1, replayed: false
	// order 1, replayed: true
}

// With Options.ErrorOnDuplicate a duplicate is an error that still carries the
// stored result: for APIs that must answer "already done".
func ExampleOptions_errorOnDuplicate() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	create := func() (idemsql.Result[string], error) {
		return idemsql.Run(ctx, store, "signup:ada@example.com", func(ctx context.Context, tx *sql.Tx) (string, error) {
			return "account 42", nil
		}, idemsql.Options{ErrorOnDuplicate: true})
	}
	res, err := create()
	fmt.Println(res.Value, err)
	res, err = create()
	fmt.Println(res.Value, errors.Is(err, idemsql.ErrDuplicate))
	// Output:
	// account 42 <nil>
	// account 42 true
}

// With Options.FailFast a duplicate that arrives while the first call is
// still running gets ErrInProgress at once instead of waiting.
func ExampleOptions_failFast() {
	db, store, done := openExampleDB()
	defer done()
	ctx := context.Background()

	first, _ := db.BeginTx(ctx, nil)
	defer first.Rollback()
	_, _ = idemsql.Do(ctx, store, first, "report:2026-11", func(ctx context.Context) (string, error) {
		return "rendering", nil
	})

	// A second connection (without _txlock=immediate, whose BEGIN would wait
	// for the first writer) tries the same key while first is open.
	second, _ := openDeferred(db)
	defer second.Close()
	tx, _ := second.BeginTx(ctx, nil)
	defer tx.Rollback()
	_, err := idemsql.Do(ctx, store, tx, "report:2026-11", func(ctx context.Context) (string, error) {
		return "rendering again", nil
	}, idemsql.Options{FailFast: true})
	fmt.Println(errors.Is(err, idemsql.ErrInProgress))
	// Output: true
}

// With RecordFailures a Permanent error is the key's final answer:
// duplicates get it back without running fn, and fn's writes are undone.
func ExampleOptions_recordFailures() {
	db, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	charge := func() (idemsql.Result[int], error) {
		return idemsql.Run(ctx, store, "charge:order-9", func(ctx context.Context, tx *sql.Tx) (int, error) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO orders (total) VALUES (5000)`); err != nil {
				return 0, err
			}
			return 0, idemsql.Permanent("card_declined", errors.New("insufficient funds"))
		}, idemsql.Options{RecordFailures: true})
	}
	for range 2 {
		res, err := charge()
		var fe *idemsql.Error
		if errors.Is(err, idemsql.ErrFailureRecorded) && errors.As(err, &fe) {
			fmt.Printf("%s: %s (replayed: %v)\n", fe.Class, fe.Message, res.Replayed)
		}
	}
	var n int
	_ = db.QueryRow(`SELECT COUNT(*) FROM orders`).Scan(&n)
	fmt.Println("orders:", n)
	// Output:
	// card_declined: insufficient funds (replayed: false)
	// card_declined: insufficient funds (replayed: true)
	// orders: 0
}

type invoiceRequest struct {
	Customer string `json:"customer"`
	Cents    int64  `json:"cents"`
}

// WrapRun is the counterpart of a decorator: the guarded function derives
// its key from a namespace and its argument.
func ExampleWrapRun() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()

	createInvoice := idemsql.WrapRun(store, idemsql.ArgsKey[invoiceRequest]("create_invoice"),
		func(ctx context.Context, tx *sql.Tx, r invoiceRequest) (int64, error) {
			var id int64
			err := tx.QueryRowContext(ctx, `INSERT INTO orders (total) VALUES (?) RETURNING id`, r.Cents).Scan(&id)
			return id, err
		}, idemsql.Options{TTL: 5 * time.Minute})

	for _, r := range []invoiceRequest{{"ada", 100}, {"ada", 100}, {"bob", 100}} {
		res, err := createInvoice(ctx, r)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s: invoice %d, replayed: %v\n", r.Customer, res.Value, res.Replayed)
	}
	// Output:
	// ada: invoice 1, replayed: false
	// ada: invoice 1, replayed: true
	// bob: invoice 2, replayed: false
}

// Wrap guards a function that writes in the caller's transaction, with a
// hand-written key.
func ExampleWrap() {
	db, store, done := openExampleDB()
	defer done()
	ctx := context.Background()

	refund := idemsql.Wrap(store, func(orderID int64) (string, error) {
		return fmt.Sprintf("refund:%d", orderID), nil
	}, func(ctx context.Context, tx *sql.Tx, orderID int64) (string, error) {
		_, err := tx.ExecContext(ctx, `INSERT INTO orders (total) VALUES (-100)`)
		return fmt.Sprintf("refunded order %d", orderID), err
	})

	for range 2 {
		tx, _ := db.BeginTx(ctx, nil)
		res, err := refund(ctx, tx, 17)
		if err != nil {
			panic(err)
		}
		_ = tx.Commit()
		fmt.Println(res.Value, res.Replayed)
	}
	// Output:
	// refunded order 17 false
	// refunded order 17 true
}

// Options.LockTimeout bounds how long a duplicate waits for the first call's
// transaction.
func ExampleOptions_lockTimeout() {
	db, store, done := openExampleDB()
	defer done()
	ctx := context.Background()

	first, _ := db.BeginTx(ctx, nil)
	defer first.Rollback()
	_, _ = idemsql.Do(ctx, store, first, "export:42", func(ctx context.Context) (string, error) {
		return "exporting", nil
	})

	second, _ := openDeferred(db)
	defer second.Close()
	tx, _ := second.BeginTx(ctx, nil)
	defer tx.Rollback()
	_, err := idemsql.Do(ctx, store, tx, "export:42", func(ctx context.Context) (string, error) {
		return "exporting again", nil
	}, idemsql.Options{LockTimeout: 50 * time.Millisecond})
	fmt.Println(errors.Is(err, idemsql.ErrLockTimeout))
	// Output: true
}
