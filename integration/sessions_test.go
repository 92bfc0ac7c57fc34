package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idemsql"
)

// hangGuard bounds a wait that only a hang can make long: the failure it
// reports is "never returned", not a speed.
const hangGuard = 30 * time.Second

// settled is n's value once it is 0, or after hangGuard: the connections
// in use of a pool that a store prepares its statements on (SQLite, MySQL),
// which a background call borrows for a moment after the pool's first
// transaction. A connection that a request left behind stays in use.
func settled(n func() int) int {
	deadline := time.Now().Add(hangGuard)
	for {
		v := n()
		if v == 0 || time.Now().After(deadline) {
			return v
		}
		time.Sleep(time.Millisecond)
	}
}

// onePool opens a second pool on the backend's database, limited to one
// connection, so that a test can hold that connection or read its session.
func (e *env) onePool() *sql.DB {
	e.t.Helper()
	var db *sql.DB
	var err error
	switch e.dialect {
	case "mysql":
		db, err = sql.Open("mysql", mysqlDSN(e.t))
	case "sqlite":
		var seq int
		var name, file string
		if err = e.db.QueryRow("PRAGMA database_list").Scan(&seq, &name, &file); err != nil {
			e.t.Fatal(err)
		}
		// DEFERRED transactions, as e.deferredDB: an IMMEDIATE one would
		// wait in BEGIN for a writer, before any claim.
		db, err = sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	default:
		db, err = sql.Open("pgx", postgresDSN(e.t))
	}
	if err != nil {
		e.t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	e.t.Cleanup(func() { db.Close() })
	return db
}

// The first Run on a pool must not wait for the pool beyond its context,
// nor make other first callers wait behind it: preparing the store's
// statements (SQLite, MySQL) needs a connection, and here the only one is
// held elsewhere. Every Run returns with its context's error.
func TestFirstRunsOnABusyPoolKeepTheirContexts(t *testing.T) {
	for _, b := range backends {
		if b.name != "sqlite" && b.name != "mysql" {
			continue // the dialects that prepare statements
		}
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			db := e.onePool()
			busy := storeOn(e, sqlDriver(e.dialect, db))
			held, err := db.Conn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			released := false
			release := func() {
				if !released {
					released = true
					held.Close()
				}
			}
			defer release()

			const callers = 4
			errs := make(chan error, callers)
			var wg sync.WaitGroup
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
					defer cancel()
					_, err := idemsql.Run(ctx, busy, "busy-1", func(ctx context.Context, tx *sql.Tx) (int, error) { return 1, nil })
					errs <- err
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(hangGuard):
				release() // let the stuck callers end
				<-done
				t.Fatalf("Run waited for the busy pool past its context (a first caller's prepare held them all)")
			}
			close(errs)
			for err := range errs {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err = %v, want the context's deadline", err)
				}
			}
			release()
			if _, err := idemsql.Run(context.Background(), busy, "busy-1", func(ctx context.Context, tx *sql.Tx) (int, error) { return 1, nil }); err != nil {
				t.Fatalf("Run once the pool is free: %v", err)
			}
		})
	}
}

// sessionSetting reads, on db's connection, the setting that a bounded
// claim changes: lock_timeout, innodb_lock_wait_timeout, busy_timeout.
func (e *env) sessionSetting(db *sql.DB) string {
	e.t.Helper()
	q := map[string]string{
		"postgres": "SELECT current_setting('lock_timeout')",
		"mysql":    "SELECT CAST(@@SESSION.innodb_lock_wait_timeout AS CHAR)",
		"sqlite":   "PRAGMA busy_timeout",
	}[e.dialect]
	var v string
	if err := db.QueryRow(q).Scan(&v); err != nil {
		e.t.Fatalf("read the session setting: %v", err)
	}
	return v
}

// sessionBackends are the backends whose pools the tests below pin to one
// connection: one per database/sql dialect (PostgreSQL through pgx's
// stdlib; its native pool keeps no session setting of idemsql's either).
func sessionBackends(yield func(backend) bool) {
	for _, b := range backends {
		switch b.name {
		case "postgres-stdlib", "mysql", "sqlite":
			if !yield(b) {
				return
			}
		}
	}
}

