package docsnippets

import (
	"context"
	"database/sql"
	"errors"
	"log"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

type InvoiceOrder struct {
	ID     string `json:"id"`
	Amount int64  `json:"amount"`
	Email  string `json:"email"`
}

// psp and mailer take an idempotency key of the caller's, as Stripe's API
// and an SMTP Message-ID do.
type psp interface {
	Charge(ctx context.Context, amount int64, idempotencyKey string) (Charge, error)
	Refund(ctx context.Context, chargeID int64, idempotencyKey string) error
}

type mailer interface {
	Send(ctx context.Context, to, messageID string) error
}

// errOutOfStock is a permanent failure of a later step.
var errOutOfStock = idemsql.Permanent("out_of_stock", errors.New("out of stock"))

func reserveStock(ctx context.Context, tx *sql.Tx, o InvoiceOrder) (bool, error) { return true, nil }

// snippet: steps-createinvoice
func createInvoice(pay psp, mail mailer) func(context.Context, *idemsql.Steps[*sql.Tx], InvoiceOrder) (Charge, error) {
	return func(ctx context.Context, s *idemsql.Steps[*sql.Tx], o InvoiceOrder) (Charge, error) {
		// An external effect: its DownstreamKey is the same for every run of
		// the step, so the provider absorbs a repeat after a crash.
		charge, err := idemsql.Step(ctx, s, "charge", func(ctx context.Context, c idemsql.Claim) (Charge, error) {
			return pay.Charge(ctx, o.Amount, c.DownstreamKey)
		})
		if err != nil {
			return Charge{}, err // retryable: the next call resumes here
		}
		// Database writes: they commit with the step's checkpoint, once.
		_, err = idemsql.StepTx(ctx, s, "invoice", func(ctx context.Context, tx *sql.Tx) (struct{}, error) {
			if ok, err := reserveStock(ctx, tx, o); err != nil || !ok {
				return struct{}{}, cmpOr(err, errOutOfStock)
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO invoices (order_id, charge_id) VALUES (?, ?)`, o.ID, charge.ID)
			return struct{}{}, err
		})
		if _, permanent := idemsql.IsPermanent(err); permanent {
			// Compensation is a step like any other: it runs once too.
			if _, rerr := idemsql.Step(ctx, s, "refund", func(ctx context.Context, c idemsql.Claim) (struct{}, error) {
				return struct{}{}, pay.Refund(ctx, charge.ID, c.DownstreamKey)
			}); rerr != nil {
				return Charge{}, rerr
			}
			return Charge{}, err // recorded: every later call gets this failure
		}
		if err != nil {
			return Charge{}, err
		}
		_, err = idemsql.Step(ctx, s, "email", func(ctx context.Context, c idemsql.Claim) (struct{}, error) {
			return struct{}{}, mail.Send(ctx, o.Email, c.DownstreamKey)
		})
		return charge, err
	}
}

// end snippet

func cmpOr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

func stepsRun(ctx context.Context, store *idemsql.Store[*sql.Tx], pay psp, mail mailer, o InvoiceOrder) (Charge, error) {
	// snippet: steps-run
	res, err := idemsql.RunSteps(ctx, store, "create_invoice:"+o.ID, o, createInvoice(pay, mail))
	if err != nil {
		return Charge{}, err // ErrInProgress, a recorded failure, ErrStepsChanged, ...
	}
	// res.Value is the charge; res.Replayed: the whole run was done before.
	// end snippet
	return res.Value, nil
}

func stepsCompleter(ctx context.Context, store *idemsql.Store[*sql.Tx], pay psp, mail mailer) error {
	// snippet: steps-completer
	// Runs nobody retries: a dead holder's (its lease ran out) and, with
	// SweepReleased, those that failed with a retryable error. Each is
	// resumed from its stored input, under the sweeper's claim.
	return idemsql.SweepEvery(ctx, store, time.Minute, idemsql.Completer(store, createInvoice(pay, mail)),
		func(st idemsql.SweepStats, err error) {
			if err != nil {
				log.Printf("completer: %v (%+v)", err, st)
			}
		}, idemsql.Options{SweepReleased: true})
	// end snippet
}
