// Package idemhttp is net/http middleware for the Idempotency-Key request
// header (draft-ietf-httpapi-idempotency-key-header), built on idemsql: the
// stored response commits in the same database transaction as the
// handler's own writes.
//
//	store, err := idemsql.New(idemsqlite.New(db))
//	if err != nil {
//		return err
//	}
//	guard, err := idemhttp.New(store, idemhttp.Config{
//		Principal: func(r *http.Request) (string, error) { return accountID(r), nil },
//	})
//	mux.Handle("POST /orders", guard(http.HandlerFunc(createOrder)))
//
//	func createOrder(w http.ResponseWriter, r *http.Request) {
//		tx := idemhttp.MustTx[*sql.Tx](r.Context())
//		// insert the order in tx; write the response to w
//	}
//
// # Two modes
//
// [New] (atomic mode, on [idemsql.Run]) begins a transaction per request and
// hands it to the handler: the business writes, the idempotency row and the
// stored response commit together or not at all. Use it when the effect is
// a write in the same database.
//
// [NewExternal] (lease mode, on [idemsql.RunExternal]) commits the key's
// claim first and holds it with a lease while the handler calls an external
// system, passing [Claim]'s DownstreamKey on as that system's idempotency
// key. Use it when the effect lives outside the database.
//
// # Keys
//
// The key is read from the Idempotency-Key header (Config.Header): an
// sf-string as the draft says ("..."), or, unless Config.StrictKeySyntax, a
// bare key as Stripe's clients send it; see [ParseKey]. Keys are scoped by
// the authenticated principal (Config.Principal), so one client's key never
// replays another client's response; the stored key is [StoredKey]. The
// fingerprint covers the method, the request URI and the body
// (Config.Fingerprint). GET, HEAD, OPTIONS and TRACE pass through untouched
// unless Config.Methods lists them.
//
// # Answers
//
// The middleware's own answers are application/problem+json (RFC 9457),
// whose type links to Config.ProblemBaseURL:
//
//	400 missing-key         the header is required and missing
//	400 invalid-key         malformed, empty, too long, or sent twice
//	400 body-unreadable     the request body could not be read
//	403 no-principal        Config.Principal failed or returned ""
//	413 body-too-large      the body is larger than Config.MaxBodyBytes
//	422 key-reused          the key was used with another fingerprint
//	409 in-flight           the first request with the key is still running (Retry-After: 1)
//	503 retry               the transaction could not complete (retries exhausted, commit
//	                        outcome unknown, lease lost); retry with the same key (Retry-After: 1)
//	500 outcome-unknown     the key holds a recorded failure or an abandoned claim (lease mode:
//	                        a handler that crashed and was given up by idemsql.Sweep)
//	500 response-too-large  the handler wrote more than Config.MaxResponseBytes
//	500 internal            anything else (Config.OnError sees it)
//
// A replay sends the stored status, the stored headers (Config.ReplayHeaders)
// and the body, with Idempotent-Replayed: true (Config.ReplayedHeader).
// The handler's statuses below 500 are stored, but 429; a handler that
// refuses a request before beginning anything (a body that fails
// validation) calls [NotBegun], so that nothing is stored and the
// corrected request runs under the same key.
package idemhttp
