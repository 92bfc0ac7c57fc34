package idemsql

import (
	"crypto/rand"
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
	r, ok := ex.(idemdriver.DurabilityReporter)
	return !ok || r.VisibleBeforeDurable()
}

// Store is the one handle of the library: a table, the defaults for calls,
// and the driver that reaches the database (a pool, and the dialect of its
// SQL). X is the driver's transaction type: *sql.Tx, pgx.Tx. It is safe for
// concurrent use: make one at start-up, with [New], and pass it to every
// call.
type Store[X any] struct {
	core
	driver idemdriver.Driver[X]
}

// core is what a store's algorithm needs of it, whatever its driver.
type core struct {
	dialect  idemdriver.Dialect
	stmts    idemdriver.Statements
	defaults settings
	owner    string

	claims atomic.Uint64 // numbers this store's claims: the last part of a claim's token
	liveMu sync.Mutex
	live   map[uint64]struct{} // claims whose fn is running now, to tell a nested call from an abandoned claim
}

// New returns a store on the driver that a dialect package makes of a pool:
// idempostgres.New(pgxpool), idempostgres.NewSQL(db), idemmysql.New(db),
// idemsqlite.New(db). Every option but [Options.Fingerprint] may be given:
// [Options.Table] and [Options.Schema] only here, the others as defaults for
// every call.
func New[X any](d idemdriver.Driver[X], opts ...Options) (*Store[X], error) {
	if d == nil || d.Dialect() == nil {
		return nil, fmt.Errorf("%w: nil driver", ErrInvalidOption)
	}
	dia := d.Dialect()
	s := &Store[X]{core: core{dialect: dia, defaults: defaultSettings()}, driver: d}
	if err := applyOptions(&s.defaults, opts, inStore); err != nil {
		return nil, err
	}
	if s.defaults.schema != "" {
		if ss, ok := dia.(idemdriver.SchemaSupport); !ok || !ss.SupportsSchemas() {
			return nil, fmt.Errorf("%w: Options.Schema: dialect %s has no schemas", ErrInvalidOption, dia.Name())
		}
	}
	s.stmts = dia.Statements(s.table())
	s.owner = newOwner()
	s.live = make(map[uint64]struct{})
	if p, ok := d.(idemdriver.Preparer); ok {
		st := s.stmts
		p.Prepare(st.Claim, st.ClaimOrTouch, st.ClaimCompleted, st.ClaimOrRead, st.ClaimOrReadCompleted,
			st.Read, st.Reclaim, st.ReclaimCompleted, st.Complete, st.Fail, st.Release)
	}
	return s, nil
}

// Table names the store's table, as the migrations need it
// (migrations.Up): its dialect, schema ("" for none) and name.
func (s *Store[X]) Table() idemdriver.Table { return s.table() }

// A claim token is what the owner column holds for one claim: the store's
// owner and a number no other claim of the store has. Every write after the
// claim (result, failure, release) matches the row by key and token, so a
// statement that runs where it should not (after the database ended the
// transaction, in autocommit) can change no row but its own claim's.
type claimToken struct {
	n     uint64
	owner string
}

func (s *core) newClaim() claimToken {
	n := s.claims.Add(1)
	return claimToken{n: n, owner: s.owner + "/" + strconv.FormatUint(n, 10)}
}

// enter marks a claim's fn as running; leave ends that.
func (s *core) enter(c claimToken) {
	s.liveMu.Lock()
	s.live[c.n] = struct{}{}
	s.liveMu.Unlock()
}

func (s *core) leave(c claimToken) {
	s.liveMu.Lock()
	delete(s.live, c.n)
	s.liveMu.Unlock()
}

// running reports whether owner is the token of a claim of this store whose
// fn is running now. An in_progress row that a transaction can see and that
// has no lease is either its own claim (a nested call) or a committed,
// abandoned one: only the first is running.
func (s *core) running(owner string) bool {
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

func (s *core) table() idemdriver.Table {
	return idemdriver.Table{Dialect: s.dialect.Name(), Schema: s.defaults.schema, Name: s.defaults.table}
}

var errUnbound = fmt.Errorf("%w: Do needs a store and an open transaction", ErrInvalidOption)

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
