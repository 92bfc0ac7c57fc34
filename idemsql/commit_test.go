package idemsql_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// Errors a driver might return from COMMIT, with the meaning commitDialect
// gives them.
var (
	errRefused  = errors.New("deadlock found at COMMIT")   // KindTxEnded
	errConnLost = errors.New("connection lost at COMMIT")  // KindConnLost
	errOdd      = errors.New("deferred constraint failed") // KindOther
)

// safeToRetry is an error whose SafeToRetry says that nothing was sent, as
// pgconn's errors do.
type safeToRetry struct{ err error }

func (e safeToRetry) Error() string     { return e.err.Error() }
func (e safeToRetry) Unwrap() error     { return e.err }
func (e safeToRetry) SafeToRetry() bool { return true }

type commitDialect struct{ nopDialect }

func (commitDialect) Classify(err error) idemdriver.ErrorKind {
	switch {
	case errors.Is(err, errRefused):
		return idemdriver.KindTxEnded
	case errors.Is(err, errConnLost):
		return idemdriver.KindConnLost
	}
	return idemdriver.KindOther
}

// What a Do caller's own COMMIT error means. A COMMIT is unknown only when
// it may have committed: never when the driver says it was not sent or
// the database refused it; a context that ended is the class of a COMMIT
// it certainly stopped.
func TestCommitError(t *testing.T) {
	store, err := idemsql.New(execDriver{commitDialect{}})
	if err != nil {
		t.Fatal(err)
	}
	live := context.Background()
	ended, cancel := context.WithCancel(live)
	cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
		err  error
		want error // the one class; nil: none
	}{
		{"refused", live, errRefused, idemsql.ErrRetryable},
		{"refused, ctx ended", ended, errRefused, context.Canceled},
		{"connection lost", live, errConnLost, idemsql.ErrCommitUnknown},
		{"connection lost, ctx ended", ended, errConnLost, idemsql.ErrCommitUnknown},
		// pgx's "conn closed": SafeToRetry, although sent.
		{"connection lost, SafeToRetry", live, safeToRetry{errConnLost}, idemsql.ErrCommitUnknown},
		{"driver.ErrBadConn", live, driver.ErrBadConn, idemsql.ErrRetryable},
		{"driver.ErrBadConn, ctx ended", ended, fmt.Errorf("begin: %w", driver.ErrBadConn), context.Canceled},
		// pgx's error for a context that ended before COMMIT.
		{"not sent, ctx ended", ended, safeToRetry{context.Canceled}, context.Canceled},
		{"not sent", live, safeToRetry{errors.New("conn busy")}, idemsql.ErrRetryable},
		{"sql.ErrTxDone, ctx ended", ended, sql.ErrTxDone, context.Canceled},
		// database/sql's error when ctx ended before Commit, which a driver
		// also returns for a COMMIT the context interrupted.
		{"bare context error", ended, context.Canceled, idemsql.ErrCommitUnknown},
		{"unexplained", live, errOdd, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := store.CommitError(c.ctx, c.err)
			var e *idemsql.Error
			if !errors.As(got, &e) || e.Op != "commit" {
				t.Fatalf("%v: not an *idemsql.Error of op commit", got)
			}
			if !errors.Is(got, c.err) {
				t.Fatalf("%v: the driver's error is not inside", got)
			}
			// An unknown COMMIT keeps the context's error inside, when
			// it ended: ErrCommitUnknown is tested first.
			var classes []error
			for _, s := range []error{idemsql.ErrRetryable, idemsql.ErrCommitUnknown, context.Canceled} {
				if errors.Is(got, s) && !(s == context.Canceled && errors.Is(got, idemsql.ErrCommitUnknown)) {
					classes = append(classes, s)
				}
			}
			switch {
			case c.want == nil && len(classes) > 0:
				t.Fatalf("%v: classes %v, want none", got, classes)
			case c.want != nil && (len(classes) != 1 || classes[0] != c.want):
				t.Fatalf("%v: classes %v, want %v alone", got, classes, c.want)
			}
		})
	}
	if err := store.CommitError(live, nil); err != nil {
		t.Fatalf("nil: %v", err)
	}
}
