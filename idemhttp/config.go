package idemhttp

import (
	"fmt"
	"net/http"
	"regexp"

	"github.com/idemsql/idemsql/idemsql"
)

// Config configures a middleware made by [New] or [NewExternal]. The zero
// value of every field but Principal and Unscoped means its default; one of
// those two must be set.
type Config struct {
	// Principal returns who sent the request, as established by the
	// authentication that runs before the middleware (a user or account ID,
	// an API key's ID). Keys are scoped by it: two principals that send the
	// same key value never share a stored response. An error, or an empty
	// principal, is answered 403. Required unless Unscoped is set.
	Principal func(r *http.Request) (string, error)
	// Unscoped waives Principal on purpose: every client shares one key
	// space, so a client that guesses another's key gets its response.
	// Only for APIs with one trusted client (an internal service).
	Unscoped bool

	// Header is the request header that carries the key. Default
	// "Idempotency-Key".
	Header string
	// Optional lets a request without the header through to the handler,
	// unguarded and without a transaction in its context. By default such a
	// request is answered 400.
	Optional bool
	// StrictKeySyntax accepts only the draft's syntax, an sf-string
	// (Idempotency-Key: "8e03978e-..."). By default a bare key
	// (Idempotency-Key: 8e03978e-..., as Stripe's clients send it) is
	// accepted too; both name the same key.
	StrictKeySyntax bool
	// MaxKeyLen is the longest key accepted, in bytes, after unquoting.
	// Default 255 (Stripe's limit); at most 1024. Longer keys are answered
	// 400.
	MaxKeyLen int
	// Methods are the methods guarded. Default: every method but the safe
	// ones, GET, HEAD, OPTIONS and TRACE, which pass through untouched.
	Methods []string

	// Fingerprint returns what identifies the request's payload: a key
	// reused with another fingerprint is answered 422. Its result is hashed.
	// Default: the method, the request URI (path and query) and the body.
	Fingerprint func(r *http.Request, body []byte) []byte
	// MaxBodyBytes is the largest request body read, which the fingerprint
	// needs whole; a larger one is answered 413. Default 1 MiB.
	MaxBodyBytes int64
	// MaxResponseBytes is the largest response body the handler may write:
	// it is held in memory until the transaction commits, and stored. A
	// handler that writes more gets an error from Write, nothing is stored
	// and the client gets 500. Default 1 MiB; at most 8 MiB.
	MaxResponseBytes int
	// Store says which of the handler's statuses are stored (and, in
	// atomic mode, commit the handler's writes). A status not stored rolls
	// the transaction back, is sent to this client as the handler wrote it,
	// and leaves the key free for a retry. Default: every status below 500
	// but 429, so that a server error can be retried, and so can a request
	// the handler's own rate limit refused (a stored 429 would answer every
	// retry for the key's whole TTL, Retry-After notwithstanding). A
	// handler that refuses a request before beginning anything says so with
	// [NotBegun], whatever the status.
	Store func(status int) bool
	// ReplayHeaders are the response headers stored with the status and
	// body and sent again on a replay. The first response carries every
	// header the handler set. Default: Content-Type, Content-Language,
	// Content-Location, Location, ETag, Link.
	ReplayHeaders []string
	// ReplayedHeader is the response header, set to "true", that marks a
	// replay. Default "Idempotent-Replayed", as Stripe sends it.
	ReplayedHeader string

	// Namespace starts every stored key, to keep the middleware's keys
	// apart from other keys in the same table. Default "http". Letters,
	// digits, '_', '-', '.'; at most 32 bytes.
	Namespace string
	// ProblemBaseURL is the page the "type" of every problem+json answer
	// points to, followed by "#" and the problem's name. Default this
	// project's docs/http.md; point it at your own API documentation.
	ProblemBaseURL string
	// OnError, if set, is called with every error that the middleware
	// answers with a 5xx of its own (not the handler's responses), for
	// logging.
	OnError func(r *http.Request, err error)

	// Options are given to every idemsql call: TTL, Lease in lease mode,
	// and so on. The middleware fills in Fingerprint (unless set here:
	// then it wins) and MaxResultSize (unless set here) to fit
	// MaxResponseBytes. In atomic mode it sets FailFast, so that a
	// duplicate of a request still running gets 409 at once, unless
	// LockTimeout is set here: then the duplicate waits for the first
	// request as long as that, and replays.
	Options idemsql.Options
}

// Defaults.
const (
	DefaultHeader           = "Idempotency-Key"
	DefaultReplayedHeader   = "Idempotent-Replayed"
	DefaultNamespace        = "http"
	DefaultMaxKeyLen        = 255
	DefaultMaxBodyBytes     = 1 << 20
	DefaultMaxResponseBytes = 1 << 20
	DefaultProblemBaseURL   = "https://github.com/idemsql/idemsql/blob/main/docs/http.md"

	maxMaxKeyLen        = 1024
	maxMaxResponseBytes = 8 << 20
	maxNamespaceLen     = 32
)

// defaultReplayHeaders are the headers stored and replayed by default.
var defaultReplayHeaders = []string{"Content-Type", "Content-Language", "Content-Location", "Location", "ETag", "Link"}

