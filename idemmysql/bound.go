package idemmysql

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.ClaimBounder = dialect{}

// BoundClaim bounds the claim's lock waits with innodb_lock_wait_timeout. A
// lock wait time-out (1205) rolls back only the statement, so the
// transaction stays usable, unless the server runs with
// innodb_rollback_on_timeout=ON; then the error says so. The variable
// counts whole seconds: a timeout is rounded up. Fail-fast uses 0, which
// MariaDB takes as "do not wait"; MySQL 8's minimum is 1, so there
// fail-fast waits up to one second.
//
// MariaDB sets it for each statement of the claim (SET STATEMENT ... FOR),
// so that nothing is left to put back, whatever happens to the transaction.
// MySQL 8 has no such statement: there the session's value is set for the
// claim and put back after it, even if ctx ended; if the transaction ended
// under the claim (database/sql rolls it back when the context it began
// with ends), the value stays on the connection, which Run then drops.
func (dialect) BoundClaim(ctx context.Context, ex idemdriver.Executor, timeout time.Duration, failFast bool, claim func(idemdriver.Executor) error) (bool, error) {
	var old int64
	var rollbackOnTimeout, mariaDB bool
	if err := ex.QueryRow(ctx, "SELECT @@SESSION.innodb_lock_wait_timeout, @@GLOBAL.innodb_rollback_on_timeout, VERSION() LIKE '%MariaDB%'").Scan(
		&old, &rollbackOnTimeout, &mariaDB); err != nil {
		return false, err
	}
	secs := int64((timeout + time.Second - 1) / time.Second)
	if failFast {
		secs = 0
	}
	var err error
	if mariaDB {
		err = claim(perStatement{ex: ex, prefix: "SET STATEMENT innodb_lock_wait_timeout = " + strconv.FormatInt(secs, 10) + " FOR "})
	} else {
		// The values go in the text: a statement with arguments would need
		// a prepared statement of the server's, without interpolateParams.
		if _, err := ex.Exec(ctx, "SET SESSION innodb_lock_wait_timeout = "+strconv.FormatInt(secs, 10)); err != nil {
			return false, err
		}
		err = claim(ex)
		if _, rerr := ex.Exec(context.WithoutCancel(ctx), "SET SESSION innodb_lock_wait_timeout = "+strconv.FormatInt(old, 10)); rerr != nil && err == nil {
			return false, rerr
		}
	}
	timedOut := err != nil && Dialect.Classify(err) == idemdriver.KindLockTimeout
	if timedOut && rollbackOnTimeout {
		err = fmt.Errorf("%w (the server runs with innodb_rollback_on_timeout=ON and rolled the whole transaction back: roll it back)", err)
	}
	return timedOut, err
}

// perStatement runs each statement with a prefix: MariaDB's SET STATEMENT.
type perStatement struct {
	ex     idemdriver.Executor
	prefix string
}

func (p perStatement) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	return p.ex.Exec(ctx, p.prefix+query, args...)
}

func (p perStatement) QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row {
	return p.ex.QueryRow(ctx, p.prefix+query, args...)
}

var _ idemdriver.LockTimeoutEnder = dialect{}

// LockTimeoutEndsTx reads innodb_rollback_on_timeout, a start-up setting:
// ON makes a lock wait time-out (1205) roll the whole transaction back, and
// the session goes on in autocommit.
func (dialect) LockTimeoutEndsTx(ctx context.Context, ex idemdriver.Executor) (bool, error) {
	var on bool
	err := ex.QueryRow(ctx, "SELECT @@GLOBAL.innodb_rollback_on_timeout").Scan(&on)
	return on, err
}

var _ idemdriver.TxChecker = dialect{}

// InTransaction reads MariaDB's @@in_transaction. MySQL 8 has no such
// variable: the error makes the answer unknown.
func (dialect) InTransaction(ctx context.Context, ex idemdriver.Executor) (in, known bool) {
	if err := ex.QueryRow(ctx, "SELECT @@in_transaction").Scan(&in); err != nil {
		return false, false
	}
	return in, true
}

var _ idemdriver.EarlyVisibility = dialect{}

// VisibleBeforeDurable: InnoDB makes a commit visible, and releases its
// locks, before the redo log write and flush that its COMMIT waits for
// (innodb_flush_log_at_trx_commit 1, or 2: the write only). Two servers
// order it the other way round: with the binary log on, a transaction
// commits in two phases and becomes visible only once the binary log holds
// it, from which recovery commits it; a Galera node shows a commit only
// once the cluster has certified it, and the other nodes hold it. With
// innodb_flush_log_at_trx_commit 0 no COMMIT waits for the log: a replay is
// then no weaker than a first call. A writer whose session turned
// sql_log_bin off commits without the binary log, which no other session
// can see.
func (dialect) VisibleBeforeDurable(ctx context.Context, ex idemdriver.Executor) (bool, error) {
	var logBin bool
	var flush int
	if err := ex.QueryRow(ctx, "SELECT @@GLOBAL.log_bin, @@GLOBAL.innodb_flush_log_at_trx_commit").Scan(&logBin, &flush); err != nil {
		return true, err
	}
	var galera bool
	err := ex.QueryRow(ctx, "SELECT @@GLOBAL.wsrep_on").Scan(&galera)
	var myErr *driver.MySQLError
	if err != nil && !(errors.As(err, &myErr) && myErr.Number == 1193) { // ER_UNKNOWN_SYSTEM_VARIABLE: MySQL without Galera
		return true, err
	}
	return !logBin && !galera && flush != 0, nil
}
