package idemsql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Dialect is what one database contributes: the SQL text of each operation
// and the meaning of its driver's errors. The packages under dialects/
// provide one per database; the algorithm stays here.
type Dialect interface {
	// Name identifies the dialect in errors and logs ("postgres", "mysql", "sqlite").
	Name() string
	// Statements returns the SQL for the table. Its names have already
	// been checked to be lowercase identifiers; the dialect quotes them.
	Statements(t Table) Statements
	// Classify says what a driver error means. Unknown errors are KindOther.
	Classify(err error) ErrorKind
}

// Table names the idempotency table: Name, in Schema when Schema is not
// empty ([WithSchema]).
type Table struct {
	Schema, Name string
}

// String is the table's name as the migrations write it: schema.name, or
// name.
func (t Table) String() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// Quote quotes each part of the name with q and joins them with a dot:
// Quote(`"`) gives "schema"."name".
func (t Table) Quote(q string) string {
	if t.Schema == "" {
		return q + t.Name + q
	}
	return q + t.Schema + q + "." + q + t.Name + q
}

// SchemaSupport is implemented by dialects whose tables may live in a named
// schema ([WithSchema]).
type SchemaSupport interface {
	SupportsSchemas() bool
}

// Statements is the SQL of each step, with the dialect's placeholders and
// arguments in the order given (the order in which they appear in the text,
// for dialects with positional placeholders). Times come from the
// database's clock; durations are passed in microseconds.
//
// A claim writes its claim token into the owner column, and every write
// after the claim (Complete, Fail, Release) matches the row by key and that
// token: a statement that runs where it should not — after the database
// ended the transaction, when the session has fallen back to autocommit —
// can then change no row but its own claim's, never the row of a duplicate
// that claimed the key meanwhile.
//
// elapsed is how long ago the call started (microseconds, by the caller's
// monotonic clock). A row counts as expired only if it had expired when the
// call started (expires_at <= now - elapsed): a duplicate that waited for
// the holder's commit replays its outcome even if the retention ran out
// while it waited.
type Statements struct {
	// Claim inserts a new in_progress row with attempt 1.
	// Args: key, fingerprint, token, ttl. Affects 1 row when it claimed; a
	// key that exists gives 0 rows or a KindDuplicateKey error, without
	// aborting the transaction.
	Claim string
	// ClaimOrTouch, if not empty, is Claim for a server that may let a
	// commit be seen before it is durable ([EarlyVisibility]). A key that
	// exists is not an error: the statement waits for the row's lock, as
	// Claim does, and then writes the row without changing its meaning
	// (updated_at), so that the transaction wrote something and its COMMIT
	// waits for the log flush, which also covers the commit of the row a
	// replay then returns. It must report any count but 1 for a key that
	// exists, whatever the driver counts (found or changed rows). Same
	// args.
	ClaimOrTouch string
	// ClaimOrRead, if not empty, is Claim and Read in one statement, so
	// that a duplicate of a committed key costs one round trip: it returns
	// one row, claimed (true when it inserted) followed by Read's columns
	// (of the existing row when claimed is false). It returns no row when
	// the key exists but the statement cannot see it (it waited for another
	// transaction's claim, committed after the statement's snapshot); the
	// core then reads with Read. Args: key, fingerprint, token, ttl, elapsed.
	ClaimOrRead string
	// Read returns status, fingerprint, result, attempt, owner, expired,
	// leased (lease_until is set), error_class, error_message. It must see
	// the latest committed row, even under a snapshot taken earlier in the
	// transaction. Args: elapsed, key.
	Read string
	// Reclaim re-claims an expired completed or failed row in place:
	// in_progress, attempt+1, new fingerprint, token and expiry, no result.
	// It must change nothing unless the row is still expired, still at the
	// given attempt and not in_progress (an in_progress row may stand for an
	// effect that happened: it is never free by age).
	// Args: fingerprint, token, ttl, key, attempt, elapsed.
	Reclaim string
	// Complete stores the encoded result and marks the row completed, its
	// retention running from now (expires_at = now + ttl).
	// Args: result, ttl, key, token.
	Complete string
	// Fail records a permanent failure, its retention running from now.
	// Args: error_class, error_message, ttl, key, token.
	Fail string
	// Release deletes the claim after fn failed. Atomic mode only: lease
	// mode never deletes an in_progress row. Args: key, token.
	Release string

	// ClaimCompleted, ClaimOrReadCompleted and ReclaimCompleted are Claim,
	// ClaimOrRead and Reclaim for a call whose result is known before fn
	// runs (fn returns struct{}: the result is {}). They store the row
	// completed at once, so that no Complete statement is needed: the
	// transaction commits claim and result together either way. Same
	// arguments. ClaimOrReadCompleted is needed exactly when ClaimOrRead is
	// set. A dialect whose transactions can end without the client knowing
	// (MySQL: after a deadlock the session runs in autocommit, and COMMIT
	// succeeds) leaves them empty: there, the fenced Complete is what tells
	// that the claim did not survive fn.
	ClaimCompleted, ClaimOrReadCompleted, ReclaimCompleted string

	// TryLock, if not empty, answers [InFlightFailFast] without bounding a
	// wait. It is for a dialect whose every statement that claims a key
	// (Claim, ClaimOrRead and their Completed forms here; a lease-mode
	// claim, re-claim or takeover) first takes a lock on the key in shared
	// mode, held until its transaction ends (PostgreSQL: an advisory lock
	// on a hash of the key). TryLock takes that lock in exclusive mode
	// without waiting and returns true when it got it; a fail-fast claim
	// then claims as usual, and otherwise reads the row with Read, which
	// must not wait for locks either: an outcome already committed
	// replays, anything else is ErrInProgress. Two keys that share a lock
	// can only make a call wait for, or answer ErrInProgress because of,
	// the other key's holder; the key's row decides the rest. Args: key.
	TryLock string
}

