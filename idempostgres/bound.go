package idempostgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
)

var _ idemdriver.ClaimBounder = dialect{}

// BoundClaim sets lock_timeout for the claim, for the transaction only
// (set_config's is_local), and puts the old value back; a transaction that
// ends under the claim takes the setting with it. A lock time-out aborts a
// PostgreSQL transaction: the error says so.
//
// Fail-fast does not come here: it takes the key's advisory lock with the
// TryLock statement, which neither waits nor fails, so that it needs no
// savepoint, hence no subtransaction. Asked anyway, BoundClaim bounds the
// wait to 1ms, and the transaction is lost on a time-out.
func (dialect) BoundClaim(ctx context.Context, ex idemdriver.Executor, timeout time.Duration, failFast bool, claim func(idemdriver.Executor) error) (bool, error) {
	if failFast {
		timeout = time.Millisecond
	}
	var old string
	if err := ex.QueryRow(ctx, "SELECT current_setting('lock_timeout'), set_config('lock_timeout', $1, true)",
		fmt.Sprintf("%dms", max(timeout.Milliseconds(), 1))).Scan(&old, new(string)); err != nil {
		return false, err
	}
	err := claim(ex)
	if err != nil && Dialect.Classify(err) == idemdriver.KindLockTimeout {
		return true, fmt.Errorf("%w (PostgreSQL aborted the transaction: roll it back)", err)
	}
	if _, rerr := ex.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", old); rerr != nil && err == nil {
		return false, rerr
	}
	return false, err
}

// keyLock is the advisory lock of the key in placeholder p: a 64-bit hash
// of the key, seeded with the table's name so that one key in two tables
// takes two locks. Every statement that claims a key takes it in shared
// mode first (pg_advisory_xact_lock_shared), until its transaction ends;
// a fail-fast claim takes it in exclusive mode without waiting (TryLock),
// and so learns that another transaction holds the key, or is claiming
// it, without waiting for it. It is a lock only: the key's row decides.
// Two keys whose hashes agree (one chance in 2^64) make each other's
// callers wait, or answer ErrInProgress, and nothing more. Each claimed key
// takes one entry of the server's lock table until its transaction ends
// (max_locks_per_transaction).
func keyLock(table idemdriver.Table, p string) string {
	h := fnv.New64a()
	h.Write([]byte(table.String()))
	return "hashtextextended(" + p + ", " + strconv.FormatInt(int64(h.Sum64()), 10) + ")"
}

// sharedKeyLock is a one-row FROM item that takes the key's lock in shared
// mode: a statement that writes the key's row reads it before it writes.
func sharedKeyLock(table idemdriver.Table, p string) string {
	return "(SELECT pg_advisory_xact_lock_shared(" + keyLock(table, p) + ")) AS key_lock"
}
