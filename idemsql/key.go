package idemsql

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxKeyLen is the longest key, in bytes, that every dialect stores exactly
// (MySQL's key column is VARBINARY(255)).
const MaxKeyLen = 255

// ValidateKey reports whether key can be stored and compared exactly on every
// database: 1 to [MaxKeyLen] bytes of valid UTF-8 without NUL (PostgreSQL
// text can hold neither invalid UTF-8 nor NUL). The error wraps
// [ErrInvalidKey]. [Do] calls it before any SQL runs.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrInvalidKey, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key is not valid UTF-8", ErrInvalidKey)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w: key contains a NUL byte", ErrInvalidKey)
	}
	return nil
}

// DeriveKey builds a key from a namespace (say, the guarded function's name)
// and the arguments that identify one logical operation:
//
//	namespace + ":" + hex(SHA-256(canonical JSON of args))
//
// The canonical form is stable across runs, platforms and Go versions: args
// are encoded as a JSON array with encoding/json, then every object's keys
// are sorted, numbers keep their exact text and no insignificant whitespace
// is written. A struct and a map with the same fields give the same key.
// A string or []byte argument is encoded like any other.
//
// Arguments whose encoding would lose information are refused, since two
// values with one encoding would share a key (or a fingerprint: see
// [Fingerprint]). The error names the place (args[0].Customer.id) and the
// Go type. Refused: what encoding/json refuses (functions, channels, NaN
// and infinities, cycles); a string or map key that is not valid UTF-8,
// which encoding/json writes with U+FFFD in place of the invalid bytes; a
// struct with an unexported field, including one whose fields are all
// unexported (it encodes as {}), unless the field holds nothing (blank, or
// of zero size); two fields that encode under one JSON name, of which
// encoding/json writes at most one. A field tagged json:"-" is the
// caller's choice to leave it out, exported or not, and is not refused. A
// value of a type that implements [json.Marshaler] or
// [encoding.TextMarshaler] is taken as that method encodes it, unchecked;
// note that a struct that embeds such a type can get the method by
// promotion, and then encodes as the embedded value alone.
//
// Prefer an explicit key that the client sends (an Idempotency-Key header, a
// payment intent ID): a derived key makes two genuinely separate requests
// with equal arguments look like one.
func DeriveKey(namespace string, args ...any) (string, error) {
	if err := ValidateKey(namespace); err != nil {
		return "", fmt.Errorf("namespace: %w", err)
	}
	if len(namespace)+1+sha256.Size*2 > MaxKeyLen {
		return "", fmt.Errorf("%w: namespace is %d bytes, the limit for a derived key is %d",
			ErrInvalidKey, len(namespace), MaxKeyLen-1-sha256.Size*2)
	}
	if args == nil {
		args = []any{}
	}
	canon, err := canonical(args, "args")
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	sum := sha256.Sum256(canon)
	return namespace + ":" + hex.EncodeToString(sum[:]), nil
}

// Fingerprint returns the SHA-256 of a request as [Options.Fingerprint]
// stores it: a []byte or string is hashed as given, any other value in the
// canonical form [DeriveKey] uses. A value that DeriveKey would refuse is an
// error wrapping [ErrInvalidOption]: a changed request must not pass for the
// same one.
func Fingerprint(request any) ([]byte, error) {
	var sum [sha256.Size]byte
	switch r := request.(type) {
	case []byte:
		sum = sha256.Sum256(r)
	case string:
		sum = sha256.Sum256([]byte(r))
	default:
		canon, err := canonical(request, "request")
		if err != nil {
			return nil, fmt.Errorf("%w: fingerprint: %v", ErrInvalidOption, err)
		}
		sum = sha256.Sum256(canon)
	}
	return sum[:], nil
}

// canonical encodes v as canonical JSON, naming v root in errors: what
// encoding/json writes, with object keys sorted at every depth, numbers
// exactly as encoding/json wrote them, no HTML escaping and no
// insignificant whitespace. It refuses what [DeriveKey] says.
func canonical(v any, root string) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if err := checkJSONLoss(v, raw, root, false); err != nil {
		return nil, err
	}
	// Decoding into interface values turns every object into a map, which
	// encoding/json writes with sorted keys; UseNumber keeps integers beyond
	// 2^53 exact.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(generic); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
