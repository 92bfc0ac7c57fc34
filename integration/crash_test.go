//go:build linux

package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/idemsql/idemsql/idemmysql"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/migrations"
)

var (
	crashLoad    = flag.Duration("crash.load", 30*time.Second, "crash tests: how long each database is loaded and killed")
	crashClients = flag.Int("crash.clients", 16, "crash tests: concurrent callers")
	crashSeed    = flag.Uint64("crash.seed", 0, "crash tests: seed of the kill schedule and the keys' paths (0: from the clock)")
)

// crashDups is how many callers ask for each key at once: one claims it, the
// others wait for its commit and replay the moment it is visible, which is
// when a replay can outrun the durability of what it read.
const crashDups = 4

// TestCrashPostgres kills a private PostgreSQL server (the postmaster and
// every backend, with SIGKILL) again and again under load, restarts it, and
// lets every caller retry its key with the same key until it gets an answer,
// as real clients do. Then it checks what must survive any crash: see
// checkCrash.
func TestCrashPostgres(t *testing.T) {
	crashEnabled(t)
	srv, dsn := newPrivatePostgres(t)
	srv.start()
	t.Cleanup(srv.stop)
	ctx := context.Background()

	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = int32(*crashClients) + 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { db.Close() })
	store, err := idemsql.New(idempostgres.NewSQL(db))
	if err != nil {
		t.Fatal(err)
	}
	pgxStore, err := idemsql.New(idempostgres.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, db, store); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE crash_effects (id bigserial PRIMARY KEY, idem_key text NOT NULL, value text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const insert = `INSERT INTO crash_effects (idem_key, value) VALUES ($1, $2)`
	lease := idemsql.Options{Lease: time.Second, LeaseWait: time.Millisecond}

	paths := []crashPath{
		{name: "pgx Run", call: func(ctx context.Context, key, value string) (idemsql.Result[string], error) {
			return idemsql.Run(ctx, pgxStore, key, func(ctx context.Context, tx pgx.Tx) (string, error) {
				_, err := tx.Exec(ctx, insert, key, value)
				return value, err
			})
		}},
		{name: "pgx Do", call: func(ctx context.Context, key, value string) (idemsql.Result[string], error) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				return idemsql.Result[string]{}, err
			}
			defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
			res, err := idemsql.Do(ctx, pgxStore, tx, key, func(ctx context.Context) (string, error) {
				_, err := tx.Exec(ctx, insert, key, value)
				return value, err
			})
			if err != nil {
				return res, err
			}
			return res, tx.Commit(ctx)
		}},
		sqlRun("stdlib Run", store, db, insert),
		sqlDo("stdlib Do", store, db, insert),
		{name: "pgx RunExternal", lease: true, call: func(ctx context.Context, key, value string) (idemsql.Result[string], error) {
			return idemsql.RunExternal(ctx, pgxStore, key, func(ctx context.Context, _ idemsql.Claim) (string, error) {
				_, err := pool.Exec(ctx, insert, key, value)
				return value, err
			}, lease)
		}},
	}
	if fault := runCrash(t, srv, db, paths); fault != "" {
		t.Fatalf("PostgreSQL failed by itself: %s", fault)
	}
}

// TestCrashMariaDB is TestCrashPostgres on a private MariaDB server with
// innodb_flush_log_at_trx_commit=1 and no binary log.
//
// MariaDB 10.11 itself fails now and then under this schedule, about once
// in twenty runs here: after the last recovery a read finds "Index for
// table ... is corrupt", or the server stops on a failed InnoDB assertion.
// Then nothing can be checked; the run is logged and done again once, on a
// new server, and must pass whole. A second such failure fails the test.
func TestCrashMariaDB(t *testing.T) {
	crashEnabled(t)
	for run := 1; ; run++ {
		fault := crashMariaDB(t)
		if fault == "" {
			return
		}
		if run == 2 {
			t.Fatalf("MariaDB failed by itself again: %s", fault)
		}
		t.Logf("MariaDB failed by itself, so nothing could be checked (%s): again, on a new server", fault)
	}
}

