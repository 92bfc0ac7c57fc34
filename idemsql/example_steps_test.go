package idemsql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/idemsql/idemsql/idemsql"
)

type invoiceOrder struct {
	Order  string `json:"order"`
	Amount int64  `json:"amount"`
	Email  string `json:"email"`
}

type pspCharge struct {
	ChargeID string `json:"charge_id"`
}

// fakePSP is a pspCharge provider that deduplicates by idempotency key, as
// Stripe's API does.
type fakePSP struct{ charges map[string]pspCharge }

func (p *fakePSP) charge(idemKey string, amount int64) pspCharge {
	if c, ok := p.charges[idemKey]; ok {
		return c // a repeat of a call it saw: the same charge
	}
	c := pspCharge{ChargeID: fmt.Sprintf("ch_%d", len(p.charges)+1)}
	p.charges[idemKey] = c
	return c
}

func ExampleRunSteps() {
	db, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE invoices (order_id TEXT PRIMARY KEY, charge_id TEXT)`); err != nil {
		fmt.Println(err)
		return
	}
	psp := &fakePSP{charges: map[string]pspCharge{}}
	mailed := 0

	createInvoice := func(ctx context.Context, s *idemsql.Steps[*sql.Tx], o invoiceOrder) (string, error) {
		// An effect outside the database: its downstream key is the same
		// for every run of the step.
		p, err := idemsql.Step(ctx, s, "charge", func(ctx context.Context, c idemsql.Claim) (pspCharge, error) {
			return psp.charge(c.DownstreamKey, o.Amount), nil
		})
		if err != nil {
			return "", err
		}
		// Database writes: they commit with the step's checkpoint.
		if _, err := idemsql.StepTx(ctx, s, "invoice", func(ctx context.Context, tx *sql.Tx) (struct{}, error) {
			_, err := tx.ExecContext(ctx, `INSERT INTO invoices VALUES (?, ?)`, o.Order, p.ChargeID)
			return struct{}{}, err
		}); err != nil {
			return "", err
		}
		if _, err := idemsql.Step(ctx, s, "email", func(ctx context.Context, c idemsql.Claim) (struct{}, error) {
			mailed++ // the mailer, with c.DownstreamKey as the Message-ID
			return struct{}{}, nil
		}); err != nil {
			return "", err
		}
		return p.ChargeID, nil
	}

	o := invoiceOrder{Order: "o-7", Amount: 1200, Email: "ann@example.com"}
	for range 2 {
		res, err := idemsql.RunSteps(ctx, store, "create_invoice:o-7", o, createInvoice)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(res.Value, "replayed:", res.Replayed)
	}
	var rows int
	_ = db.QueryRowContext(ctx, `SELECT count(*) FROM invoices`).Scan(&rows)
	fmt.Println("charges:", len(psp.charges), "invoices:", rows, "e-mails:", mailed)

	rec, _, err := idemsql.Lookup(ctx, store, "create_invoice:o-7")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, st := range rec.Steps {
		fmt.Println(st.Name, st.State, st.Runs, string(st.Result))
	}
	// Output:
	// ch_1 replayed: false
	// ch_1 replayed: true
	// charges: 1 invoices: 1 e-mails: 1
	// charge done 1 {"charge_id":"ch_1"}
	// invoice done 1 {}
	// email done 1 {}
}

// A permanent failure after a charge: a compensating step refunds it, and
// the failure is recorded and replayed.
func ExampleRunSteps_compensation() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	refunds := 0
	ship := func(ctx context.Context, s *idemsql.Steps[*sql.Tx], order string) (string, error) {
		if _, err := idemsql.Step(ctx, s, "charge", func(ctx context.Context, c idemsql.Claim) (string, error) {
			return "ch_1", nil
		}); err != nil {
			return "", err
		}
		_, err := idemsql.Step(ctx, s, "reserve", func(ctx context.Context, c idemsql.Claim) (struct{}, error) {
			return struct{}{}, idemsql.Permanent("out_of_stock", errors.New("no stock left"))
		})
		if _, permanent := idemsql.IsPermanent(err); permanent {
			if _, rerr := idemsql.Step(ctx, s, "refund", func(ctx context.Context, c idemsql.Claim) (struct{}, error) {
				refunds++ // the provider's refund, with c.DownstreamKey
				return struct{}{}, nil
			}); rerr != nil {
				return "", rerr
			}
		}
		return "shipped", err
	}
	for range 2 {
		_, err := idemsql.RunSteps(ctx, store, "ship:o-8", "o-8", ship)
		var e *idemsql.Error
		if errors.As(err, &e) {
			fmt.Println(errors.Is(err, idemsql.ErrFailureRecorded), e.Class)
		}
	}
	fmt.Println("refunds:", refunds)
	// Output:
	// true out_of_stock
	// true out_of_stock
	// refunds: 1
}