// ClaimBounder is implemented by dialects that can bound how long a claim
// waits for another transaction holding the key ([WithLockTimeout], and
// [InFlightFailFast] where the dialect has no TryLock statement).
// BoundClaim runs claim, which sends the claim's statements through the
// executor it is given, with the database's lock wait bounded: for each
// statement (the executor adds the setting to it), for the transaction, or
// for the session, then put back. With failFast it must not wait at all and
// must leave the transaction usable when it times out. It reports timedOut
// when claim failed because of the bound. A setting of the session stays
// on the connection if the transaction ends under the claim (its context
// ended, and database/sql rolled it back): [Run] then drops the
// connection instead of returning it to the pool.
type ClaimBounder interface {
	BoundClaim(ctx context.Context, ex Executor, timeout time.Duration, failFast bool, claim func(ex Executor) error) (timedOut bool, err error)
}

// EarlyVisibility is implemented by a dialect whose server may let other
// transactions see a commit before it is durable: InnoDB without a binary
// log makes a commit visible, and releases its locks, before the log flush
// that the writer's COMMIT waits for. A duplicate that read such a row and
// committed a transaction that wrote nothing (a COMMIT that waits for no
// flush) could answer with an outcome that a crash of the server then
// erases, while its writer was never told it committed. Where the server
// does, a replay writes the row it returns ([Statements].ClaimOrTouch,
// [LeaseStatements].Touch), so that its own COMMIT returns only once the
// row is durable.
//
// The core asks once per *sql.DB that the store runs statements on
// through [Store.DB] ([Run], lease mode, [DB.Tx]), when it first prepares
// them there (the dialect must also be a [StatementPreparer]). A
// transaction bound with [Store.SQL] or [Store.Bind], a pool of another
// type, a call through [DB.Tx] before the statements are prepared, and a
// pool whose answer was an error cannot tell: they count as seeing commits
// early.
type EarlyVisibility interface {
	VisibleBeforeDurable(ctx context.Context, ex Executor) (bool, error)
}

