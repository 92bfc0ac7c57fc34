package idemhttp

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/idemsql/idemsql/idemsql"
)

type (
	txKey    struct{}
	claimKey struct{}
	keyKey   struct{}
)

// Tx returns the transaction that [New]'s middleware began for the request:
// a *sql.Tx or a pgx.Tx, whatever X the middleware was made with. The
// handler's writes in it commit together with the stored response. ok is
// false outside such a middleware, and when X is not the middleware's
// transaction type.
func Tx[X any](ctx context.Context) (tx X, ok bool) {
	tx, ok = ctx.Value(txKey{}).(X)
	return tx, ok
}

// MustTx is [Tx] for handlers that only run behind [New]'s middleware: it
// panics when there is no transaction of type X, which is a wiring mistake.
func MustTx[X any](ctx context.Context) X {
	tx, ok := Tx[X](ctx)
	if !ok {
		var zero X
		panic(fmt.Sprintf("idemhttp: no %T transaction in the request's context: is the handler behind idemhttp.New with that transaction type?", zero))
	}
	return tx
}

// Claim returns the claim that [NewExternal]'s middleware holds for the
// request. Pass its DownstreamKey to the external system's own idempotency
// key: it is the same for every run of the handler under one claim, across
// retries after a status that was not stored and takeovers after a crash.
func Claim(ctx context.Context) (idemsql.Claim, bool) {
	c, ok := ctx.Value(claimKey{}).(idemsql.Claim)
	return c, ok
}

// Key returns the key the middleware stores for the request (see
// [StoredKey]), in either mode.
func Key(ctx context.Context) (string, bool) {
	k, ok := ctx.Value(keyKey{}).(string)
	return k, ok
}

type abortKey struct{}

// abortSlot holds what the handler passed to Abort during one run: the
// first error, from whichever of the handler's goroutines.
type abortSlot struct{ err atomic.Pointer[error] }

func (s *abortSlot) load() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

// errAborted stands for Abort(ctx, nil).
var errAborted = errors.New("idemhttp: the handler aborted the request")

// Abort tells [New]'s middleware that the request's transaction must not
// commit, typically because one of the handler's statements failed: the
// handler calls it with the error and returns. The transaction is rolled
// back and nothing is stored. When err says the database wants the
// transaction run again (a deadlock, a serialization failure, a Galera
// certification failure, SQLite busy: what [idemsql.Run] retries), the
// whole request runs again in a new transaction, handler included; if it
// fails so on every attempt, the client gets a 503 problem with
// Retry-After. Else the client gets the handler's response if it wrote an
// error status (400 or more), or a 500 problem, and a retry with the key
// runs the handler again.
//
// A handler that goes on after a failed statement instead, and answers a
// status that is stored, meets the failure when the response is stored or
// committed: on PostgreSQL a failed statement aborts the transaction.
// Nothing commits; the request runs once more (the failure may have been a
// deadlock), and if it fails the same way again the client gets 500.
//
// Abort may be called from any goroutine of the handler, the first error
// counting, but only before the handler returns: the middleware reads it
// then.
//
// Abort panics outside New's middleware (a wiring mistake, as for [MustTx]);
// [NewExternal]'s handlers have no transaction, and answer a status that is
// not stored instead.
func Abort(ctx context.Context, err error) {
	slot, ok := ctx.Value(abortKey{}).(*abortSlot)
	if !ok {
		panic("idemhttp: Abort outside idemhttp.New's middleware")
	}
	if err == nil {
		err = errAborted
	}
	slot.err.CompareAndSwap(nil, &err)
}

// abortedError is fn's error after Abort: it wraps the handler's error, so
// that Run sees the driver's error and retries what it retries, but not as
// an idemsql.Permanent failure, which Run would record: Abort stores
// nothing.
type abortedError struct{ err error }

func (e *abortedError) Error() string { return "idemhttp: aborted by the handler: " + e.err.Error() }
func (e *abortedError) Unwrap() error { return notPermanent(e.err) }

// notPermanent is err, or what it wraps below an idemsql.Permanent.
func notPermanent(err error) error {
	for err != nil {
		if _, ok := idemsql.IsPermanent(err); !ok {
			return err
		}
		err = errors.Unwrap(err)
	}
	return err
}