// A Run whose context ends while its bounded claim waits behind the key's
// holder leaves its pool's connection as it found it: the lock setting
// the claim changed is the connection's own again, or the connection is
// gone. (SQLite: database/sql rolled the transaction back under the claim
// and put the connection back in the pool before the setting could be
// restored.)
func TestBoundedClaimCutShortByContextLeavesNoSetting(t *testing.T) {
	for b := range sessionBackends {
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var runs atomic.Int64
			holder := e.holdKey(ctx, "cut-1", &runs)
			defer holder.Rollback(ctx)
			db := e.onePool()
			before := e.sessionSetting(db)

			short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancelShort()
			_, err := idemsql.Run(short, storeOn(e, sqlDriver(e.dialect, db)), "cut-1", func(ctx context.Context, tx *sql.Tx) (int, error) {
				runs.Add(1)
				return 1, nil
			}, idemsql.Options{LockTimeout: 20 * time.Second})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want the context's deadline", err)
			}
			if after := e.sessionSetting(db); after != before {
				t.Fatalf("the pool's connection has the setting %s after the call, %s before", after, before)
			}
			if runs.Load() != 1 {
				t.Fatal("fn ran behind a held key")
			}
		})
	}
}

// endTxBeforeClaim is a transaction's executor that, before the claim's
// INSERT, ends the context the transaction was begun with and waits until
// database/sql has rolled the transaction back and put its connection back
// in the pool: a context that ends between two statements of a bounded
// claim, on purpose.
type endTxBeforeClaim struct {
	t      *testing.T
	tx     *sql.Tx
	cancel context.CancelFunc
	fired  bool
}

func (x *endTxBeforeClaim) before(query string) {
	if x.fired || !strings.Contains(query, "INSERT INTO") {
		return
	}
	x.fired = true
	x.cancel()
	deadline := time.Now().Add(hangGuard)
	for {
		if _, err := x.tx.ExecContext(context.Background(), "SELECT 1"); errors.Is(err, sql.ErrTxDone) {
			return
		}
		if time.Now().After(deadline) {
			x.t.Fatal("database/sql did not roll the transaction back when its context ended")
		}
		time.Sleep(time.Millisecond)
	}
}

func (x *endTxBeforeClaim) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	x.before(query)
	res, err := x.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (x *endTxBeforeClaim) QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row {
	x.before(query)
	return x.tx.QueryRowContext(ctx, query, args...)
}

// Do in the caller's transaction, when the context the transaction was
// begun with ends between two statements of the bounded claim: nothing of
// the claim's lock setting stays on the connection, which database/sql has
// put back in the pool. Not on SQLite, whose busy_timeout is the only
// bound it has and which Do cannot restore on a connection it no longer
// holds (docs/guide.md says so; Run discards the connection instead).
func TestBoundedClaimInCallersTxLeavesNoSetting(t *testing.T) {
	for b := range sessionBackends {
		if b.dialect == "sqlite" {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			for _, opt := range []idemsql.Options{{FailFast: true}, {LockTimeout: 3 * time.Second}} {
				db := e.onePool()
				before := e.sessionSetting(db)
				txCtx, cancel := context.WithCancel(context.Background())
				tx, err := db.BeginTx(txCtx, nil)
				if err != nil {
					t.Fatal(err)
				}
				x := &endTxBeforeClaim{t: t, tx: tx, cancel: cancel}
				_, err = idemsql.Do(context.Background(), e.exStore(), idemdriver.Executor(x), "cut-2", func(context.Context) (int, error) { return 1, nil }, opt)
				if err == nil || !x.fired {
					t.Fatalf("err = %v (claim reached: %v), want the claim to fail on the ended transaction", err, x.fired)
				}
				_ = tx.Rollback()
				if after := e.sessionSetting(db); after != before {
					t.Fatalf("the pool's connection has the setting %s after the call, %s before", after, before)
				}
			}
		})
	}
}

