package idemsql

import (
	"fmt"
	"regexp"
	"time"
)

// DefaultTable is the table the shipped migrations create.
const DefaultTable = "idempotency_keys"

// DefaultTTL is how long a key is remembered when no TTL is given.
const DefaultTTL = 24 * time.Hour

// MaxTTL bounds a TTL so that "now + TTL" stays representable on every
// database (MySQL DATETIME ends in year 9999).
const MaxTTL = 100 * 365 * 24 * time.Hour

// Option configures a [Store] (given to the dialect's constructor) or one
// call (given to [Do]). Options are values made by the With* functions; a
// zero Option, or a store-only option given to a call, is rejected with
// [ErrInvalidOption].
type Option struct {
	name      string
	storeOnly bool
	callOnly  bool
	apply     func(*settings) error
}

type settings struct {
	table          string
	ttl            time.Duration
	fingerprint    []byte
	hasFingerprint bool
}

// WithTable names the idempotency table (default [DefaultTable]). The name
// must be a plain SQL identifier: a letter or underscore, then letters,
// digits or underscores, at most 48 bytes, so that index names derived from it fit every database. It is quoted in every statement.
// Store only.
func WithTable(name string) Option {
	return Option{name: "WithTable", storeOnly: true, apply: func(s *settings) error {
		if !identifierRE.MatchString(name) {
			return fmt.Errorf("%w: table name %q is not an identifier ([A-Za-z_][A-Za-z0-9_]{0,47})", ErrInvalidOption, name)
		}
		s.table = name
		return nil
	}}
}

var identifierRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}$`)

// WithTTL sets how long a key is remembered after its claim: until then every
// duplicate replays; after it the key runs again. On a store it is the
// default for every call; on a call it overrides the store's. Between 1ms
// and [MaxTTL].
func WithTTL(ttl time.Duration) Option {
	return Option{name: "WithTTL", apply: func(s *settings) error {
		if ttl < time.Millisecond || ttl > MaxTTL {
			return fmt.Errorf("%w: TTL %v is outside [1ms, %v]", ErrInvalidOption, ttl, MaxTTL)
		}
		s.ttl = ttl
		return nil
	}}
}

// WithFingerprint stores a hash of the request with the claim. A later call
// with the same key and a different request fails with
// [ErrFingerprintMismatch] and runs nothing, instead of silently replaying
// another request's outcome. A []byte or string is hashed as given (an HTTP
// body, say); any other value is hashed in the canonical form [DeriveKey]
// uses, so map order and struct layout do not matter. A call without
// WithFingerprint has the empty fingerprint. Call only.
func WithFingerprint(request any) Option {
	return Option{name: "WithFingerprint", callOnly: true, apply: func(s *settings) error {
		fp, err := Fingerprint(request)
		if err != nil {
			return err
		}
		s.fingerprint, s.hasFingerprint = fp, true
		return nil
	}}
}

func applyOptions(s *settings, opts []Option, forCall bool) error {
	for i, o := range opts {
		if o.apply == nil {
			return fmt.Errorf("%w: option %d is the zero Option; use the With* functions", ErrInvalidOption, i)
		}
		if forCall && o.storeOnly {
			return fmt.Errorf("%w: %s configures a store and cannot be given to a call", ErrInvalidOption, o.name)
		}
		if !forCall && o.callOnly {
			return fmt.Errorf("%w: %s describes one call and cannot be given to a store", ErrInvalidOption, o.name)
		}
		if err := o.apply(s); err != nil {
			return err
		}
	}
	return nil
}
