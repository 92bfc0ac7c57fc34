// Command createinvoice shows idemsql's RunSteps on the operation this
// library was made for, on an embedded SQLite database:
//
//	go run ./examples/createinvoice
//
// create_invoice charges a card (a fake payment API that deduplicates by
// idempotency key, as Stripe's does), writes the invoice row (in the
// database, with the step's checkpoint) and sends an e-mail (a fake mailer
// that counts what it sends and deduplicates nothing). For every point
// where a worker can die (inside the charge, inside the invoice's
// transaction, and between each two steps),
// worker 1 dies there: it panics, its heartbeat stops, its lease runs out.
// Worker 2, calling with the same key, takes the claim over and resumes at
// the first unfinished step. Every line ends with one charge, one invoice
// row and one e-mail.
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
		fmt.Fprintln(os.Stderr, "createinvoice:", err)
		os.Exit(1)
	}
}

// Order is the request, stored with the claim.
type Order struct {
	ID     string `json:"id"`
	Amount int64  `json:"amount"`
	Email  string `json:"email"`
}

// Charge is the payment API's answer: the charge step's result.
type Charge struct {
	ID string `json:"id"`
}

// psp is a fake payment API: one charge per idempotency key.
type psp struct {
	mu      sync.Mutex
	charges map[string]Charge
	calls   int
}

func (p *psp) charge(idemKey string) Charge {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if c, ok := p.charges[idemKey]; ok {
		return c // a repeat: the same charge, as Stripe replays it
	}
	c := Charge{ID: fmt.Sprintf("ch_%d", len(p.charges)+1)}
	p.charges[idemKey] = c
	return c
}

// mailer is a fake mailer: it sends whatever it is given.
type mailer struct {
	mu   sync.Mutex
	sent int
}

func (m *mailer) send(to, messageID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent++
}

// crash is what worker 1 dies of.
var errCrash = errors.New("crash")

// createInvoice is the operation; die is called at every point a worker
// can die at.
func createInvoice(pay *psp, mail *mailer, die func(point string)) func(context.Context, *idemsql.Steps[*sql.Tx], Order) (Charge, error) {
	return func(ctx context.Context, s *idemsql.Steps[*sql.Tx], o Order) (Charge, error) {
		c, err := idemsql.Step(ctx, s, "charge", func(ctx context.Context, cl idemsql.Claim) (Charge, error) {
			c := pay.charge(cl.DownstreamKey) // the same key for every run of the step
			die("inside the charge, after the API charged")
			return c, nil
		})
		if err != nil {
			return Charge{}, err
		}
		die("after the charge")
		if _, err := idemsql.StepTx(ctx, s, "invoice", func(ctx context.Context, tx *sql.Tx) (struct{}, error) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO invoices (order_id, charge_id) VALUES (?, ?)`, o.ID, c.ID); err != nil {
				return struct{}{}, err
			}
			die("inside the invoice's transaction, after its INSERT")
			return struct{}{}, nil
		}); err != nil {
			return Charge{}, err
		}
		die("after the invoice row")
		if _, err := idemsql.Step(ctx, s, "email", func(ctx context.Context, cl idemsql.Claim) (struct{}, error) {
			mail.send(o.Email, cl.DownstreamKey)
			return struct{}{}, nil
		}); err != nil {
			return Charge{}, err
		}
		die("after the e-mail")
		return c, nil
	}
}

var points = []string{"inside the charge, after the API charged", "after the charge",
	"inside the invoice's transaction, after its INSERT", "after the invoice row", "after the e-mail"}

func run(ctx context.Context, out io.Writer) error {
	dir, err := os.MkdirTemp("", "idemsql-createinvoice-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(dir, "app.db")))
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
	if _, err := db.ExecContext(ctx, `CREATE TABLE invoices (order_id TEXT PRIMARY KEY, charge_id TEXT NOT NULL)`); err != nil {
		return err
	}
	// A short lease, so that worker 2 does not wait long for the dead
	// worker's to run out.
	opts := idemsql.Options{Lease: 300 * time.Millisecond, LeaseWait: 20 * time.Millisecond}

	for i, point := range points {
		pay, mail := &psp{charges: map[string]Charge{}}, &mailer{}
		o := Order{ID: fmt.Sprintf("o-%d", i+1), Amount: 1200, Email: "ann@example.com"}
		key := "create_invoice:" + o.ID

		// Worker 1 dies at the point: a panic stops its heartbeat and
		// records nothing, as a killed process would.
		func() {
			defer func() {
				if r := recover(); r != nil && r != errCrash {
					panic(r)
				}
			}()
			_, _ = idemsql.RunSteps(ctx, store, key, o, createInvoice(pay, mail, func(p string) {
				if p == point {
					panic(errCrash)
				}
			}), opts)
		}()

		// Worker 2 waits for the dead worker's lease, takes the claim over
		// and resumes.
		res, err := idemsql.RunSteps(ctx, store, key, o, createInvoice(pay, mail, func(string) {}), opts)
		if err != nil {
			return fmt.Errorf("worker 2, %s: %w", point, err)
		}
		var rows int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM invoices WHERE order_id = ?`, o.ID).Scan(&rows); err != nil {
			return err
		}
		rec, _, err := idemsql.Lookup(ctx, store, key)
		if err != nil {
			return err
		}
		runs := ""
		for _, st := range rec.Steps {
			runs += fmt.Sprintf(" %s×%d", st.Name, st.Runs)
		}
		fmt.Fprintf(out, "died %-50s → %s; charges: %d (API calls: %d), invoice rows: %d, e-mails: %d; step runs:%s\n",
			point, res.Value.ID, len(pay.charges), pay.calls, rows, mail.sent, runs)
	}
	return nil
}
