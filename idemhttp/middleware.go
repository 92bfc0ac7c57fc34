package idemhttp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/internal/notbegun"
)

// New returns a middleware that runs each guarded request through
// [idemsql.Run] on the store, so that the handler's writes and the stored
// response commit in one transaction: atomic mode. The handler gets the
// transaction from the request's context with [Tx] or [MustTx] (X is the
// store's transaction type: *sql.Tx on database/sql, pgx.Tx on a pgx pool)
// and must do its writes in it.
//
// The handler writes to a buffer; nothing reaches the client before the
// transaction's outcome is known. Then:
//
//   - A status that Config.Store accepts (by default every status below
//     500 but 429) is stored with the replayed headers and the body, and
//     the transaction commits; the client gets the handler's response.
//     Every later request with the key and the same fingerprint gets it
//     again, marked with Config.ReplayedHeader, and the handler does not
//     run.
//   - Any other status rolls the transaction back and stores nothing; the
//     client gets the handler's response, and a retry with the key runs the
//     handler again. So does any status after [NotBegun], and then the
//     retry may be another request (a corrected body) under the same key.
//   - If the handler panics, the transaction is rolled back, nothing is
//     sent or stored, and the panic goes on (net/http recovers it and drops
//     the connection).
//   - A handler whose statement failed passes the error to [Abort] and
//     returns: the transaction is rolled back and nothing is stored.
//   - When the database asks for a retry (a deadlock, a serialization
//     failure) at BEGIN, at the key's claim, when the response is stored or
//     at COMMIT, or in the error the handler passed to [Abort],
//     idemsql.Run runs the whole request again in a new transaction,
//     handler included, with the same body. When its attempts run out, the
//     client gets 503 (Retry-After: 1), whatever the handler answered.
//   - A duplicate that arrives while the first request's transaction is
//     open is answered 409 at once on PostgreSQL and MySQL/MariaDB. On
//     SQLite, whose transactions wait for the single writer's lock as they
//     begin, it waits for the first request to end and then gets its
//     replay.
//
// See the package documentation for every answer of the middleware itself.
// The configuration is checked here; an error wraps [idemsql.ErrInvalidOption].
func New[X any](store *idemsql.Store[X], cfg Config) (func(http.Handler) http.Handler, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	if store == nil {
		return nil, invalid("nil store")
	}
	base := s.options
	// A duplicate answers 409 at once, unless the configuration bounds a
	// wait for the first request instead.
	base.FailFast = base.LockTimeout == 0
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a, ok := s.admit(w, r, next)
			if !ok {
				return
			}
			defer putBuf(a.body)
			var last *capture
			res, err := idemsql.Run(r.Context(), store, a.key, func(ctx context.Context, tx X) (Response, error) {
				abort := &abortSlot{}
				ctx = context.WithValue(context.WithValue(ctx, txKey{}, tx), keyKey{}, a.key)
				ctx = context.WithValue(ctx, abortKey{}, abort)
				resp, err := s.serve(ctx, w.Header(), next, r, a.body.Bytes(), &last)
				// A response too large to keep stays that error: the client
				// gets 500, not a truncated body.
				if aerr := abort.load(); aerr != nil && !(last != nil && last.overflow) {
					return Response{}, &abortedError{err: aerr}
				}
				return resp, err
			}, a.options(base))
			s.finish(w, r, res, err, last)
		})
	}, nil
}

