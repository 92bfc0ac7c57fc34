package idemsql

import (
	"context"
	"fmt"
	"reflect"
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
//
// A call of the result may take one Options of its own, over the
// wrapper's: what it sets wins. That is where a request's fingerprint goes,
// when keyer keys by something else than the whole argument (a request ID):
//
//	res, err := createInvoice(ctx, tx, req, idemsql.Options{Fingerprint: req})
func Wrap[X, A, T any](s *Store[X], keyer func(arg A) (string, error), fn func(ctx context.Context, tx X, arg A) (T, error), opts ...Options) func(ctx context.Context, tx X, arg A, callOpts ...Options) (Result[T], error) {
	return func(ctx context.Context, tx X, arg A, callOpts ...Options) (Result[T], error) {
		if s == nil || keyer == nil || fn == nil {
			return Result[T]{}, fmt.Errorf("%w: Wrap needs a store, a keyer and fn", ErrInvalidOption)
		}
		key, err := keyer(arg)
		if err != nil {
			return Result[T]{}, err
		}
		return Do(ctx, s, tx, key, func(ctx context.Context) (T, error) { return fn(ctx, tx, arg) }, overlay(opts, callOpts)...)
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
//
// A call of the result may take one Options of its own, over the
// wrapper's, as [Wrap]'s may: createInvoice(ctx, req,
// idemsql.Options{Fingerprint: req}).
func WrapRun[X, A, T any](s *Store[X], keyer func(arg A) (string, error), fn func(ctx context.Context, tx X, arg A) (T, error), opts ...Options) func(ctx context.Context, arg A, callOpts ...Options) (Result[T], error) {
	return func(ctx context.Context, arg A, callOpts ...Options) (Result[T], error) {
		if keyer == nil || fn == nil {
			return Result[T]{}, fmt.Errorf("%w: WrapRun needs a keyer and fn", ErrInvalidOption)
		}
		key, err := keyer(arg)
		if err != nil {
			return Result[T]{}, err
		}
		return Run(ctx, s, key, func(ctx context.Context, tx X) (T, error) { return fn(ctx, tx, arg) }, overlay(opts, callOpts)...)
	}
}

// overlay is a wrapper's Options with a call's over them, the fields the
// call sets winning, as one Options; more than one on either side is left
// for the call to refuse.
func overlay(wrapped, call []Options) []Options {
	if len(call) == 0 {
		return wrapped
	}
	if len(wrapped) != 1 || len(call) != 1 {
		return append(append([]Options(nil), wrapped...), call...)
	}
	o := wrapped[0]
	dst, src := reflect.ValueOf(&o).Elem(), reflect.ValueOf(call[0])
	for i := range src.NumField() {
		if f := src.Field(i); !f.IsZero() {
			dst.Field(i).Set(f)
		}
	}
	return []Options{o}
}
