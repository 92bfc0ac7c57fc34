// Command invoice shows idemsql guarding "create invoice + charge" on an
// embedded SQLite database, with no setup:
//
//	go run ./examples/invoice
//
// A client's first request times out after the server has already charged
// the card; the client retries, and the user double-clicks "Pay" a dozen
// times at once. Every request carries the same idempotency key. Exactly one
// invoice and one charge exist at the end, and every retry gets the
// original invoice back.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "invoice:", err)
		os.Exit(1)
	}
}

// Invoice is what the guarded operation returns; idemsql stores it as JSON
// and gives it back to every duplicate.
type Invoice struct {
	ID       int64  `json:"id"`
	Customer string `json:"customer"`
	Amount   int64  `json:"amount_cents"`
	ChargeID int64  `json:"charge_id"`
}

type server struct {
	db    *sql.DB
	store *idemsql.Store[*sql.Tx]
}

// createInvoice is the server's handler: one transaction holds the
// idempotency claim, the invoice, the charge and the stored result.
// slowCharge stands for a payment step slow enough for the client's
// time-out to fire before the response arrives.
func (s *server) createInvoice(ctx context.Context, slowCharge time.Duration, key, customer string, amount int64) (idemsql.Result[Invoice], error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return idemsql.Result[Invoice]{}, err
	}
	defer tx.Rollback() // a no-op after Commit

	res, err := idemsql.Do(ctx, s.store, tx, key, func(ctx context.Context) (Invoice, error) {
		inv := Invoice{Customer: customer, Amount: amount}
		err := tx.QueryRowContext(ctx,
			`INSERT INTO invoices (customer, amount_cents) VALUES (?, ?) RETURNING id`, customer, amount).Scan(&inv.ID)
		if err != nil {
			return Invoice{}, err
		}
		time.Sleep(slowCharge)
		err = tx.QueryRowContext(ctx,
			`INSERT INTO charges (invoice_id, amount_cents) VALUES (?, ?) RETURNING id`, inv.ID, amount).Scan(&inv.ChargeID)
		return inv, err
	}, idemsql.Options{Fingerprint: map[string]any{"customer": customer, "amount": amount}})
	if err != nil {
		return res, err
	}
	return res, tx.Commit()
}

// call is the network between client and server: the client gives up after
// timeout, but the server finishes what it started, as a real one would.
func (s *server) call(timeout, slowCharge time.Duration, key, customer string, amount int64) (idemsql.Result[Invoice], error) {
	type reply struct {
		res idemsql.Result[Invoice]
		err error
	}
	ch := make(chan reply, 1)
	go func() {
		res, err := s.createInvoice(context.Background(), slowCharge, key, customer, amount)
		ch <- reply{res, err}
	}()
	select {
	case r := <-ch:
		return r.res, r.err
	case <-time.After(timeout):
		return idemsql.Result[Invoice]{}, errTimeout
	}
}

var errTimeout = errors.New("client time-out: no response")

func run(ctx context.Context, out io.Writer) error {
	dir, err := os.MkdirTemp("", "idemsql-invoice-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(dir, "shop.db")))
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		return err
	}
	if err := migrations.Up(ctx, db, store); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `
		CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount_cents INTEGER NOT NULL);
		CREATE TABLE charges (id INTEGER PRIMARY KEY, invoice_id INTEGER NOT NULL REFERENCES invoices(id), amount_cents INTEGER NOT NULL);`); err != nil {
		return err
	}

	srv := &server{db: db, store: store}
	// The client makes one key per checkout and sends it with every attempt.
	const key = "checkout-7f3a9c:create-invoice"

	fmt.Fprintln(out, "1. The client pays; the server charges the card, but the response is lost:")
	if _, err := srv.call(100*time.Millisecond, 300*time.Millisecond, key, "ada", 4200); !errors.Is(err, errTimeout) {
		return fmt.Errorf("expected a time-out, got %v", err)
	}
	fmt.Fprintln(out, "   request 1: timed out")

	fmt.Fprintln(out, "2. The client retries after the time-out:")
	original, err := srv.call(10*time.Second, 0, key, "ada", 4200)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   retry: invoice #%d, charge #%d, replayed=%v\n",
		original.Value.ID, original.Value.ChargeID, original.Replayed)

	const clicks = 12
	fmt.Fprintf(out, "3. The user double-clicks \"Pay\" %d times at once:\n", clicks)
	var wg sync.WaitGroup
	results := make([]idemsql.Result[Invoice], clicks)
	errs := make([]error, clicks)
	for i := range clicks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = srv.call(10*time.Second, 0, key, "ada", 4200)
		}()
	}
	wg.Wait()
	same := 0
	for i := range clicks {
		if errs[i] != nil {
			return errs[i]
		}
		if results[i].Replayed && results[i].Value == original.Value {
			same++
		}
	}
	fmt.Fprintf(out, "   %d of %d clicks got invoice #%d back without running again\n", same, clicks, original.Value.ID)

	fmt.Fprintln(out, "4. The same key with another amount is refused, not replayed:")
	_, err = srv.call(10*time.Second, 0, key, "ada", 9900)
	fmt.Fprintf(out, "   %v\n", err)
	if !errors.Is(err, idemsql.ErrFingerprintMismatch) {
		return fmt.Errorf("expected a fingerprint mismatch, got %v", err)
	}

	var invoices, charges int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM invoices`).Scan(&invoices); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM charges`).Scan(&charges); err != nil {
		return err
	}
	var status string
	var attempt int
	if err := db.QueryRowContext(ctx,
		`SELECT status, attempt FROM idempotency_keys WHERE idem_key = ?`, key).Scan(&status, &attempt); err != nil {
		return err
	}
	fmt.Fprintf(out, "Result: %d invoice, %d charge; key %s is %s (attempt %d).\n", invoices, charges, key, status, attempt)
	if invoices != 1 || charges != 1 || same != clicks || !original.Replayed {
		return fmt.Errorf("guarantee broken: %d invoices, %d charges, %d/%d replays", invoices, charges, same, clicks)
	}
	fmt.Fprintln(out, "Exactly one invoice and one charge; every retry got the original invoice back.")
	return nil
}