// NewExternal returns a middleware for handlers whose effect lives outside
// the database (a payment API, an e-mail): lease mode, on
// [idemsql.RunExternal]. The key's claim is committed before the handler
// runs, with a lease that a heartbeat renews while it runs; the handler gets
// no transaction but the lease, from [Claim], and passes its DownstreamKey
// to the external system's own idempotency key; the response is recorded
// after the handler returns.
//
//   - A stored status (Config.Store) is recorded and replayed as in [New].
//   - Any other status ends the lease without an outcome: the client gets
//     the handler's response, and a retry runs the handler again at once,
//     with the same DownstreamKey.
//   - After [NotBegun] the claim is deleted (unless it was taken over from
//     a holder that died: then it is released as above): the client gets
//     the handler's response, and the key is free for any request.
//   - A duplicate that arrives while the handler runs is answered 409 on
//     every database, since the claim is committed first.
//   - If the handler panics, nothing is recorded and the panic goes on; the
//     key answers 409 until the lease runs out (idemsql.Options.Lease, default
//     30s), then the next request takes it over and runs the handler again
//     with the same DownstreamKey.
//
// Pick [New] when the handler's effect is a write in the same database: it
// happens exactly once. Pick NewExternal when it is a call to another
// system: the handler runs at most once at a time per key, and a crash
// between the call and the record can repeat the call, which the
// DownstreamKey lets the other system absorb.
func NewExternal[X any](store *idemsql.Store[X], cfg Config) (func(http.Handler) http.Handler, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	if store == nil {
		return nil, invalid("nil store")
	}
	base := s.options
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a, ok := s.admit(w, r, next)
			if !ok {
				return
			}
			defer putBuf(a.body)
			var last *capture
			res, err := idemsql.RunExternal(r.Context(), store, a.key, func(ctx context.Context, l idemsql.Claim) (Response, error) {
				ctx = context.WithValue(context.WithValue(ctx, claimKey{}, l), keyKey{}, a.key)
				ctx = context.WithValue(ctx, abortKey{}, &abortSlot{lease: true})
				return s.serve(ctx, w.Header(), next, r, a.body.Bytes(), &last)
			}, a.options(base))
			s.finish(w, r, res, err, last)
		})
	}, nil
}

// admitted is a guarded request that passed the middleware's checks.
type admitted struct {
	key  string
	body *bytes.Buffer
	fp   []byte
}

// options are the call's: Config.Options, with the request's fingerprint
// unless the configuration set one.
func (a *admitted) options(base idemsql.Options) idemsql.Options {
	if base.Fingerprint == nil {
		base.Fingerprint = a.fp
	}
	return base
}

// admit checks a request. It returns false when the request was answered
// (a problem) or handed to next unguarded.
func (s *settings) admit(w http.ResponseWriter, r *http.Request, next http.Handler) (admitted, bool) {
	var a admitted
	if !s.guards(r.Method) {
		next.ServeHTTP(w, r)
		return a, false
	}
	clientKey, err := s.requestKey(r)
	switch {
	case err == errNoKey && s.optional:
		next.ServeHTTP(w, r)
		return a, false
	case err == errNoKey:
		s.sendProblem(w, problemMissingKey, "This operation requires an "+s.header+" header.")
		return a, false
	case err != nil:
		s.sendProblem(w, problemInvalidKey, s.header+": "+err.Error()+".")
		return a, false
	}
	var principal string
	if s.principal != nil {
		principal, err = s.principal(r)
		if err != nil || principal == "" {
			s.sendProblem(w, problemNoPrincipal, "")
			return a, false
		}
	}
	if r.ContentLength > s.maxBody {
		s.sendProblem(w, problemBodyTooLarge, fmt.Sprintf("The limit is %d bytes.", s.maxBody))
		return a, false
	}
	a.body = getBuf()
	if r.Body != nil {
		_, err := a.body.ReadFrom(http.MaxBytesReader(w, r.Body, s.maxBody))
		if err != nil {
			putBuf(a.body)
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				s.sendProblem(w, problemBodyTooLarge, fmt.Sprintf("The limit is %d bytes.", s.maxBody))
			} else {
				s.sendProblem(w, problemBodyUnreadable, "")
			}
			return a, false
		}
	}
	a.fp = s.fingerprint(r, a.body.Bytes())
	a.key = StoredKey(s.namespace, principal, clientKey, s.principal == nil)
	return a, true
}

// unstored is fn's error for a status that is not stored: it rolls the
// transaction back (atomic mode) or ends the lease (lease mode); the
// handler's response is still sent. After NotBegun it says so to
// RunExternal, which then deletes a claim no one held before.
type unstored struct {
	status   int
	notBegun bool
}

func (e *unstored) Error() string {
	if e.notBegun {
		return fmt.Sprintf("idemhttp: status %d is not stored: the handler began nothing", e.status)
	}
	return fmt.Sprintf("idemhttp: status %d is not stored", e.status)
}

func (e *unstored) Unwrap() error {
	if e.notBegun {
		return notbegun.Err
	}
	return nil
}

