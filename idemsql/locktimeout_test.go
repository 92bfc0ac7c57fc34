package idemsql_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

var errLockWait = errors.New("lock wait timeout exceeded")

// lockTimeoutDialect classifies errLockWait as a lock time-out and says,
// as MySQL's innodb_rollback_on_timeout does, whether that ended the
// transaction.
type lockTimeoutDialect struct {
	nopDialect
	ends bool
}

func (d lockTimeoutDialect) Classify(err error) idemdriver.ErrorKind {
	if errors.Is(err, errLockWait) {
		return idemdriver.KindLockTimeout
	}
	return idemdriver.KindOther
}

func (d lockTimeoutDialect) LockTimeoutEndsTx(context.Context, idemdriver.Executor) (bool, error) {
	return d.ends, nil
}

// recordingExec is nopExec that remembers the statements sent.
type recordingExec struct {
	nopExec
	mu   sync.Mutex
	sent []string
}

func (e *recordingExec) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	e.mu.Lock()
	e.sent = append(e.sent, query)
	e.mu.Unlock()
	return e.nopExec.Exec(ctx, query, args...)
}

// fn fails with a lock time-out. Where the server rolled the transaction
// back with it, the claim is gone and a statement sent now would run in
// autocommit: Do sends none and says retry. Where only the statement was
// rolled back, the claim is removed and fn's error comes back as it is.
func TestLockTimeoutInFnThatEndsTheTransaction(t *testing.T) {
	for _, ends := range []bool{true, false} {
		store, err := idemsql.New(execDriver{lockTimeoutDialect{ends: ends}})
		if err != nil {
			t.Fatal(err)
		}
		ex := &recordingExec{nopExec: nopExec{claimed: true}}
		_, err = idemsql.Do(context.Background(), store, idemdriver.Executor(ex), "k", func(context.Context) (int, error) {
			return 0, errLockWait
		})
		released := len(ex.sent) > 0 && ex.sent[len(ex.sent)-1] == "release"
		if ends {
			if !errors.Is(err, idemsql.ErrRetryable) || !errors.Is(err, errLockWait) || released {
				t.Errorf("transaction ended: err = %v, statements %v; want ErrRetryable wrapping fn's error, no release", err, ex.sent)
			}
			continue
		}
		if !errors.Is(err, errLockWait) || errors.Is(err, idemsql.ErrRetryable) || !released {
			t.Errorf("transaction alive: err = %v, statements %v; want fn's error after the release", err, ex.sent)
		}
	}
}

// txCheckDialect answers InTransaction as told.
type txCheckDialect struct {
	nopDialect
	in, known bool
}

func (d txCheckDialect) InTransaction(context.Context, idemdriver.Executor) (bool, bool) {
	return d.in, d.known
}

var errOwn = errors.New("validation failed")

// fn fails for a reason of its own. If the dialect can tell that the
// session already left the transaction (fn swallowed an error that ended
// it), the claim went with it: nothing more is sent, and the call is
// retryable. If it is still in it, or the dialect cannot tell, the claim is
// removed and fn's error comes back.
func TestFnErrorAfterTheTransactionEnded(t *testing.T) {
	for _, c := range []struct {
		in, known, retry bool
	}{{false, true, true}, {true, true, false}, {false, false, false}} {
		store, err := idemsql.New(execDriver{txCheckDialect{in: c.in, known: c.known}})
		if err != nil {
			t.Fatal(err)
		}
		ex := &recordingExec{nopExec: nopExec{claimed: true}}
		_, err = idemsql.Do(context.Background(), store, idemdriver.Executor(ex), "k", func(context.Context) (int, error) { return 0, errOwn })
		released := len(ex.sent) > 0 && ex.sent[len(ex.sent)-1] == "release"
		if !errors.Is(err, errOwn) || errors.Is(err, idemsql.ErrRetryable) != c.retry || released == c.retry {
			t.Errorf("%+v: err = %v, statements %v", c, err, ex.sent)
		}
	}
}

// A lock time-out that fn wraps in Permanent is not recorded as the key's
// answer: the claim is removed and the next call runs again.
func TestPermanentTimeoutIsNotRecorded(t *testing.T) {
	store, err := idemsql.New(execDriver{lockTimeoutDialect{ends: false}})
	if err != nil {
		t.Fatal(err)
	}
	ex := &recordingExec{nopExec: nopExec{claimed: true}}
	_, err = idemsql.Do(context.Background(), store, idemdriver.Executor(ex), "k", func(context.Context) (int, error) {
		return 0, idemsql.Permanent("busy", errLockWait)
	}, idemsql.Options{RecordFailures: true})
	var fe *idemsql.Error
	if errors.As(err, &fe) || !errors.Is(err, errLockWait) || ex.sent[len(ex.sent)-1] != "release" {
		t.Fatalf("err = %v, statements %v; want fn's error, the claim released, nothing recorded", err, ex.sent)
	}
}

// fn returns a nested call's error, which has a class of its own, after
// swallowing an error that ended the transaction: the call's error is
// ErrRetryable alone, the nested error's text kept.
func TestNestedClassUnderRetryableIsText(t *testing.T) {
	store, err := idemsql.New(execDriver{txCheckDialect{in: false, known: true}})
	if err != nil {
		t.Fatal(err)
	}
	nested := &idemsql.Error{Op: "claim", Key: "inner", Kind: idemsql.ErrLockTimeout}
	_, err = idemsql.Do(context.Background(), store, idemdriver.Executor(&nopExec{claimed: true}), "k", func(context.Context) (int, error) { return 0, nested })
	if !errors.Is(err, idemsql.ErrRetryable) || errors.Is(err, idemsql.ErrLockTimeout) || !strings.Contains(err.Error(), nested.Error()) {
		t.Fatalf("err = %v; want ErrRetryable alone, saying what fn returned", err)
	}
}
