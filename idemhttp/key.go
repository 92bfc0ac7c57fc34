package idemhttp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/idemsql/idemsql/idemsql"
)

// Errors of a request's key, answered 400.
var (
	errNoKey        = errors.New("no key")
	errManyKeys     = errors.New("more than one key header")
	errEmptyKey     = errors.New("the key is empty")
	errKeySyntax    = errors.New("the key is not an sf-string")
	errKeyTooLong   = errors.New("the key is too long")
	errBadKeyOctets = errors.New("the key has a character outside printable ASCII (0x20 to 0x7E)")
)

// ParseKey reads an Idempotency-Key field value. The draft makes it an
// sf-string (RFC 8941 §3.3.3): printable ASCII between double quotes, with
// \" and \\ as the only escapes; a space is printable ASCII, so a quoted
// key may hold one. Unless strict, a bare key, as Stripe's clients send it,
// is accepted too: printable ASCII without spaces, double quotes,
// backslashes, commas or semicolons. Both forms give the same key.
// Parameters after the string (";a=1") are not accepted. maxLen bounds the
// key's length in bytes after unquoting.
func ParseKey(value string, strict bool, maxLen int) (string, error) {
	v := strings.Trim(value, " \t")
	if v == "" {
		return "", errEmptyKey
	}
	if v[0] != '"' {
		if strict {
			return "", fmt.Errorf("%w: it must be quoted, as in %s: \"8e03978e-40d5-43e8-bc93-6894a57f9324\"", errKeySyntax, DefaultHeader)
		}
		if len(v) > maxLen {
			return "", fmt.Errorf("%w: %d bytes, the limit is %d", errKeyTooLong, len(v), maxLen)
		}
		for i := 0; i < len(v); i++ {
			c := v[i]
			switch {
			case c == ' ':
				return "", fmt.Errorf("%w: a bare key cannot contain a space (quote the key: a quoted key may hold spaces)", errKeySyntax)
			case c < 0x20 || c > 0x7e:
				return "", errBadKeyOctets
			case c == '"' || c == '\\' || c == ',' || c == ';':
				return "", fmt.Errorf("%w: a bare key cannot contain %q", errKeySyntax, c)
			}
		}
		return v, nil
	}
	// An sf-string; most keys have no escapes and are returned as a
	// substring.
	var b []byte
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i == len(v) || (v[i] != '"' && v[i] != '\\') {
				return "", fmt.Errorf("%w: a backslash must escape \" or \\", errKeySyntax)
			}
			if b == nil {
				b = append(make([]byte, 0, len(v)), v[1:i-1]...)
			}
			b = append(b, v[i])
		case c == '"':
			if i != len(v)-1 {
				return "", fmt.Errorf("%w: text after the closing quote (parameters are not accepted)", errKeySyntax)
			}
			key := v[1:i]
			if b != nil {
				key = string(b)
			}
			switch {
			case key == "":
				return "", errEmptyKey
			case len(key) > maxLen:
				return "", fmt.Errorf("%w: %d bytes, the limit is %d", errKeyTooLong, len(key), maxLen)
			}
			return key, nil
		case c < 0x20 || c > 0x7e:
			return "", errBadKeyOctets
		default:
			if b != nil {
				b = append(b, c)
			}
		}
	}
	return "", fmt.Errorf("%w: no closing quote", errKeySyntax)
}

// requestKey returns the client's key from the request's headers, or
// errNoKey.
func (s *settings) requestKey(r *http.Request) (string, error) {
	vs := r.Header[s.header]
	switch len(vs) {
	case 0:
		return "", errNoKey
	case 1:
		return ParseKey(vs[0], s.strict, s.maxKeyLen)
	}
	return "", errManyKeys
}

// hashedPrincipalLen is the length of a principal's hash in a stored key:
// 128 bits of SHA-256, in hex.
const hashedPrincipalLen = 32

// StoredKey is the key the middleware stores for a client's key sent by a
// principal, in the namespace:
//
//	namespace ":" hex(SHA-256(principal)[:16]) ":k:" key
//
// when that fits [idemsql.MaxKeyLen] (the client's key stays readable, for
// audit), else
//
//	namespace ":" hex(SHA-256(principal)[:16]) ":h:" hex(SHA-256(key))
//
// An unscoped middleware writes "*" for the principal's hash. Neither the
// namespace nor the hash holds a ':', so keys of two principals, or a
// readable and a hashed key, never collide.
func StoredKey(namespace, principal, key string, unscoped bool) string {
	var p string
	if unscoped {
		p = "*"
	} else {
		sum := sha256.Sum256([]byte(principal))
		p = hex.EncodeToString(sum[:hashedPrincipalLen/2])
	}
	n := len(namespace) + 1 + len(p) + 3
	if n+len(key) <= idemsql.MaxKeyLen {
		return namespace + ":" + p + ":k:" + key
	}
	sum := sha256.Sum256([]byte(key))
	return namespace + ":" + p + ":h:" + hex.EncodeToString(sum[:])
}

// defaultFingerprint covers the method, the request URI (path and query)
// and the body, each length-prefixed so that no two requests share the
// input.
func defaultFingerprint(r *http.Request, body []byte) []byte {
	h := sha256.New()
	uri := r.URL.RequestURI()
	fmt.Fprintf(h, "%d:%s%d:%s%d:", len(r.Method), r.Method, len(uri), uri, len(body))
	h.Write(body)
	return h.Sum(nil)
}
