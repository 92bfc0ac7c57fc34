package idemhttp

import (
	"context"
	"fmt"

	"github.com/idemsql/idemsql/idemsql"
)

type (
	txKey    struct{}
	leaseKey struct{}
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

// Lease returns the lease that [NewExternal]'s middleware holds for the
// request. Pass its DownstreamKey to the external system's own idempotency
// key: it is the same for every run of the handler under one claim, across
// retries after a status that was not stored and takeovers after a crash.
func Lease(ctx context.Context) (idemsql.LeaseInfo, bool) {
	l, ok := ctx.Value(leaseKey{}).(idemsql.LeaseInfo)
	return l, ok
}

// Key returns the key the middleware stores for the request (see
// [StoredKey]), in either mode.
func Key(ctx context.Context) (string, bool) {
	k, ok := ctx.Value(keyKey{}).(string)
	return k, ok
}