// visibleBeforeDurable reports whether ex's server may show a commit
// before it is durable, as far as ex knows: unknown counts as yes.
func visibleBeforeDurable(ex Executor) bool {
	k, ok := ex.(interface{ visibleBeforeDurable() bool })
	return !ok || k.visibleBeforeDurable()
}

// LockTimeoutEnder is implemented by a dialect whose lock wait time-out
// ends the whole transaction or only the statement, depending on the
// server (MySQL and MariaDB: innodb_rollback_on_timeout). The core asks it
// when fn fails with a lock time-out: if the transaction is gone, nothing
// more is sent on it and the call is retryable. The question runs on the
// transaction's connection and must be harmless outside a transaction.
type LockTimeoutEnder interface {
	LockTimeoutEndsTx(ctx context.Context, ex Executor) (bool, error)
}

// TxChecker is implemented by a dialect that can tell cheaply whether the
// session is still in the transaction that made the claim (MariaDB:
// @@in_transaction; PostgreSQL: the transaction's ID; SQLite: whether BEGIN
// is refused). After fn failed with an error of its own, the core asks it
// before removing or recording the claim: when fn swallowed an error that
// ended the transaction, or committed it itself, nothing more is sent and
// the call is retryable. known is false when the database cannot tell
// (MySQL 8); the cleanup, fenced by the claim's token, then runs as usual.
type TxChecker interface {
	InTransaction(ctx context.Context, ex Executor) (in, known bool)
}