// A request through idemhttp.New on PostgreSQL takes one transaction ID:
// the middleware's fail-fast claim writes in the request's transaction, not
// in a subtransaction of its own (which would take a second ID, and feed
// the subtransaction cache). The claim's row, read in the handler, was
// written by the transaction's own ID.
func TestHTTPRequestOnPostgresTakesOneTransactionID(t *testing.T) {
	for _, b := range backends {
		if b.dialect != "postgres" {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			h := newHTTPEnv(t, b, 4)
			var runs atomic.Int64
			srv := h.guard(testConfig(), h.orderHandler(&runs, func(w http.ResponseWriter, r *http.Request) bool {
				ctx := r.Context()
				key, _ := idemhttp.Key(ctx)
				tx := h.tx(ctx)
				claim, err := tx.QueryInt(ctx, "SELECT xmin::text::bigint FROM "+h.table+" WHERE idem_key = $1", key)
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return true
				}
				own, err := tx.QueryInt(ctx, "SELECT pg_current_xact_id()::xid::text::bigint")
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return true
				}
				if claim != own {
					http.Error(w, fmt.Sprintf("the claim was written by transaction ID %d, the request's transaction is %d: a subtransaction", claim, own), http.StatusTeapot)
					return true
				}
				return false
			}))
			for i := range 3 {
				w := serve(t, srv, request{user: "u", key: fmt.Sprintf("xid-%d", i), body: `{"amount":1}`})
				if w.Code != http.StatusCreated {
					t.Fatalf("request %d: %d %s", i, w.Code, w.Body.String())
				}
			}
			if n := runs.Load(); n != 3 {
				t.Fatalf("handler ran %d times, want 3", n)
			}
		})
	}
}

// Fail-fast beside a transaction that replays the key and stays open: the
// key's outcome is committed, so fail-fast replays it too, without waiting
// (on PostgreSQL the replaying transaction holds the key's advisory lock,
// and fail-fast reads the committed row instead). A nested fail-fast call
// with the key its own transaction is inside is ErrReentrant, not
// ErrInProgress. Not on SQLite, where a transaction that replays holds the
// database's only write lock: fail-fast there answers ErrInProgress.
func TestFailFastBesideAReplay(t *testing.T) {
	for _, b := range backends {
		if b.dialect == "sqlite" {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var runs atomic.Int64
			e.mustGuarded("ffr-1", 1, &runs)
			// Until the store knows its server, every replay writes (and
			// then the fail-fast call, too, would wait for the row).
			e.waitServerKnown(t, e.commitsVisibleEarly(t))
			replaying, err := e.begin(ctx, sql.LevelDefault)
			if err != nil {
				t.Fatal(err)
			}
			defer replaying.Rollback(ctx)
			if res, err := doIn(ctx, replaying, "ffr-1", e.charge(replaying, "ffr-1", 1, &runs)); err != nil || !res.Replayed {
				t.Fatalf("replay in the open transaction: %+v %v", res, err)
			}
			failFast := idemsql.Options{FailFast: true}
			res, err := e.guarded("ffr-1", 1, &runs, failFast)
			if replayWrote(t, e, replaying, "ffr-1") {
				// MySQL without a binary log: the replay writes the row so
				// that its COMMIT waits for the outcome to be durable
				// (EarlyVisibility), and holds its lock until then: the
				// documented answer is ErrInProgress.
				if !errors.Is(err, idemsql.ErrInProgress) {
					t.Fatalf("fail-fast beside a replay that wrote the row: %+v %v, want ErrInProgress", res, err)
				}
			} else if err != nil || !res.Replayed {
				t.Fatalf("fail-fast beside the replay: %+v %v, want a replay", res, err)
			}
			if runs.Load() != 1 {
				t.Fatalf("fn ran %d times", runs.Load())
			}

			tx, err := e.begin(ctx, sql.LevelDefault)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			var inner error
			if _, err := doIn(ctx, tx, "ffr-2", func(ctx context.Context) (invoice, error) {
				_, inner = doIn(ctx, tx, "ffr-2", e.charge(tx, "ffr-2", 1, &runs), failFast)
				return invoice{}, nil
			}, failFast); err != nil {
				t.Fatalf("outer: %v", err)
			}
			if !errors.Is(inner, idemsql.ErrReentrant) || errors.Is(inner, idemsql.ErrInProgress) {
				t.Fatalf("nested fail-fast: %v, want ErrReentrant alone", inner)
			}
		})
	}
}

// replayWrote reports whether the replay in the open transaction tx wrote
// key's row (MySQL, where the server may show commits before they are
// durable): tx sees its own write of updated_at, other sessions the
// committed value.
func replayWrote(t *testing.T, e *env, tx testTx, key string) bool {
	t.Helper()
	if e.dialect != "mysql" {
		return false
	}
	q := "SELECT CAST(updated_at AS CHAR) FROM " + e.table + " WHERE idem_key = ?"
	var committed string
	if err := e.db.QueryRow(q, key).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	n, err := tx.QueryInt(context.Background(), "SELECT COUNT(*) FROM "+e.table+" WHERE idem_key = ? AND CAST(updated_at AS CHAR) <> ?", key, committed)
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}
