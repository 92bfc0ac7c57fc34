package idemsql

import (
	"context"
	"fmt"
)

// ArgsKey keys the calls of a wrapped function ([Wrap], [WrapRun]) by
// their argument: [DeriveKey](namespace, arg). Use the function's name as
// the namespace. It encodes the argument with encoding/json on every call;
// a key function of your own avoids that.
func ArgsKey[A any](namespace string) func(arg A) (string, error) {
	return func(arg A) (string, error) { return DeriveKey(namespace, arg) }
}

// Wrap guards a function that writes in the caller's transaction: the
// result calls [Do] on the store with the key that keyer computes from its
// argument ([ArgsKey], or a function of your own). Make it where the store
// exists (at start-up, after [New]), not in a package-level var
// initialised before it:
//
//	createInvoice := idemsql.Wrap(store, idemsql.ArgsKey[InvoiceReq]("create_invoice"),
//		func(ctx context.Context, tx *sql.Tx, r InvoiceReq) (Invoice, error) { ... },
//		idemsql.Options{TTL: 5 * time.Minute})
//
//	res, err := createInvoice(ctx, tx, InvoiceReq{UserID: 7, Amount: 1999})
func Wrap[X, A, T any](s *Store[X], keyer func(arg A) (string, error), fn func(ctx context.Context, tx X, arg A) (T, error), opts ...Options) func(ctx context.Context, tx X, arg A) (Result[T], error) {
	return func(ctx context.Context, tx X, arg A) (Result[T], error) {
		if s == nil || keyer == nil || fn == nil {
			return Result[T]{}, fmt.Errorf("%w: Wrap needs a store, a keyer and fn", ErrInvalidOption)
		}
		key, err := keyer(arg)
		if err != nil {
			return Result[T]{}, err
		}
		return Do(ctx, s, tx, key, func(ctx context.Context) (T, error) { return fn(ctx, tx, arg) }, opts...)
	}
}

// WrapRun guards a function that needs a transaction but is called without
// one: the result calls [Run] on the store with the key that keyer computes
// from its argument. The Go counterpart of a decorator; make it at start-up,
// once the store exists (a package-level var would hold a nil store):
//
//	createInvoice := idemsql.WrapRun(store, idemsql.ArgsKey[InvoiceReq]("create_invoice"),
//		func(ctx context.Context, tx *sql.Tx, r InvoiceReq) (Invoice, error) { ... },
//		idemsql.Options{TTL: 5 * time.Minute})
//
//	res, err := createInvoice(ctx, InvoiceReq{UserID: 7, Amount: 1999})
func WrapRun[X, A, T any](s *Store[X], keyer func(arg A) (string, error), fn func(ctx context.Context, tx X, arg A) (T, error), opts ...Options) func(ctx context.Context, arg A) (Result[T], error) {
	return func(ctx context.Context, arg A) (Result[T], error) {
		if keyer == nil || fn == nil {
			return Result[T]{}, fmt.Errorf("%w: WrapRun needs a keyer and fn", ErrInvalidOption)
		}
		key, err := keyer(arg)
		if err != nil {
			return Result[T]{}, err
		}
		return Run(ctx, s, key, func(ctx context.Context, tx X) (T, error) { return fn(ctx, tx, arg) }, opts...)
	}
}