// serve runs the handler into a fresh buffer: idemsql.Run may call it more
// than once, for a retried transaction.
func (s *settings) serve(ctx context.Context, outer http.Header, next http.Handler, r *http.Request, body []byte, last **capture) (Response, error) {
	if *last != nil {
		(*last).release()
	}
	c := newCapture(outer, s.maxResponse)
	*last = c
	req := r.WithContext(ctx)
	req.Body = io.NopCloser(bytes.NewReader(body))
	next.ServeHTTP(c, req)
	if c.overflow {
		return Response{}, ErrResponseTooLarge
	}
	c.sniff()
	status := c.finalStatus()
	if slot, _ := ctx.Value(abortKey{}).(*abortSlot); slot != nil && slot.notBegun.Load() {
		return Response{}, &unstored{status: status, notBegun: true}
	}
	if !s.store(status) {
		return Response{}, &unstored{status: status}
	}
	return c.stored(s.replayHeaders), nil
}

// finish answers the client once the transaction or the lease has its
// outcome.
func (s *settings) finish(w http.ResponseWriter, r *http.Request, res idemsql.Result[Response], err error, last *capture) {
	if last != nil {
		defer last.release()
	}
	if err != nil && res.Replayed && errors.Is(err, idemsql.ErrDuplicate) {
		err = nil // idemsql.Options.ErrorOnDuplicate among the options: still a replay
	}
	var u *unstored
	var ab *abortedError
	switch {
	case err == nil && res.Replayed:
		sendReplay(w, res.Value, s.replayedHeader)
	case err == nil && last != nil:
		sendCaptured(w, last)
	case errors.Is(err, idemsql.ErrRetryable):
		// Run's attempts ran out: the request may well go through if sent
		// again, whatever the handler answered to the last attempt's
		// failure.
		s.fail(w, r, err)
	case errors.As(err, &u) && last != nil:
		sendCaptured(w, last)
	case errors.As(err, &ab) && last != nil && last.finalStatus() >= 400:
		sendCaptured(w, last) // the handler's own answer to its failure
	default:
		if err == nil {
			err = errors.New("idemhttp: no response")
		}
		s.fail(w, r, err)
	}
}

// fail answers an error of idemsql or of the middleware.
func (s *settings) fail(w http.ResponseWriter, r *http.Request, err error) {
	p, detail := problemFor(err)
	if p.status == problemInternal.status && r.Context().Err() != nil {
		p, detail = problemRetry, "" // the client has gone; nobody reads this
	} else if p.status >= 500 && s.onError != nil {
		s.onError(r, err)
	}
	s.sendProblem(w, p, detail)
}

// problemFor maps an error to the middleware's answer.
func problemFor(err error) (problem, string) {
	switch {
	case errors.Is(err, idemsql.ErrFingerprintMismatch):
		return problemKeyReused, "This key was sent with another method, URI or body. Use a new key for a new request."
	case errors.Is(err, idemsql.ErrInProgress), errors.Is(err, idemsql.ErrLockTimeout):
		return problemInFlight, "Retry once it has finished: its response will be replayed."
	case errors.Is(err, ErrResponseTooLarge), errors.Is(err, idemsql.ErrResultTooLarge):
		return problemResponseTooLarge, ""
	case errors.Is(err, idemsql.ErrFailureRecorded):
		return problemOutcomeUnknown, "Its outcome was recorded as " + failureClass(err) + "; the key answers so until it expires."
	case errors.Is(err, idemsql.ErrAbandoned):
		return problemOutcomeUnknown, "The key answers so until it is resolved or expires."
	case errors.Is(err, idemsql.ErrRetryable), errors.Is(err, idemsql.ErrCommitUnknown),
		errors.Is(err, idemsql.ErrLeaseLost), errors.Is(err, idemsql.ErrUnexpectedState),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return problemRetry, ""
	}
	return problemInternal, ""
}

// failureClass is the class of the recorded failure in err's tree.
func failureClass(err error) string {
	switch x := err.(type) {
	case *idemsql.Error:
		if x.Kind == idemsql.ErrFailureRecorded {
			return x.Class
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return failureClass(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if c := failureClass(e); c != "" {
				return c
			}
		}
	}
	return ""
}
