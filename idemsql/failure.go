package idemsql

import (
	"errors"
	"unicode/utf8"
)

// Permanent marks fn's error as a final answer for the key: a declined
// card, a request that fails validation. With [Options.RecordFailures] the
// failure is stored and every duplicate gets it back instead of running fn
// again; without it, Permanent changes nothing. class names the failure for
// machines ("card_declined"); err's message is stored for people. The
// classes [AbandonedClass], [ReleasedClass], [PanicClass] and
// [UnencodableClass] are the library's own, with meanings of their own
// (Purge keeps abandoned rows, for one): use other names.
func Permanent(class string, err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{class: class, err: err}
}

type permanentError struct {
	class string
	err   error
}

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err was made with [Permanent], and its class.
func IsPermanent(err error) (class string, ok bool) {
	var p *permanentError
	if errors.As(err, &p) {
		return p.class, true
	}
	return "", false
}

// PanicClass is the error_class recorded when fn panicked in [Do] or [Run]:
// the claim is marked failed before the panic goes on. A caller that rolls
// back (as [Run] does) leaves nothing behind; one that recovers the panic
// and commits keeps fn's partial writes, and every later call with the key
// gets this failure back ([ErrFailureRecorded]) until its retention runs out,
// instead of running fn again.
const PanicClass = "panicked"

// Column limits for recorded failures, shared by every dialect.
const (
	maxErrorClass   = 255
	maxErrorMessage = 16 << 10
)

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
