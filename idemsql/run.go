package idemsql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
)

// Pool is a database handle that begins transactions of type X: *sql.DB
// through [Store.DB], a pgx pool or connection through the postgres
// dialect. Implement it to run [Run] on another driver.
type Pool[X any] interface {
	Begin(ctx context.Context) (PoolTx[X], error)
}

// IsolationPool is a [Pool] that can also begin a transaction at an
// isolation level the library chooses. Lease mode's housekeeping ([Sweep],
// [Purge]) begins its short transactions through it at the level its
// dialect asks for ([LeaseStatements].Isolation: READ COMMITTED on
// MySQL/MariaDB, whose locking scans take gap locks under REPEATABLE READ),
// whatever level the pool was bound with. A Pool without it begins them
// with its own options. The pools of [Store.DB] and of the postgres
// dialect have it.
type IsolationPool[X any] interface {
	Pool[X]
	BeginIsolation(ctx context.Context, level sql.IsolationLevel) (PoolTx[X], error)
}

// PoolTx is one transaction begun by a [Pool].
type PoolTx[X any] interface {
	idemdriver.Executor
	// Tx is the transaction handed to fn: a *sql.Tx, a pgx.Tx.
	Tx() X
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

// DB is a store bound to a pool: the first argument of [Run],
// [RunExternal], [ClaimLease], [Sweep], [Purge] and [WrapRun], which begin
// their own transactions.
type DB[X any] struct {
	store *Store
	pool  Pool[X]
}

// BindPool binds the store to any [Pool].
func BindPool[X any](s *Store, p Pool[X]) DB[X] { return DB[X]{store: s, pool: p} }

// DB binds the store to a database/sql pool, for [Run]. opts, if not nil,
// are used for every transaction (an isolation level, say). On dialects
// that prepare statements (SQLite, MySQL) the store keeps its statements
// prepared on db for as long as the store lives: bind a store to the pools
// an application keeps, not to short-lived ones. On MySQL it also asks the
// server, once, whether a replay must write to be durable
// ([EarlyVisibility]).
func (s *Store) DB(db *sql.DB, opts *sql.TxOptions) DB[*sql.Tx] {
	if db == nil {
		return DB[*sql.Tx]{store: s}
	}
	return DB[*sql.Tx]{store: s, pool: sqlPool{store: s, db: db, opts: opts}}
}

type sqlPool struct {
	store *Store
	db    *sql.DB
	opts  *sql.TxOptions
}

// Begin begins the transaction on a connection of its own (a *sql.Conn),
// which it closes when the transaction ends, so that it can drop the
// connection instead of returning it to the pool (see sqlPoolTx).
func (p sqlPool) Begin(ctx context.Context) (PoolTx[*sql.Tx], error) {
	var ps *preparedSet
	sp := preparer(p.store.dialect)
	if sp != nil && sp.PrepareStatements() {
		ps = p.store.preparedSoon(p.db)
	}
	conn, err := p.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := conn.BeginTx(ctx, p.opts)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if ps != nil {
		return &sqlPoolTx{Executor: preparedExecutor{tx: tx, ps: ps, dia: sp}, tx: tx, conn: conn}, nil
	}
	return &sqlPoolTx{Executor: sqlExecutor{tx: tx, dia: sp}, tx: tx, conn: conn}, nil
}

var _ IsolationPool[*sql.Tx] = sqlPool{}

// BeginIsolation is Begin at the given isolation level, read-write.
func (p sqlPool) BeginIsolation(ctx context.Context, level sql.IsolationLevel) (PoolTx[*sql.Tx], error) {
	p.opts = &sql.TxOptions{Isolation: level}
	return p.Begin(ctx)
}

// sqlPoolTx is a database/sql transaction begun by Run.
type sqlPoolTx struct {
	idemdriver.Executor
	tx   *sql.Tx
	conn *sql.Conn // nil once released
	// drop: a setting that a statement changed for the session may still
	// be on the connection, so it must not serve another transaction.
	drop bool
}

var _ PoolTx[*sql.Tx] = (*sqlPoolTx)(nil)

// sessionDropper is a transaction that can drop its connection when it
// ends, instead of returning it to the pool.
type sessionDropper interface{ dropSession() }

func (t *sqlPoolTx) dropSession() { t.drop = true }

func (t *sqlPoolTx) visibleBeforeDurable() bool { return visibleBeforeDurable(t.Executor) }

func (t *sqlPoolTx) Tx() *sql.Tx { return t.tx }

func (t *sqlPoolTx) Commit(context.Context) error {
	err := t.tx.Commit()
	t.release()
	return err
}

func (t *sqlPoolTx) Rollback(context.Context) error {
	err := t.tx.Rollback()
	t.release()
	return err
}

// release returns the connection to the pool, or drops it: database/sql
// closes a connection for which a call reports driver.ErrBadConn.
func (t *sqlPoolTx) release() {
	if t.conn == nil {
		return
	}
	if t.drop {
		_ = t.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = t.conn.Close()
	t.conn = nil
}

// Run is [Do] for callers without a transaction of their own: it begins a
// transaction on db, calls Do with fn, and commits. fn receives the
// transaction for its business writes.
//
// When the transaction is lost — the database refused it (a serialization
// failure, a deadlock, a snapshot conflict, a Galera certification
// failure, a busy SQLite database), ended it under fn, or the connection
// broke before COMMIT, BEGIN included — Run rolls back and runs the whole
// transaction again, after a random, growing, capped wait ([WithBackoff]),
// at most [WithMaxAttempts] times ([DefaultMaxAttempts]: enough to ride
// out a database server's restart), and never past ctx. A retried
// transaction replays if another one won the key meanwhile, so fn's
// committed effects never happen twice. When the attempts run out, the
// last error is returned, matching [ErrRetryable]; when ctx ends between
// attempts, the error matches ctx's error alone. A transaction that
// PostgreSQL reports aborted only after fn returned (fn went on past a
// failed statement) is run again once: a second time, the error has no
// class, since another try would meet fn's own failure again. A connection
// lost during the COMMIT of a transaction that ran fn leaves the outcome
// unknown: Run returns [ErrCommitUnknown] rather than guess; calling again
// with the same key replays or runs. After a replay, which wrote nothing,
// and after a COMMIT the driver says it never sent, nothing is unknown:
// Run runs the transaction again. A ctx that ended before COMMIT sends
// none: the error is ctx's alone.
//
// Run commits after fn ran and after a replay, and after a [Permanent]
// failure was recorded ([WithRecordedFailures]): the record is the point.
// Everything else is rolled back, whatever fn's error wraps. If fn panics,
// the transaction is rolled back and the panic goes on. Other errors are
// returned as they came, with the driver's error reachable by [errors.As].
//
// On SQLite the claim is the transaction's first statement, so the
// transaction takes the write lock at once (waiting on busy_timeout) and
// never meets SQLITE_BUSY_SNAPSHOT, whatever the DSN's _txlock.
func Run[X, T any](ctx context.Context, db DB[X], key string, fn func(ctx context.Context, tx X) (T, error), opts ...Option) (Result[T], error) {
	if db.store == nil || db.pool == nil {
		return Result[T]{}, errUnboundDB
	}
	s := db.store
	cfg, err := s.callSettings(key, opts)
	if err != nil {
		return Result[T]{}, err
	}
	if fn == nil {
		return Result[T]{}, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	start := time.Now()
	ctx, call := s.startCall(ctx, "Run", key, start)
	defer call.unwinding()
	res, err := runRetrying(ctx, db, key, fn, &cfg, start)
	call.finish(res.Replayed, err)
	return res, err
}

func runRetrying[X, T any](ctx context.Context, db DB[X], key string, fn func(context.Context, X) (T, error), cfg *settings, start time.Time) (Result[T], error) {
	swallowedBefore := false
	for attempt := 1; ; attempt++ {
		res, o, err := runOnce(ctx, db, key, fn, cfg, start)
		if o == outcomeRetry && isSwallowed(err) {
			if swallowedBefore {
				return res, swallowedTwice(err)
			}
			swallowedBefore = true
		}
		if o != outcomeRetry || attempt >= cfg.maxAttempts || ctx.Err() != nil {
			return res, err
		}
		db.store.observe(ctx, EventRetried, "atomic", key, 0, start, err)
		if werr := sleep(ctx, backoff(attempt, cfg.backoffBase, cfg.backoffMax)); werr != nil {
			// The context ended before the next attempt: its error is the
			// one class. The last attempt's error would be a second
			// (ErrRetryable), so it is kept in the message only.
			return res, &Error{Op: "retry", Key: key, Err: fmt.Errorf("%w while waiting to run again after: %v", werr, err)}
		}
	}
}

func isSwallowed(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.swallowed
}

// swallowedTwice is the error of a Run whose fn went on past a failed
// statement in two transactions in a row (PostgreSQL reports the aborted
// transaction after fn): not a conflict another try would escape, but
// fn's own doing. It has no class.
func swallowedTwice(err error) error {
	var e *Error
	errors.As(err, &e)
	return &Error{Op: e.Op, Key: e.Key, Err: fmt.Errorf("fn went on past a failed statement in two transactions in a row (handle its error): %w", e.Err)}
}

var errUnboundDB = fmt.Errorf("%w: DB is not bound to a store and a pool; bind one with Store.DB or postgres.Store.Pool", ErrInvalidOption)

func runOnce[X, T any](ctx context.Context, db DB[X], key string, fn func(context.Context, X) (T, error), cfg *settings, start time.Time) (Result[T], outcome, error) {
	s := db.store
	ptx, err := db.pool.Begin(ctx)
	if err != nil {
		e := s.dbError(ctx, "begin", key, err)
		return Result[T]{}, failedOutcome(e), e
	}
	ended := false
	defer func() {
		if !ended { // fn panicked
			_ = ptx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	tx := ptx.Tx()
	res, o, err := do(ctx, s, ptx, key, func(ctx context.Context) (T, error) { return fn(ctx, tx) }, cfg, start)
	ended = true
	switch o {
	case outcomeExecuted, outcomeReplayed, outcomeRecorded:
	default:
		_ = ptx.Rollback(context.WithoutCancel(ctx))
		return res, o, err
	}
	// A replay wrote nothing: whatever became of its COMMIT, the answer
	// stands, and a COMMIT that failed is a reason to run again, not an
	// unknown.
	if e := s.commit(ctx, ptx, "commit", key, o != outcomeReplayed); e != nil {
		return res, failedOutcome(e), e
	}
	return res, o, err
}

// backoff is "full jitter": uniform in [0, min(max, base·2^(attempt-1))].
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := max
	if attempt < 30 {
		if exp := base << (attempt - 1); exp > 0 && exp < max {
			d = exp
		}
	}
	return rand.N(d + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
