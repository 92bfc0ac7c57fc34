package idemsql

import (
	"context"
	"fmt"
)

// Keyer computes the key of one call of a wrapped function from its
// argument.
type Keyer[A any] func(arg A) (string, error)

// ArgsKey keys calls by their argument: [DeriveKey](namespace, arg). Use
// the function's name as the namespace. It encodes the argument with
// encoding/json on every call; a hand-written Keyer avoids that.
func ArgsKey[A any](namespace string) Keyer[A] {
	return func(arg A) (string, error) { return DeriveKey(namespace, arg) }
}

// Wrap guards a function that writes in the caller's transaction: the
// result calls [Do] with the key that keyer gives for its argument. bind
// binds the store to the transaction: store.SQL, or the postgres store's
// Pgx method. Make it where the store exists (at start-up, after
// NewStore), not in a package-level var initialised before it:
//
//	createInvoice := idemsql.Wrap(store.SQL, idemsql.ArgsKey[InvoiceReq]("create_invoice"),
//		func(ctx context.Context, tx *sql.Tx, r InvoiceReq) (Invoice, error) { ... },
//		idemsql.WithTTL(5*time.Minute))
//
//	res, err := createInvoice(ctx, tx, InvoiceReq{UserID: 7, Amount: 1999})
func Wrap[X, A, T any](bind func(X) Tx, keyer Keyer[A], fn func(ctx context.Context, tx X, arg A) (T, error), opts ...Option) func(ctx context.Context, tx X, arg A) (Result[T], error) {
	return func(ctx context.Context, tx X, arg A) (Result[T], error) {
		if bind == nil || keyer == nil || fn == nil {
			return Result[T]{}, fmt.Errorf("%w: Wrap needs a bind function, a keyer and fn", ErrInvalidOption)
		}
		key, err := keyer(arg)
		if err != nil {
			return Result[T]{}, err
		}
		return Do(ctx, bind(tx), key, func(ctx context.Context) (T, error) { return fn(ctx, tx, arg) }, opts...)
	}
}

// WrapRun guards a function that needs a transaction but is called without
// one: the result calls [Run] on db with the key that keyer gives for its
// argument. The Go counterpart of a decorator; make it at start-up, once
// the store and the pool exist (a package-level var would bind a nil
// pool):
//
//	createInvoice := idemsql.WrapRun(store.DB(db, nil), idemsql.ArgsKey[InvoiceReq]("create_invoice"),
//		func(ctx context.Context, tx *sql.Tx, r InvoiceReq) (Invoice, error) { ... },
//		idemsql.WithTTL(5*time.Minute))
//
//	res, err := createInvoice(ctx, InvoiceReq{UserID: 7, Amount: 1999})
func WrapRun[X, A, T any](db DB[X], keyer Keyer[A], fn func(ctx context.Context, tx X, arg A) (T, error), opts ...Option) func(ctx context.Context, arg A) (Result[T], error) {
	return func(ctx context.Context, arg A) (Result[T], error) {
		if keyer == nil || fn == nil {
			return Result[T]{}, fmt.Errorf("%w: WrapRun needs a keyer and fn", ErrInvalidOption)
		}
		key, err := keyer(arg)
		if err != nil {
			return Result[T]{}, err
		}
		return Run(ctx, db, key, func(ctx context.Context, tx X) (T, error) { return fn(ctx, tx, arg) }, opts...)
	}
}