// safeMethods pass through by default: RFC 9110 §9.2.1.
var safeMethods = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodOptions: true, http.MethodTrace: true}

// settings is a validated Config with its defaults filled in.
type settings struct {
	principal        func(*http.Request) (string, error)
	header           string
	optional         bool
	strict           bool
	maxKeyLen        int
	methods          map[string]bool // nil: all but safeMethods
	fingerprint      func(*http.Request, []byte) []byte
	maxBody          int64
	maxResponse      int
	store            func(int) bool
	replayHeaders    []string // canonical
	replayedHeader   string
	namespace        string
	problemBase      string
	onError          func(*http.Request, error)
	options          idemsql.Options
	maxEncodedResult int
}

// tokenRE is RFC 9110's token: header field names and methods.
var tokenRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

var namespaceRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: idemhttp: "+format, append([]any{idemsql.ErrInvalidOption}, args...)...)
}

func (c *Config) settings() (*settings, error) {
	s := &settings{
		principal:      c.Principal,
		header:         c.Header,
		optional:       c.Optional,
		strict:         c.StrictKeySyntax,
		maxKeyLen:      c.MaxKeyLen,
		fingerprint:    c.Fingerprint,
		maxBody:        c.MaxBodyBytes,
		maxResponse:    c.MaxResponseBytes,
		store:          c.Store,
		replayedHeader: c.ReplayedHeader,
		namespace:      c.Namespace,
		problemBase:    c.ProblemBaseURL,
		onError:        c.OnError,
		options:        c.Options,
	}
	switch {
	case c.Principal == nil && !c.Unscoped:
		return nil, invalid("Config.Principal is nil: scope keys by the authenticated principal, or set Config.Unscoped to share one key space among all clients on purpose")
	case c.Principal != nil && c.Unscoped:
		return nil, invalid("Config.Principal and Config.Unscoped are both set: pick one")
	}
	if s.header == "" {
		s.header = DefaultHeader
	}
	if !tokenRE.MatchString(s.header) {
		return nil, invalid("Config.Header %q is not a header field name", s.header)
	}
	s.header = http.CanonicalHeaderKey(s.header)
	switch {
	case s.maxKeyLen == 0:
		s.maxKeyLen = DefaultMaxKeyLen
	case s.maxKeyLen < 1 || s.maxKeyLen > maxMaxKeyLen:
		return nil, invalid("Config.MaxKeyLen %d is outside [1, %d]", s.maxKeyLen, maxMaxKeyLen)
	}
	if c.Methods != nil {
		if len(c.Methods) == 0 {
			return nil, invalid("Config.Methods is empty: nothing would be guarded")
		}
		s.methods = make(map[string]bool, len(c.Methods))
		for _, m := range c.Methods {
			if !tokenRE.MatchString(m) {
				return nil, invalid("Config.Methods: %q is not a method", m)
			}
			s.methods[m] = true
		}
	}
	if s.fingerprint == nil {
		s.fingerprint = defaultFingerprint
	}
	switch {
	case s.maxBody == 0:
		s.maxBody = DefaultMaxBodyBytes
	case s.maxBody < 0:
		return nil, invalid("Config.MaxBodyBytes %d is negative", s.maxBody)
	}
	switch {
	case s.maxResponse == 0:
		s.maxResponse = DefaultMaxResponseBytes
	case s.maxResponse < 0 || s.maxResponse > maxMaxResponseBytes:
		return nil, invalid("Config.MaxResponseBytes %d is outside [1, %d]", s.maxResponse, maxMaxResponseBytes)
	}
	// The stored body is a JSON string (escapes may take six bytes per
	// byte) or base64, plus the status and headers.
	s.maxEncodedResult = min(6*s.maxResponse+64<<10, 64<<20)
	if s.options.MaxResultSize == 0 {
		s.options.MaxResultSize = s.maxEncodedResult
	}
	if s.store == nil {
		s.store = func(status int) bool { return status < 500 && status != http.StatusTooManyRequests }
	}
	hs := c.ReplayHeaders
	if hs == nil {
		hs = defaultReplayHeaders
	}
	for _, h := range hs {
		if !tokenRE.MatchString(h) {
			return nil, invalid("Config.ReplayHeaders: %q is not a header field name", h)
		}
		s.replayHeaders = append(s.replayHeaders, http.CanonicalHeaderKey(h))
	}
	if s.replayedHeader == "" {
		s.replayedHeader = DefaultReplayedHeader
	}
	if !tokenRE.MatchString(s.replayedHeader) {
		return nil, invalid("Config.ReplayedHeader %q is not a header field name", s.replayedHeader)
	}
	s.replayedHeader = http.CanonicalHeaderKey(s.replayedHeader)
	if s.namespace == "" {
		s.namespace = DefaultNamespace
	}
	if !namespaceRE.MatchString(s.namespace) {
		return nil, invalid("Config.Namespace %q: want 1 to %d of [A-Za-z0-9_.-]", s.namespace, maxNamespaceLen)
	}
	if s.problemBase == "" {
		s.problemBase = DefaultProblemBaseURL
	}
	return s, nil
}

// guards reports whether the middleware guards requests of this method.
func (s *settings) guards(method string) bool {
	if s.methods == nil {
		return !safeMethods[method]
	}
	return s.methods[method]
}