// Executor runs statements in the caller's transaction. [Store.SQL] adapts a
// *sql.Tx; dialects/postgres adapts a pgx.Tx. Implement it to bind another
// driver.
type Executor interface {
	// Exec runs a statement and reports the rows it affected.
	Exec(ctx context.Context, query string, args ...any) (rowsAffected int64, err error)
	// QueryRow runs a query that returns at most one row. Scan on the result
	// must report sql.ErrNoRows (or an error that unwraps to it) when there
	// is none.
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Row is the result of [Executor.QueryRow].
type Row interface {
	Scan(dest ...any) error
}

// Store holds a dialect, a table and the defaults for calls. It is safe for
// concurrent use and holds no connection: make one at start-up and bind it to
// each transaction.
type Store struct {
	dialect  Dialect
	stmts    Statements
	defaults settings
	owner    string
	prepared sync.Map // *sql.DB → *preparedSet, for Run on dialects that prepare

	claims atomic.Uint64 // numbers this store's claims: the last part of a claim's token
	liveMu sync.Mutex
	live   map[uint64]struct{} // claims whose fn is running now, to tell a nested call from an abandoned claim
}

// NewStore returns a store for the dialect. Every option but
// [WithFingerprint] may be given: [WithTable] only here, the others as
// defaults for every call. The dialect packages wrap it (postgres.New,
// mysql.New, sqlite.New).
func NewStore(d Dialect, opts ...Option) (*Store, error) {
	if d == nil {
		return nil, fmt.Errorf("%w: nil dialect", ErrInvalidOption)
	}
	s := &Store{dialect: d, defaults: defaultSettings()}
	if err := applyOptions(&s.defaults, opts, inStore); err != nil {
		return nil, err
	}
	if s.defaults.schema != "" {
		if ss, ok := d.(SchemaSupport); !ok || !ss.SupportsSchemas() {
			return nil, fmt.Errorf("%w: WithSchema: dialect %s has no schemas", ErrInvalidOption, d.Name())
		}
	}
	s.stmts = d.Statements(s.table())
	s.owner = newOwner()
	s.live = make(map[uint64]struct{})
	return s, nil
}

// A claim token is what the owner column holds for one claim: the store's
// owner and a number no other claim of the store has. Every write after the
// claim (result, failure, release) matches the row by key and token, so a
// statement that runs where it should not (after the database ended the
// transaction, in autocommit) can change no row but its own claim's.
type claimToken struct {
	n     uint64
	owner string
}

func (s *Store) newClaim() claimToken {
	n := s.claims.Add(1)
	return claimToken{n: n, owner: s.owner + "/" + strconv.FormatUint(n, 10)}
}

// enter marks a claim's fn as running; leave ends that.
func (s *Store) enter(c claimToken) {
	s.liveMu.Lock()
	s.live[c.n] = struct{}{}
	s.liveMu.Unlock()
}

func (s *Store) leave(c claimToken) {
	s.liveMu.Lock()
	delete(s.live, c.n)
	s.liveMu.Unlock()
}

// running reports whether owner is the token of a claim of this store whose
// fn is running now. An in_progress row that a transaction can see and that
// has no lease is either its own claim (a nested call) or a committed,
// abandoned one: only the first is running.
func (s *Store) running(owner string) bool {
	rest, ok := strings.CutPrefix(owner, s.owner+"/")
	if !ok {
		return false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return false
	}
	s.liveMu.Lock()
	_, ok = s.live[n]
	s.liveMu.Unlock()
	return ok
}

// Dialect returns the store's dialect.
func (s *Store) Dialect() Dialect { return s.dialect }

// Table returns the name of the store's table.
func (s *Store) Table() string { return s.defaults.table }

// Schema returns the schema of the store's table, or "" ([WithSchema]).
func (s *Store) Schema() string { return s.defaults.schema }

func (s *Store) table() Table { return Table{Schema: s.defaults.schema, Name: s.defaults.table} }

// Tx is a store bound to one open transaction: the first argument of [Do].
// It is a small value; make one per transaction.
type Tx struct {
	store *Store
	exec  Executor
}

// Bind binds the store to a transaction through any [Executor].
func (s *Store) Bind(e Executor) Tx { return Tx{store: s, exec: e} }

// SQL binds the store to a database/sql transaction (pgx's stdlib,
// go-sql-driver/mysql, modernc.org/sqlite). It sends every statement's
// text: SQLite parses it again on each call, and go-sql-driver/mysql
// without interpolateParams prepares and closes it. Where the store is
// also bound to the transaction's pool, s.DB(db, nil).Tx(tx) runs the
// statements prepared once per connection instead ([DB.Tx]).
func (s *Store) SQL(tx *sql.Tx) Tx {
	if tx == nil {
		return Tx{store: s}
	}
	return Tx{store: s, exec: sqlExecutor{tx: tx, dia: preparer(s.dialect)}}
}

var _ Executor = sqlExecutor{}

// sqlExecutor runs statements as text in a database/sql transaction. dia,
// if not nil, says when the server refused to prepare one for the driver
// ([Inliner]).
type sqlExecutor struct {
	tx  *sql.Tx
	dia StatementPreparer
}

func (e sqlExecutor) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := e.tx.ExecContext(ctx, query, args...)
	if text, ok := inlined(e.dia, err, query, args); ok {
		res, err = e.tx.ExecContext(ctx, text)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (e sqlExecutor) QueryRow(ctx context.Context, query string, args ...any) Row {
	row := e.tx.QueryRowContext(ctx, query, args...)
	if e.dia == nil {
		return row
	}
	return fallbackRow{ctx: ctx, tx: e.tx, dia: e.dia, query: query, args: args, row: row}
}

var errUnbound = fmt.Errorf("%w: Tx is not bound to a store and an open transaction; bind one with Store.SQL, Store.Bind or postgres.Store.Pgx", ErrInvalidOption)

// newOwner names this process in the owner column, for audit: host, pid and
// a random suffix that tells apart two stores in one process, and two
// processes whose host name and pid agree (containers).
func newOwner() string {
	host, _ := os.Hostname()
	var b [8]byte
	_, _ = rand.Read(b[:])
	owner := fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	if len(owner) > 200 {
		owner = owner[len(owner)-200:]
	}
	return owner
}
