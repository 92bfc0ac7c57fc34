package idemsql

import (
	"errors"
	"fmt"
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

// FailureError is a permanent failure recorded for a key: returned by the
// call that recorded it (Replayed false; commit the transaction to keep the
// record) and by every duplicate (Replayed true). errors.Is(err,
// ErrFailureRecorded) holds for both. Like [Error]'s, its message never
// names the key.
type FailureError struct {
	Key      string
	Class    string
	Message  string
	Replayed bool
	// Err is fn's original error, on the call that recorded it; nil on a
	// replay.
	Err error
}

func (e *FailureError) Error() string {
	verb := "failed"
	if e.Replayed {
		verb = "failed earlier"
	}
	return fmt.Sprintf("idemsql: %s (%s): %s", verb, e.Class, e.Message)
}

func (e *FailureError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrFailureRecorded, e.Err}
	}
	return []error{ErrFailureRecorded}
}

// DuplicateError is returned under the [Options.ErrorOnDuplicate] policy when the key
// already completed. Result holds the stored result, also decoded into
// Result.Value by the call. Like [Error]'s, its message never names the
// key.
type DuplicateError struct {
	Key    string
	Result []byte
}

func (e *DuplicateError) Error() string { return ErrDuplicate.Error() }

func (e *DuplicateError) Unwrap() error { return ErrDuplicate }

// PanicClass is the error_class recorded when fn panicked in [Do] or [Run]:
// the claim is marked failed before the panic goes on. A caller that rolls
// back (as [Run] does) leaves nothing behind; one that recovers the panic
// and commits keeps fn's partial writes, and every later call with the key
// gets this failure back as a [*FailureError] until its retention runs out,
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
