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

// abortSlot holds what the handler said during one run: the first error
// it passed to Abort, from whichever of its goroutines, and whether it
// called NotBegun. lease marks NewExternal's, where Abort has no place.
type abortSlot struct {
	err      atomic.Pointer[error]
	notBegun atomic.Bool
	lease    bool
}

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
	if !ok || slot.lease {
		panic("idemhttp: Abort outside idemhttp.New's middleware")
	}
	if err == nil {
		err = errAborted
	}
	slot.err.CompareAndSwap(nil, &err)
}

// NotBegun tells the middleware that the handler began nothing: it wrote
// nothing and called no other system, and refuses the request as sent,
// typically with a 422 for a body that fails validation. Its response is
// sent as it wrote it and not stored, whatever its status, and the key is
// left free, so that the client may correct the request and send it again
// under the same key (Stripe saves a result only once the endpoint began
// execution). Without NotBegun, a 422 is stored like the other statuses
// below 500, and the corrected request gets 422 key-reused.
//
//	if err := validate(order); err != nil {
//		idemhttp.NotBegun(r.Context())
//		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
//		return
//	}
//
// In [New]'s atomic mode the request's transaction is rolled back, and the
// claim with it. In [NewExternal]'s lease mode the claim was committed
// before the handler ran: it is deleted, unless it was taken over from a
// holder that died (its Attempt is more than 1), whose effect NotBegun
// cannot speak for: then it is released, as for a status not stored, and
// only the same request runs again at once, under the same DownstreamKey.
// Call it only before any effect: a lease-mode claim deleted after a call
// to another system loses its DownstreamKey, and the retry makes the call
// again under a new one.
//
// It may be called from any goroutine of the handler, before the handler
// returns. It panics outside the two middlewares (a wiring mistake, as for
// [MustTx]).
func NotBegun(ctx context.Context) {
	slot, ok := ctx.Value(abortKey{}).(*abortSlot)
	if !ok {
		panic("idemhttp: NotBegun outside idemhttp.New's or NewExternal's middleware")
	}
	slot.notBegun.Store(true)
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
