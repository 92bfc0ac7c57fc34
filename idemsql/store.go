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

	"github.com/idemsql/idemsql/idemdriver"
)

// visibleBeforeDurable reports whether ex's server may show a commit
// before it is durable, as far as ex knows: unknown counts as yes.
func visibleBeforeDurable(ex idemdriver.Executor) bool {
	k, ok := ex.(interface{ visibleBeforeDurable() bool })
	return !ok || k.visibleBeforeDurable()
}

// Store holds a dialect, a table and the defaults for calls. It is safe for
// concurrent use and holds no connection: make one at start-up and bind it to
// each transaction.
type Store struct {
	dialect  idemdriver.Dialect
	stmts    idemdriver.Statements
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
func NewStore(d idemdriver.Dialect, opts ...Option) (*Store, error) {
	if d == nil {
		return nil, fmt.Errorf("%w: nil dialect", ErrInvalidOption)
	}
	s := &Store{dialect: d, defaults: defaultSettings()}
	if err := applyOptions(&s.defaults, opts, inStore); err != nil {
		return nil, err
	}
	if s.defaults.schema != "" {
		if ss, ok := d.(idemdriver.SchemaSupport); !ok || !ss.SupportsSchemas() {
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
func (s *Store) Dialect() idemdriver.Dialect { return s.dialect }

// Table returns the name of the store's table.
func (s *Store) Table() string { return s.defaults.table }

// Schema returns the schema of the store's table, or "" ([WithSchema]).
func (s *Store) Schema() string { return s.defaults.schema }

func (s *Store) table() idemdriver.Table {
	return idemdriver.Table{Schema: s.defaults.schema, Name: s.defaults.table}
}

// Tx is a store bound to one open transaction: the first argument of [Do].
// It is a small value; make one per transaction.
type Tx struct {
	store *Store
	exec  idemdriver.Executor
}

// Bind binds the store to a transaction through any [Executor].
func (s *Store) Bind(e idemdriver.Executor) Tx { return Tx{store: s, exec: e} }

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

var _ idemdriver.Executor = sqlExecutor{}

// sqlExecutor runs statements as text in a database/sql transaction. dia,
// if not nil, says when the server refused to prepare one for the driver
// ([Inliner]).
type sqlExecutor struct {
	tx  *sql.Tx
	dia idemdriver.StatementPreparer
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

func (e sqlExecutor) QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row {
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
