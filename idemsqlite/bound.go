package idemsqlite

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	driver "modernc.org/sqlite"
)

var _ idemdriver.ClaimBounder = dialect{}

// BoundClaim sets the connection's busy_timeout for the claim and puts the
// old value back, even if ctx ended. SQLite has one writer: a busy database
// means another transaction is writing, which may or may not hold this
// key. Under a DSN with _txlock=immediate the transaction already holds the
// write lock, so the claim never waits and the bound never fires.
//
// busy_timeout belongs to the connection: if the transaction ended under
// the claim (database/sql rolls it back when the context it began with
// ends, and returns the connection to the pool), the value stays on the
// connection. Run then drops the connection; Do in a transaction of the
// caller's cannot reach it.
func (dialect) BoundClaim(ctx context.Context, ex idemdriver.Executor, timeout time.Duration, failFast bool, claim func(idemdriver.Executor) error) (bool, error) {
	var old int64
	if err := ex.QueryRow(ctx, "PRAGMA busy_timeout").Scan(&old); err != nil {
		return false, err
	}
	ms := timeout.Milliseconds()
	if failFast {
		ms = 0
	}
	if _, err := ex.Exec(ctx, "PRAGMA busy_timeout = "+strconv.FormatInt(max(ms, 0), 10)); err != nil {
		return false, err
	}
	err := claim(ex)
	if _, rerr := ex.Exec(context.WithoutCancel(ctx), "PRAGMA busy_timeout = "+strconv.FormatInt(max(old, 0), 10)); rerr != nil && err == nil {
		return false, rerr
	}
	return err != nil && waitedForWriter(err), err
}

// waitedForWriter reports a plain SQLITE_BUSY: another connection holds the
// write lock. SQLITE_BUSY_SNAPSHOT (517) is not one: that transaction read
// an older snapshot and can never write, whoever holds the lock.
func waitedForWriter(err error) bool {
	var e *driver.Error
	return errors.As(err, &e) && e.Code() == sqliteBusy
}