// crashMariaDB is one run of TestCrashMariaDB; it returns how the server
// failed by itself, if it did.
func crashMariaDB(t *testing.T) (fault string) {
	srv, dsn := newPrivateMariaDB(t)
	srv.start()
	t.Cleanup(srv.stop)
	ctx := context.Background()

	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(*crashClients + 4)
	t.Cleanup(func() { db.Close() })
	// Transactions of another pool run the store's statements as text.
	other, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	other.SetMaxOpenConns(*crashClients + 4)
	t.Cleanup(func() { other.Close() })
	store, err := idemsql.New(idemmysql.New(db))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, db, store); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE crash_effects (id BIGINT AUTO_INCREMENT PRIMARY KEY,
idem_key VARBINARY(255) NOT NULL, value VARCHAR(64) NOT NULL) ENGINE = InnoDB`); err != nil {
		t.Fatal(err)
	}
	const insert = `INSERT INTO crash_effects (idem_key, value) VALUES (?, ?)`
	lease := idemsql.Options{Lease: time.Second, LeaseWait: time.Millisecond}
	paths := []crashPath{
		sqlRun("Run", store, db, insert),
		sqlDo("Do", store, db, insert),
		sqlDo("Do (another pool's transaction)", store, other, insert),
		{name: "RunExternal", lease: true, call: func(ctx context.Context, key, value string) (idemsql.Result[string], error) {
			return idemsql.RunExternal(ctx, store, key, func(ctx context.Context, _ idemsql.Claim) (string, error) {
				_, err := db.ExecContext(ctx, insert, key, value)
				return value, err
			}, lease)
		}},
	}
	return runCrash(t, srv, db, paths)
}

// crashPath is one way of calling idemsql: fn inserts (key, value) into
// crash_effects and returns value.
type crashPath struct {
	name string
	// lease: lease mode, whose fn stands for an effect outside the
	// database (its insert commits on its own), which a crash between the
	// effect and the record may repeat: no check of one effect per key.
	lease bool
	call  func(ctx context.Context, key, value string) (idemsql.Result[string], error)
}

func sqlRun(name string, store *idemsql.Store[*sql.Tx], db *sql.DB, insert string) crashPath {
	return crashPath{name: name, call: func(ctx context.Context, key, value string) (idemsql.Result[string], error) {
		return idemsql.Run(ctx, store, key, func(ctx context.Context, tx *sql.Tx) (string, error) {
			_, err := tx.ExecContext(ctx, insert, key, value)
			return value, err
		})
	}}
}

func sqlDo(name string, store *idemsql.Store[*sql.Tx], db *sql.DB, insert string) crashPath {
	return crashPath{name: name, call: func(ctx context.Context, key, value string) (idemsql.Result[string], error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return idemsql.Result[string]{}, err
		}
		defer func() { _ = tx.Rollback() }()
		res, err := idemsql.Do(ctx, store, tx, key, func(ctx context.Context) (string, error) {
			_, err := tx.ExecContext(ctx, insert, key, value)
			return value, err
		})
		if err != nil {
			return res, err
		}
		return res, tx.Commit()
	}}
}

// crashAnswer is what one caller was told.
type crashAnswer struct {
	key, value, path string
	replayed         bool
	life             int           // the server's life (kills before it) when the answer came
	at               time.Duration // since the load began
}

// crashRun is the state of one run.
type crashRun struct {
	start time.Time
	life  atomic.Int64 // kills so far

	mu      sync.Mutex
	answers []crashAnswer
	fresh   map[string]bool // the keys whose first caller was told it ran fn
	errs    map[string]int  // error texts, for the report
	inLife  atomic.Int64    // answers in the server's current life
	// early gets a signal when a replay was answered before the key's
	// first caller heard that its COMMIT returned: the moment a kill can
	// erase what the replay answered, if its server shows commits before
	// they are durable.
	early chan struct{}
}

func (r *crashRun) answered(a crashAnswer) {
	r.mu.Lock()
	r.answers = append(r.answers, a)
	ahead := a.replayed && !r.fresh[a.key]
	if !a.replayed {
		r.fresh[a.key] = true
	}
	r.mu.Unlock()
	r.inLife.Add(1)
	if ahead {
		select {
		case r.early <- struct{}{}:
		default:
		}
	}
}

func (r *crashRun) failed(err error) {
	class := "unclassified"
	for _, c := range []error{idemsql.ErrRetryable, idemsql.ErrCommitUnknown, idemsql.ErrInProgress,
		idemsql.ErrLeaseLost, idemsql.ErrLockTimeout, idemsql.ErrAbandoned, idemsql.ErrUnexpectedState,
		context.DeadlineExceeded} {
		if errors.Is(err, c) {
			class = c.Error()
			break
		}
	}
	r.mu.Lock()
	r.errs[class]++
	r.mu.Unlock()
}

// runCrash loads the server through paths for -crash.load, killing it now
// and then, and checks the outcome. Each key is asked for by crashDups
// callers at once, each on a path of its own; a caller retries its key until
// it gets an answer (or the load ends).
func runCrash(t *testing.T, srv *privateServer, db *sql.DB, paths []crashPath) (fault string) {
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-crash.seed), load %v, %d clients, paths: %s", seed, *crashLoad, *crashClients, pathNames(paths))
	// A failure the server caused itself (a page it found corrupt after
	// recovery, say) shows in its own log, not in the library's errors.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log, its errors:\n%s", srv.name, srv.logErrors())
		}
	})
	rng := rand.New(rand.NewPCG(seed, 1))
	r := &crashRun{start: time.Now(), fresh: map[string]bool{}, errs: map[string]int{}, early: make(chan struct{}, 1)}

	type task struct {
		key  string
		path crashPath
	}
	ctx, stop := context.WithCancel(context.Background())
	tasks := make(chan task)
	var wg sync.WaitGroup
	wg.Add(1)
	var atomicPaths, leasePaths []crashPath
	for _, p := range paths {
		if p.lease {
			leasePaths = append(leasePaths, p)
		} else {
			atomicPaths = append(atomicPaths, p)
		}
	}
	go func() { // the keys: crashDups tasks for each, one after the other
		defer wg.Done()
		defer close(tasks)
		for k := 0; ; k++ {
			// One key in five is a lease-mode key; the others are atomic,
			// their callers on different paths.
			key, ps := "crash-"+strconv.Itoa(k), atomicPaths
			if k%5 == 4 && len(leasePaths) > 0 {
				key, ps = "crash-lease-"+strconv.Itoa(k), leasePaths
			}
			first := int(seed%7) + k
			for d := range crashDups {
				select {
				case tasks <- task{key: key, path: ps[(first+d)%len(ps)]}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	var runs atomic.Int64 // fn's values are unique: the key and a counter
	for range *crashClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tk := range tasks {
				for ctx.Err() == nil {
					value := tk.key + "/" + strconv.FormatInt(runs.Add(1), 10)
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					res, err := tk.path.call(cctx, tk.key, value)
					cancel()
					if err == nil {
						r.answered(crashAnswer{key: tk.key, value: res.Value, path: tk.path.name, replayed: res.Replayed,
							life: int(r.life.Load()), at: time.Since(r.start)})
						break
					}
					if ctx.Err() != nil {
						break
					}
					r.failed(err)
					time.Sleep(time.Duration(10+rand.IntN(40)) * time.Millisecond)
				}
			}
		}()
	}

	// The kills: each once the load runs again after the last restart, after
	// a random pause, at the next replay answered ahead of its key's first
	// caller (or a second later, if none comes).
	deadline := r.start.Add(*crashLoad)
	for time.Now().Before(deadline) {
		for r.inLife.Load() < 200 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		select {
		case <-r.early: // from before the pause: drop it
		default:
		}
		select {
		case <-r.early:
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			break
		}
		srv.kill()
		r.life.Add(1)
		r.inLife.Store(0)
		srv.start()
	}
	stop()
	wg.Wait()
	if n, kills := srv.recoveries(), int(r.life.Load()); n != kills {
		t.Errorf("%s recovered from a crash %d times after %d kills", srv.name, n, kills)
	}
	return checkCrash(t, srv, r, db)
}

func pathNames(paths []crashPath) string {
	var names []string
	for _, p := range paths {
		names = append(names, p.name)
	}
	return strings.Join(names, ", ")
}

// checkCrash checks, on the server as it is after the last restart:
//   - one effect per key in atomic mode (fn's insert committed at most once);
//   - every answer, fresh or replayed, is the key's committed outcome: the
//     row completed with that value, and (atomic mode) the one effect of the
//     key is that value. A replay whose value a crash then erased, or a
//     fresh success that did not survive, breaks it;
//   - every row the answers' keys left is completed: a claim is never
//     left in progress with nobody to finish it (atomic mode).
//
// If the server fails by itself while the rows are read (see
// privateServer.ownFailure), nothing is checked and checkCrash returns how.
func checkCrash(t *testing.T, srv *privateServer, r *crashRun, db *sql.DB) (fault string) {
	ctx := context.Background()
	effects := map[string][]string{}
	rows, err := db.QueryContext(ctx, `SELECT idem_key, value FROM crash_effects`)
	if err != nil {
		return srv.ownFailureOr(t, err)
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return srv.ownFailureOr(t, err)
		}
		effects[k] = append(effects[k], v)
	}
	if err := rows.Err(); err != nil {
		return srv.ownFailureOr(t, err)
	}
	type stored struct{ status, value string }
	outcomes := map[string]stored{}
	rows, err = db.QueryContext(ctx, `SELECT idem_key, status, result FROM idempotency_keys`)
	if err != nil {
		return srv.ownFailureOr(t, err)
	}
	for rows.Next() {
		var k, status string
		var result []byte
		if err := rows.Scan(&k, &status, &result); err != nil {
			return srv.ownFailureOr(t, err)
		}
		var v string
		if status == idemsql.StatusCompleted {
			if err := json.Unmarshal(result, &v); err != nil {
				t.Fatalf("key %s: result %q: %v", k, result, err)
			}
		}
		outcomes[k] = stored{status, v}
	}
	if err := rows.Err(); err != nil {
		return srv.ownFailureOr(t, err)
	}

	leaseKey := func(k string) bool { return strings.HasPrefix(k, "crash-lease-") }
	var fresh, replays, erasedReplays, lostFresh int
	erasedLives := map[int]bool{} // the server lives whose end erased a replay
	var violations []string
	violate := func(format string, args ...any) { violations = append(violations, fmt.Sprintf(format, args...)) }
	for _, a := range r.answers {
		if a.replayed {
			replays++
		} else {
			fresh++
		}
		o, ok := outcomes[a.key]
		if ok && o.status == idemsql.StatusCompleted && o.value == a.value {
			continue
		}
		what := "a fresh success did not survive"
		if a.replayed {
			erasedReplays++
			erasedLives[a.life] = true
			what = "a replay answered with a value that is not the key's committed outcome"
		} else {
			lostFresh++
		}
		kills := int(r.life.Load())
		when := "after the last kill"
		if a.life < kills {
			when = fmt.Sprintf("in server life %d of %d", a.life, kills)
		}
		violate("%s: key %s (%s) was told %q at %v %s; committed now: %s", what, a.key, a.path, a.value,
			a.at.Round(time.Millisecond), when, describeStored(ok, o.status, o.value, effects[a.key]))
	}
	for k, vs := range effects {
		if leaseKey(k) {
			continue
		}
		if len(vs) > 1 {
			violate("key %s: fn's effect committed %d times: %v", k, len(vs), vs)
		}
	}
	for k, o := range outcomes {
		if o.status != idemsql.StatusCompleted && !leaseKey(k) {
			violate("key %s: left %s", k, o.status)
		}
		if o.status == idemsql.StatusCompleted && !leaseKey(k) && (len(effects[k]) != 1 || effects[k][0] != o.value) {
			violate("key %s: stored %q, but its effects are %v", k, o.value, effects[k])
		}
	}

	errs := make([]string, 0, len(r.errs))
	for e, n := range r.errs {
		errs = append(errs, fmt.Sprintf("%d × %s", n, e))
	}
	sort.Strings(errs)
	t.Logf("%d kills; %d answers (%d fresh, %d replays) for %d keys; errors, each retried with the same key: %s",
		r.life.Load(), len(r.answers), fresh, replays, len(outcomes), strings.Join(errs, "; "))
	if len(violations) > 0 {
		sort.Strings(violations)
		show := violations
		if len(show) > 30 {
			show = show[:30]
		}
		t.Errorf("%d violations (%d erased replays, in %d of %d server lives; %d lost fresh successes):\n%s", len(violations),
			erasedReplays, len(erasedLives), r.life.Load()+1, lostFresh, strings.Join(show, "\n"))
	}
	// A run that crashed nothing proves nothing.
	if r.life.Load() < 3 || replays == 0 {
		t.Errorf("the run did not exercise crashes: %d kills, %d replays", r.life.Load(), replays)
	}
	return ""
}

func describeStored(ok bool, status, value string, effects []string) string {
	if !ok {
		return fmt.Sprintf("no row, effects %v", effects)
	}
	return fmt.Sprintf("%s %q, effects %v", status, value, effects)
}
