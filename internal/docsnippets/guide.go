package docsnippets

import (
	"context"
	"database/sql"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

type InvoiceReq struct {
	RequestID string `json:"request_id"`
	UserID    int64  `json:"user_id"`
	Amount    int64  `json:"amount"`
}

type Invoice struct {
	ID     int64 `json:"id"`
	Amount int64 `json:"amount"`
}

func insertInvoice(ctx context.Context, tx *sql.Tx, r InvoiceReq) (Invoice, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO invoices (user_id, amount) VALUES (?, ?)`, r.UserID, r.Amount)
	if err != nil {
		return Invoice{}, err
	}
	id, err := res.LastInsertId()
	return Invoice{ID: id, Amount: r.Amount}, err
}

func wrapRun(ctx context.Context, store *idemsql.Store[*sql.Tx]) (idemsql.Result[Invoice], error) {
	// snippet: wraprun
	// At start-up, once the store exists.
	createInvoice := idemsql.WrapRun(store, idemsql.ArgsKey[InvoiceReq]("create_invoice"),
		func(ctx context.Context, tx *sql.Tx, r InvoiceReq) (Invoice, error) {
			return insertInvoice(ctx, tx, r)
		}, idemsql.Options{TTL: 5 * time.Minute})

	// In a handler.
	res, err := createInvoice(ctx, InvoiceReq{UserID: 7, Amount: 1999})
	// end snippet
	return res, err
}

func wrapRunFingerprint(ctx context.Context, store *idemsql.Store[*sql.Tx], req InvoiceReq) (idemsql.Result[Invoice], error) {
	// snippet: wraprun-fingerprint
	createInvoice := idemsql.WrapRun(store, func(r InvoiceReq) (string, error) { return "invoice:" + r.RequestID, nil },
		func(ctx context.Context, tx *sql.Tx, r InvoiceReq) (Invoice, error) {
			return insertInvoice(ctx, tx, r)
		}, idemsql.Options{TTL: 5 * time.Minute})

	res, err := createInvoice(ctx, req, idemsql.Options{Fingerprint: req})
	// end snippet
	return res, err
}

func deriveKey() (string, error) {
	// snippet: derivekey
	key, err := idemsql.DeriveKey("create_invoice", 42, 1999)
	// create_invoice:271eabe0f31d812d3db7b66479e281118c31a1bb9c0e4d62bee664f0801a4247
	// end snippet
	return key, err
}

func bindTx(ctx context.Context, store *idemsql.Store[*sql.Tx], db *sql.DB, key string, body []byte, fn func(context.Context) (Invoice, error)) error {
	// snippet: bind-tx
	tx, err := db.BeginTx(ctx, nil) // db: the pool the store was made with
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := idemsql.Do(ctx, store, tx, key, fn, idemsql.Options{Fingerprint: body})
	// end snippet
	if err != nil {
		return err
	}
	_ = res
	return tx.Commit()
}
