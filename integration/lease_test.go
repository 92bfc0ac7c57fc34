package integration

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
)

// TestLease runs lease mode's guarantees against every backend. The crash
// cases run the holder in a child process (this test binary, re-executed
// into TestLeaseChild) and kill or stop it with real signals.
func TestLease(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			// Backends run side by side, each on tables of its own: the
			// cases wait on real leases, and this keeps the suite short.
			t.Parallel()
			for _, c := range leaseCases {
				t.Run(c.name, func(t *testing.T) { c.run(t, newLeaseEnv(t, b)) })
			}
		})
	}
}

// leaseCase is one case of TestLease; files of their own add theirs in init.
type leaseCase struct {
	name string
	run  func(t *testing.T, e *leaseEnv)
}

var leaseCases = []leaseCase{
	{"RunsOnceAndReplays", testLeaseRunsOnceAndReplays},
	{"KilledHolderTakenOverOnce", testLeaseKilledHolderTakenOver},
	{"PausedHolderFenced", testLeasePausedHolderFenced},
	{"HeartbeatKeepsSlowHolder", testLeaseHeartbeatKeepsSlowHolder},
	{"RaceForStaleRowOneWinner", testLeaseRaceOneWinner},
	{"SweepersResolveEachStaleRowOnce", testLeaseSweepers},
	{"SweepWithoutHandlerAbandons", testLeaseSweepAbandons},
	{"PurgeKeepsLiveLeases", testLeasePurge},
	{"PurgeManyRowsInBatches", testLeasePurgeMany},
	{"StaleHolderFencedAfterReleaseAndDelete", testLeaseStaleHolderFencedABA},
	{"FnErrorRetryKeepsDownstreamKey", testLeaseFnErrorRetry},
	{"PanicInFnLetsLeaseRunOut", testLeasePanicInFn},
	{"UnencodableResultRecorded", testLeaseUnencodableResult},
	{"LostLeaseCancelsFnWithCause", testLeaseLostLeaseCause},
	{"CompletionKeepsResultForTTL", testLeaseCompletionKeepsTTL},
	{"ExpiredInProgressRowTakenOver", testLeaseExpiredInProgress},
	{"RaceWithoutLockStale", testLeaseRaceWithoutLockStale},
	{"OptionsOfTheOtherMode", testLeaseOptionScopes},
}

// receipt is the result of the guarded external call in these tests.
type receipt struct {
	By         string `json:"by"`
	Attempt    int64  `json:"attempt"`
	Downstream string `json:"downstream"`
}

// leaseOps calls the lease-mode API on one backend's own pool type.
type leaseOps struct {
	do    func(ctx context.Context, key string, fn func(context.Context, idemsql.Claim) (receipt, error), opts ...idemsql.Options) (idemsql.Result[receipt], error)
	claim func(ctx context.Context, key string, opts ...idemsql.Options) (idemsql.Lease, error)
	sweep func(ctx context.Context, h idemsql.SweepHandler, opts ...idemsql.Options) (idemsql.SweepStats, error)
	every func(ctx context.Context, every time.Duration, h idemsql.SweepHandler, report func(idemsql.SweepStats, error), opts ...idemsql.Options) error
	purge func(ctx context.Context, opts ...idemsql.Options) (idemsql.PurgeStats, error)
	// run is atomic mode's Run on the same pool, for an fn that writes
	// nothing of its own: the idempotency row is the effect.
	run func(ctx context.Context, key string, fn func(context.Context) (receipt, error), opts ...idemsql.Options) (idemsql.Result[receipt], error)
}

func opsFor[X any](db *idemsql.Store[X]) leaseOps {
	return leaseOps{
		do: func(ctx context.Context, key string, fn func(context.Context, idemsql.Claim) (receipt, error), opts ...idemsql.Options) (idemsql.Result[receipt], error) {
			return idemsql.RunExternal(ctx, db, key, fn, opts...)
		},
		claim: func(ctx context.Context, key string, opts ...idemsql.Options) (idemsql.Lease, error) {
			return idemsql.ClaimLease(ctx, db, key, opts...)
		},
		sweep: func(ctx context.Context, h idemsql.SweepHandler, opts ...idemsql.Options) (idemsql.SweepStats, error) {
			return idemsql.Sweep(ctx, db, h, opts...)
		},
		every: func(ctx context.Context, every time.Duration, h idemsql.SweepHandler, report func(idemsql.SweepStats, error), opts ...idemsql.Options) error {
			return idemsql.SweepEvery(ctx, db, every, h, report, opts...)
		},
		purge: func(ctx context.Context, opts ...idemsql.Options) (idemsql.PurgeStats, error) {
			return idemsql.Purge(ctx, db, opts...)
		},
		run: func(ctx context.Context, key string, fn func(context.Context) (receipt, error), opts ...idemsql.Options) (idemsql.Result[receipt], error) {
			return idemsql.Run(ctx, db, key, func(ctx context.Context, _ X) (receipt, error) { return fn(ctx) }, opts...)
		},
	}
}

type leaseEnv struct {
	*env
	backend string
	dsn     string // what a child process connects with (a file path on SQLite)
	ops     leaseOps
}

func newLeaseEnv(t *testing.T, b backend) *leaseEnv {
	e := &leaseEnv{env: b.setup(t), backend: b.name}
	switch b.name {
	case "postgres-pgx", "postgres-stdlib":
		e.dsn = postgresDSN(t)
	case "mysql":
		e.dsn = mysqlDSN(t)
	case "galera":
		e.dsn = galeraDSNs(t)[0]
	case "sqlite":
		if err := e.db.QueryRow("SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&e.dsn); err != nil {
			t.Fatalf("sqlite path: %v", err)
		}
	}
	if b.name == "postgres-pgx" {
		ops, closeFn, err := openLeaseOps(b.name, e.dsn, e.table)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(closeFn)
		e.ops = ops
	} else {
		e.ops = opsFor(e.store)
	}
	return e
}

// openLeaseOps connects on its own, as a child process does.
func openLeaseOps(backend, dsn, table string) (leaseOps, func(), error) {
	opt := idemsql.Options{Table: table}
	switch backend {
	case "postgres-pgx":
		pool, err := pgxpool.New(context.Background(), dsn)
		if err != nil {
			return leaseOps{}, nil, err
		}
		s, err := idemsql.New(idempostgres.New(pool), opt)
		if err != nil {
			pool.Close()
			return leaseOps{}, nil, err
		}
		return opsFor(s), pool.Close, nil
	}
	var driver, dialect string
	switch backend {
	case "postgres-stdlib":
		driver, dialect = "pgx", "postgres"
	case "mysql", "galera":
		driver, dialect = "mysql", "mysql"
	case "sqlite":
		driver, dialect, dsn = "sqlite", "sqlite", idemsqlite.DSN(dsn)
	case "sqlite-deferred":
		// DEFERRED transactions: readers run side by side in WAL mode, so
		// contenders really do all see a stale row before one writes.
		driver, dialect = "sqlite", "sqlite"
		dsn = "file:" + dsn + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"
	default:
		return leaseOps{}, nil, fmt.Errorf("unknown backend %q", backend)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return leaseOps{}, nil, err
	}
	s, err := newStore(dialect, db, opt)
	if err != nil {
		db.Close()
		return leaseOps{}, nil, err
	}
	return opsFor(s), func() { db.Close() }, nil
}

// Environment of a child process.
const (
	envChild      = "IDEMSQL_LEASE_CHILD" // mode: hang, pause, slow
	envChildArgs  = "IDEMSQL_LEASE_ARGS"  // backend|table|key|lease in ms
	envChildDSN   = "IDEMSQL_LEASE_DSN"
	childHeldLine = "HELD "
	childDoneLine = "RESULT "
)

// TestLeaseChild is not a test: it is the holder process of the crash
// cases, started by startChild.
func TestLeaseChild(t *testing.T) {
	mode := os.Getenv(envChild)
	if mode == "" {
		t.Skip("runs only as a child process of TestLease")
	}
	args := strings.Split(os.Getenv(envChildArgs), "|")
	if len(args) != 4 {
		t.Fatalf("%s=%q", envChildArgs, os.Getenv(envChildArgs))
	}
	backend, table, key := args[0], args[1], args[2]
	ms, _ := strconv.Atoi(args[3])
	ops, closeFn, err := openLeaseOps(backend, os.Getenv(envChildDSN), table)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()

	stdin := bufio.NewReader(os.Stdin)
	res, err := ops.do(context.Background(), key, func(ctx context.Context, l idemsql.Claim) (receipt, error) {
		fmt.Printf("%sattempt=%d downstream=%s\n", childHeldLine, l.Attempt, l.DownstreamKey)
		switch mode {
		case "hang": // until SIGKILL
			time.Sleep(time.Hour)
		case "pause": // until the parent says go; deliberately deaf to ctx
			_, _ = stdin.ReadString('\n')
		case "slow": // until the parent says go, for several leases, kept by the heartbeat alone
			said := make(chan struct{})
			go func() { _, _ = stdin.ReadString('\n'); close(said) }()
			select {
			case <-said:
			case <-ctx.Done(): // the heartbeat lost the lease: a failure of the test
				return receipt{}, context.Cause(ctx)
			}
		}
		return receipt{By: "child", Attempt: l.Attempt, Downstream: l.DownstreamKey}, nil
	}, idemsql.Options{Lease: time.Duration(ms) * time.Millisecond})
	switch {
	case errors.Is(err, idemsql.ErrLeaseLost):
		fmt.Println(childDoneLine + "lease-lost")
	case err != nil:
		fmt.Println(childDoneLine + "error: " + strings.ReplaceAll(err.Error(), "\n", " "))
	default:
		fmt.Printf("%sok by=%s replayed=%v\n", childDoneLine, res.Value.By, res.Replayed)
	}
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
}

func (e *leaseEnv) startChild(t *testing.T, mode, key string, lease time.Duration) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLeaseChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envChild+"="+mode,
		envChildDSN+"="+e.dsn,
		fmt.Sprintf("%s=%s|%s|%s|%d", envChildArgs, e.backend, e.table, key, lease.Milliseconds()))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-c.done
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("child stderr:\n%s", stderr.String())
		}
	})
	return c
}

// expect waits for the child's next line with the prefix and returns the
// rest of it.
func (c *child) expect(t *testing.T, prefix string, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("child exited before printing %q", prefix)
			}
			if rest, found := strings.CutPrefix(line, prefix); found {
				return rest
			}
		case <-deadline:
			t.Fatalf("child printed no %q within %v", prefix, within)
		}
	}
}

func (c *child) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// row reads the audit columns of a key.
func (e *leaseEnv) row(key string) (status string, attempt int64, by string) {
	e.t.Helper()
	status = e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", key)
	attempt = e.queryInt("SELECT attempt FROM "+e.table+" WHERE idem_key = ?", key)
	if status == idemsql.StatusCompleted {
		by = e.resultField(key, "by")
	}
	return status, attempt, by
}

func (e *leaseEnv) wantRow(t *testing.T, key, status string, attempt int64, by string) {
	t.Helper()
	gs, ga, gb := e.row(key)
	if gs != status || ga != attempt || gb != by {
		t.Fatalf("row %q: status %s, attempt %d, by %q; want %s, %d, %q", key, gs, ga, gb, status, attempt, by)
	}
}

// external is the guarded external call: it counts its executions.
func external(by string, calls *atomic.Int64) func(context.Context, idemsql.Claim) (receipt, error) {
	return func(_ context.Context, l idemsql.Claim) (receipt, error) {
		calls.Add(1)
		return receipt{By: by, Attempt: l.Attempt, Downstream: l.DownstreamKey}, nil
	}
}

// testLease is the lease of the holder processes: long enough that "still
// held" checks right after a kill hold on a loaded machine.
const testLease = 3 * time.Second

func testLeaseRunsOnceAndReplays(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var calls atomic.Int64
	fp := idemsql.Options{Fingerprint: "charge 10 EUR"}
	first, err := e.ops.do(ctx, "pay-1", external("a", &calls), fp)
	if err != nil || first.Replayed || first.Value.Attempt != 1 {
		t.Fatalf("first call: %+v, %v", first, err)
	}
	if !strings.HasPrefix(first.Value.Downstream, "pay-1:") {
		t.Fatalf("downstream key %q", first.Value.Downstream)
	}
	again, err := e.ops.do(ctx, "pay-1", external("b", &calls), fp)
	if err != nil || !again.Replayed || again.Value != first.Value {
		t.Fatalf("duplicate: %+v, %v; want a replay of %+v", again, err, first.Value)
	}
	if _, err := e.ops.do(ctx, "pay-1", external("c", &calls), idemsql.Options{Fingerprint: "charge 99 EUR"}); !errors.Is(err, idemsql.ErrFingerprintMismatch) {
		t.Fatalf("other request: %v, want ErrFingerprintMismatch", err)
	}
	if c, err := e.ops.claim(ctx, "pay-1", fp); err != nil || c.Held || !strings.Contains(string(c.Result), `"by":"a"`) {
		t.Fatalf("ClaimLease of a completed key: %+v, %v", c, err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("external call ran %d times, want 1", n)
	}
	e.wantRow(t, "pay-1", idemsql.StatusCompleted, 1, "a")
	if e.queryInt("SELECT COUNT(*) FROM "+e.table+" WHERE idem_key = ? AND lease_until IS NOT NULL", "pay-1") != 1 {
		t.Fatal("lease_until not recorded")
	}

	// fn's error ends the lease without an outcome: the row stays, marked
	// released, and the next call runs again (see FnErrorRetryKeepsDownstreamKey).
	boom := errors.New("gateway timeout")
	if _, err := e.ops.do(ctx, "pay-2", func(context.Context, idemsql.Claim) (receipt, error) { return receipt{}, boom }); err != boom {
		t.Fatalf("fn error: %v, want fn's own error unchanged", err)
	}
	e.wantReleased(t, "pay-2", 1)
	// A permanent failure is recorded when asked, and replayed.
	decline := func(context.Context, idemsql.Claim) (receipt, error) {
		return receipt{}, idemsql.Permanent("card_declined", errors.New("declined"))
	}
	if _, err := e.ops.do(ctx, "pay-3", decline, idemsql.Options{RecordFailures: true}); !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatalf("permanent failure: %v", err)
	}
	var fe *idemsql.Error
	if res, err := e.ops.do(ctx, "pay-3", external("x", &calls)); !errors.Is(err, idemsql.ErrFailureRecorded) || !errors.As(err, &fe) || !res.Replayed || fe.Class != "card_declined" {
		t.Fatalf("duplicate of a recorded failure: %v", err)
	}

	// After the retention ran out the key runs again, with a new attempt and
	// a new downstream key: it is a new operation.
	e.expire("pay-1")
	rerun, err := e.ops.do(ctx, "pay-1", external("d", &calls), fp)
	if err != nil || rerun.Replayed || rerun.Value.Attempt != 2 {
		t.Fatalf("after expiry: %+v, %v", rerun, err)
	}
	if rerun.Value.Downstream == first.Value.Downstream {
		t.Fatalf("downstream key %q reused after the retention ran out", rerun.Value.Downstream)
	}

	// Bad use is refused before any SQL.
	if _, err := e.ops.do(ctx, "pay-4", external("x", &calls), idemsql.Options{Lease: time.Second, Heartbeat: 600 * time.Millisecond}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("heartbeat more than half the lease: %v", err)
	}
	if _, err := e.ops.do(ctx, "", external("x", &calls)); !errors.Is(err, idemsql.ErrInvalidKey) {
		t.Fatalf("empty key: %v", err)
	}
}

// A holder process dies mid-call (SIGKILL). Until its lease runs out the key
// is in progress; then another caller takes it over, with the same
// downstream key, and exactly one completion is recorded.
func testLeaseKilledHolderTakenOver(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	c := e.startChild(t, "hang", "kill-1", testLease)
	held := c.expect(t, childHeldLine, 15*time.Second)
	if !strings.HasPrefix(held, "attempt=1 ") {
		t.Fatalf("child holds %q", held)
	}
	childDownstream := strings.TrimPrefix(held, "attempt=1 downstream=")

	var calls atomic.Int64
	if _, err := e.ops.do(ctx, "kill-1", external("parent", &calls)); !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatalf("while the child holds the key: %v, want ErrInProgress", err)
	}
	c.signal(t, syscall.SIGKILL)
	<-c.done
	// Its lease is still live: no takeover yet.
	if _, err := e.ops.do(ctx, "kill-1", external("parent", &calls)); !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatalf("right after the kill: %v, want ErrInProgress", err)
	}
	e.wantRow(t, "kill-1", idemsql.StatusInProgress, 1, "")

	wctx, cancel := context.WithTimeout(ctx, 10*testLease)
	defer cancel()
	res, err := e.ops.do(wctx, "kill-1", external("parent", &calls), idemsql.Options{LeaseWait: 50 * time.Millisecond})
	if err != nil || res.Replayed || res.Value.Attempt != 2 {
		t.Fatalf("takeover: %+v, %v", res, err)
	}
	if res.Value.Downstream != childDownstream {
		t.Fatalf("downstream key changed across the takeover: %q, child had %q", res.Value.Downstream, childDownstream)
	}
	dup, err := e.ops.do(ctx, "kill-1", external("late", &calls))
	if err != nil || !dup.Replayed || dup.Value.By != "parent" {
		t.Fatalf("after the takeover: %+v, %v", dup, err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the parent's call ran %d times, want 1", n)
	}
	e.wantRow(t, "kill-1", idemsql.StatusCompleted, 2, "parent")
}

// A holder process is paused (SIGSTOP) past its lease; another caller takes
// over and completes; the holder resumes (SIGCONT), finishes its call and
// tries to record it: fenced, ErrLeaseLost, the row keeps the new outcome.
func testLeasePausedHolderFenced(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	c := e.startChild(t, "pause", "stop-1", testLease)
	c.expect(t, childHeldLine+"attempt=1 ", 15*time.Second)
	c.signal(t, syscall.SIGSTOP)

	var calls atomic.Int64
	wctx, cancel := context.WithTimeout(ctx, 10*testLease)
	defer cancel()
	res, err := e.ops.do(wctx, "stop-1", external("parent", &calls), idemsql.Options{LeaseWait: 50 * time.Millisecond})
	if err != nil || res.Value.Attempt != 2 {
		t.Fatalf("takeover of the paused holder: %+v, %v", res, err)
	}
	e.wantRow(t, "stop-1", idemsql.StatusCompleted, 2, "parent")

	c.signal(t, syscall.SIGCONT)
	if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	if got := c.expect(t, childDoneLine, 15*time.Second); got != "lease-lost" {
		t.Fatalf("resumed holder got %q, want lease-lost", got)
	}
	e.wantRow(t, "stop-1", idemsql.StatusCompleted, 2, "parent")
	if n := calls.Load(); n != 1 {
		t.Fatalf("parent's call ran %d times", n)
	}
}

// A live holder whose call lasts several leases keeps the key: the
// heartbeat renews the lease, so neither callers nor a sweeper take it.
func testLeaseHeartbeatKeepsSlowHolder(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	const lease = time.Second
	const probes = 15 // a fifth of a lease apart: three leases at least, however slow each probe is
	c := e.startChild(t, "slow", "slow-1", lease)
	c.expect(t, childHeldLine+"attempt=1 ", 15*time.Second)

	// The holder's fn runs until it is told to stop; meanwhile contenders
	// probe the key and a sweeper looks for stale claims, for longer than
	// several leases. Only the heartbeat keeps the key the holder's.
	var calls atomic.Int64
	for range probes {
		select {
		case line, ok := <-c.lines:
			t.Fatalf("the holder stopped early: %q (open: %v)", line, ok)
		case <-time.After(lease / 5):
		}
		if _, err := e.ops.do(ctx, "slow-1", external("parent", &calls), idemsql.Options{Lease: lease}); !errors.Is(err, idemsql.ErrInProgress) {
			t.Fatalf("probe: %v, want ErrInProgress", err)
		}
		if st, err := e.ops.sweep(ctx, nil); err != nil || st.Found != 0 {
			t.Fatalf("sweep during a live lease: %+v, %v", st, err)
		}
	}
	if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	if rest := c.expect(t, childDoneLine, 20*lease); rest != "ok by=child replayed=false" {
		t.Fatalf("slow holder: %q", rest)
	}
	res, err := e.ops.do(ctx, "slow-1", external("parent", &calls))
	if err != nil || !res.Replayed || res.Value.By != "child" || res.Value.Attempt != 1 {
		t.Fatalf("after the slow holder: %+v, %v", res, err)
	}
	if calls.Load() != 0 {
		t.Fatal("a contender ran while the holder was alive")
	}
	e.wantRow(t, "slow-1", idemsql.StatusCompleted, 1, "child")
}

// staleClaim leaves a claim whose lease has run out, as a dead holder would.
func (e *leaseEnv) staleClaim(t *testing.T, key string) idemsql.Lease {
	return e.staleClaimWith(t, e.ops, key)
}

func (e *leaseEnv) staleClaimWith(t *testing.T, ops leaseOps, key string) idemsql.Lease {
	t.Helper()
	c, err := ops.claim(context.Background(), key, idemsql.Options{Lease: 20 * time.Millisecond})
	if err != nil || !c.Held {
		t.Fatalf("claim %q: %+v, %v", key, c, err)
	}
	return c
}

// N workers race for one stale row: exactly one takes it over.
func testLeaseRaceOneWinner(t *testing.T, e *leaseEnv) {
	ops := e.ops
	if e.backend == "sqlite" {
		var closeFn func()
		var err error
		if ops, closeFn, err = openLeaseOps("sqlite-deferred", e.dsn, e.table); err != nil {
			t.Fatal(err)
		}
		defer closeFn()
	}
	raceOneWinner(t, e, ops, "race")
}

func raceOneWinner(t *testing.T, e *leaseEnv, ops leaseOps, prefix string) {
	ctx := context.Background()
	const workers = 16
	for round := range 3 {
		key := fmt.Sprintf("%s-%d", prefix, round)
		old := e.staleClaimWith(t, ops, key)
		time.Sleep(60 * time.Millisecond)

		var wg sync.WaitGroup
		var winners []idemsql.Lease
		var mu sync.Mutex
		start := make(chan struct{})
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c, err := ops.claim(ctx, key, idemsql.Options{Lease: 10 * time.Second})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && c.Held:
					winners = append(winners, c)
				case errors.Is(err, idemsql.ErrInProgress):
				default:
					t.Errorf("contender: %+v, %v", c, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d contenders took the stale row over, want 1", round, len(winners))
		}
		w := winners[0]
		if w.Attempt != 2 || w.DownstreamKey != old.DownstreamKey {
			t.Fatalf("winner %+v, old holder %+v", w, old)
		}
		if err := old.Complete(ctx, receipt{By: "old"}); !errors.Is(err, idemsql.ErrLeaseLost) {
			t.Fatalf("old holder's completion: %v, want ErrLeaseLost", err)
		}
		if err := old.Renew(ctx); !errors.Is(err, idemsql.ErrLeaseLost) {
			t.Fatalf("old holder's renewal: %v, want ErrLeaseLost", err)
		}
		if err := w.Complete(ctx, receipt{By: "winner", Attempt: w.Attempt}); err != nil {
			t.Fatalf("winner's completion: %v", err)
		}
		if err := old.Release(ctx); !errors.Is(err, idemsql.ErrLeaseLost) {
			t.Fatalf("old holder's release: %v, want ErrLeaseLost", err)
		}
		e.wantRow(t, key, idemsql.StatusCompleted, 2, "winner")
	}
}

// Several sweepers at once resolve every stale row exactly once, leave live
// leases alone, and fence out the dead holders.
func testLeaseSweepers(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	const stale = 24
	var old []idemsql.Lease
	for i := range stale {
		old = append(old, e.staleClaim(t, fmt.Sprintf("sweep-%02d", i)))
	}
	live, err := e.ops.claim(ctx, "sweep-live", idemsql.Options{Lease: 30 * time.Second})
	if err != nil || !live.Held {
		t.Fatalf("live claim: %+v, %v", live, err)
	}
	time.Sleep(60 * time.Millisecond)

	var handled sync.Map // key → *atomic.Int64
	h := func(ctx context.Context, s idemsql.Stale) (idemsql.Resolution, error) {
		n, _ := handled.LoadOrStore(s.Key, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if s.Attempt != 2 || s.PreviousOwner == "" || !strings.HasPrefix(s.DownstreamKey, s.Key+":") {
			return idemsql.Resolution{}, fmt.Errorf("stale %+v", s)
		}
		time.Sleep(5 * time.Millisecond) // "ask the payment provider"
		return idemsql.Resolution{Outcome: idemsql.ResolveCompleted, Result: receipt{By: "sweeper", Attempt: s.Attempt}}, nil
	}
	var wg sync.WaitGroup
	stats := make([]idemsql.SweepStats, 4)
	for i := range stats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			stats[i], err = e.ops.sweep(ctx, h, idemsql.Options{BatchSize: 5, Lease: 10 * time.Second})
			if err != nil {
				t.Errorf("sweeper %d: %+v, %v", i, stats[i], err)
			}
		}()
	}
	wg.Wait()
	var found, completed int
	for _, s := range stats {
		found += s.Found
		completed += s.Completed
	}
	if found != stale || completed != stale {
		t.Fatalf("sweepers found %d and completed %d stale rows, want %d: %+v", found, completed, stale, stats)
	}
	for i, l := range old {
		key := fmt.Sprintf("sweep-%02d", i)
		n, ok := handled.Load(key)
		if !ok || n.(*atomic.Int64).Load() != 1 {
			t.Fatalf("%s handled %v times", key, n)
		}
		e.wantRow(t, key, idemsql.StatusCompleted, 2, "sweeper")
		if err := l.Complete(ctx, receipt{By: "dead"}); !errors.Is(err, idemsql.ErrLeaseLost) {
			t.Fatalf("dead holder of %s: %v, want ErrLeaseLost", key, err)
		}
	}
	if _, ok := handled.Load("sweep-live"); ok {
		t.Fatal("a sweeper handled a live lease")
	}
	if err := live.Complete(ctx, receipt{By: "live"}); err != nil {
		t.Fatalf("live holder after the sweep: %v", err)
	}
	e.wantRow(t, "sweep-live", idemsql.StatusCompleted, 1, "live")

	// A background sweeper picks up a row that goes stale later, and stops
	// with its context.
	bctx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() {
		stopped <- e.ops.every(bctx, 20*time.Millisecond, func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
			return idemsql.Resolution{Outcome: idemsql.ResolveReleased}, nil
		}, nil)
	}()
	e.staleClaim(t, "sweep-late")
	deadline := time.Now().Add(5 * time.Second)
	for e.released("sweep-late") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("background sweeper did not release the stale claim")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("SweepEvery: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SweepEvery did not stop with its context")
	}
}

// Without a handler a stale claim is marked abandoned; duplicates get the
// failure back instead of running again.
func testLeaseSweepAbandons(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	old := e.staleClaim(t, "abandon-1")
	time.Sleep(60 * time.Millisecond)
	st, err := e.ops.sweep(ctx, nil)
	if err != nil || st.Found != 1 || st.Abandoned != 1 {
		t.Fatalf("sweep: %+v, %v", st, err)
	}
	if s, a, _ := e.row("abandon-1"); s != idemsql.StatusFailed || a != 2 {
		t.Fatalf("abandoned row: %s at attempt %d", s, a)
	}
	var calls atomic.Int64
	var fe *idemsql.Error
	if _, err := e.ops.do(ctx, "abandon-1", external("x", &calls)); !errors.As(err, &fe) || fe.Class != idemsql.AbandonedClass {
		t.Fatalf("duplicate of an abandoned key: %v", err)
	}
	if err := old.Complete(ctx, receipt{By: "dead"}); !errors.Is(err, idemsql.ErrLeaseLost) {
		t.Fatalf("dead holder: %v, want ErrLeaseLost", err)
	}
	if st, err := e.ops.sweep(ctx, nil); err != nil || st.Found != 0 {
		t.Fatalf("second sweep: %+v, %v", st, err)
	}

	// A claim swept after its retention ran out: the abandoned outcome is
	// kept for a TTL from now, so a duplicate still gets the failure and
	// never runs again under a new downstream key.
	e.staleClaim(t, "abandon-2")
	e.expirePrefix(t, "abandon-2")
	time.Sleep(60 * time.Millisecond)
	if st, err := e.ops.sweep(ctx, nil); err != nil || st.Abandoned != 1 {
		t.Fatalf("sweep of an expired stale claim: %+v, %v", st, err)
	}
	if _, err := e.ops.do(ctx, "abandon-2", external("x", &calls)); !errors.As(err, &fe) || fe.Class != idemsql.AbandonedClass {
		t.Fatalf("duplicate of a claim abandoned past its retention: %v", err)
	}
	if calls.Load() != 0 {
		t.Fatalf("the external call ran %d times after abandonment", calls.Load())
	}
}

// expirePrefix moves the retention of every key with the prefix into the
// past, by the database's clock.
func (e *leaseEnv) expirePrefix(t *testing.T, prefix string) {
	t.Helper()
	stmt := e.q("UPDATE " + e.table + " SET expires_at = " + e.secondsAgo(1) + " WHERE idem_key LIKE ?")
	if _, err := e.db.Exec(stmt, prefix+"%"); err != nil {
		t.Fatalf("expire: %v", err)
	}
}

// Purge deletes expired rows in batches and never a live lease, even one
// past its retention.
func testLeasePurge(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var calls atomic.Int64
	for i := range 23 {
		if _, err := e.ops.do(ctx, fmt.Sprintf("old-%02d", i), external("x", &calls)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.ops.do(ctx, "fresh", external("x", &calls)); err != nil {
		t.Fatal(err)
	}
	live, err := e.ops.claim(ctx, "live", idemsql.Options{Lease: 30 * time.Second})
	if err != nil || !live.Held {
		t.Fatalf("live claim: %+v, %v", live, err)
	}
	e.staleClaim(t, "old-stale") // in_progress: never purged, left to Sweep
	time.Sleep(60 * time.Millisecond)
	e.expirePrefix(t, "old-")
	e.expirePrefix(t, "live")

	// On PostgreSQL and MySQL/MariaDB a row another transaction holds is
	// skipped, not waited for: here an atomic-mode call re-claiming an
	// expired key.
	var holder testTx
	if e.dialect != "sqlite" {
		if _, err := e.ops.do(ctx, "old-held", external("x", &calls)); err != nil {
			t.Fatal(err)
		}
		e.expirePrefix(t, "old-held")
		holder, err = e.begin(ctx, sql.LevelDefault)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Rollback(ctx)
		if _, err := doIn(ctx, holder, "old-held", func(context.Context) (int, error) { return 1, nil }); err != nil {
			t.Fatal(err)
		}
	}

	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := e.ops.purge(pctx, idemsql.Options{BatchSize: 10})
	if err != nil {
		t.Fatalf("purge: %+v, %v", st, err)
	}
	if st.Deleted != 23 || st.Batches != 3 {
		t.Fatalf("purge: %+v, want 23 rows in 3 batches", st)
	}
	for _, key := range []string{"fresh", "live", "old-stale"} {
		if e.idemRows(key) != 1 {
			t.Fatalf("purge deleted %q", key)
		}
	}
	if n := e.queryInt("SELECT COUNT(*) FROM " + e.table + " WHERE idem_key LIKE 'old-%' AND idem_key NOT IN ('old-held', 'old-stale')"); n != 0 {
		t.Fatalf("%d expired rows left", n)
	}
	if holder != nil {
		if err := holder.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if e.idemRows("old-held") != 1 {
			t.Fatal("purge deleted a row another transaction held")
		}
	}
	if err := live.Complete(ctx, receipt{By: "live"}); err != nil {
		t.Fatalf("live holder after the purge: %v", err)
	}
	// Completion keeps the result for the TTL from now, even past the
	// claim's retention.
	if st, err := e.ops.purge(ctx); err != nil || st.Deleted != 0 {
		t.Fatalf("second purge (the live row, completed after its retention): %+v, %v", st, err)
	}
	e.wantRow(t, "live", idemsql.StatusCompleted, 1, "live")
}

// Purge deletes thousands of expired rows, in batches larger and smaller
// than one DELETE's share of keys, and still never a live lease nor an
// in_progress row past its retention.
func testLeasePurgeMany(t *testing.T, e *leaseEnv) {
	ctx := context.Background()
	var calls atomic.Int64
	live, err := e.ops.claim(ctx, "bulk-live", idemsql.Options{Lease: 30 * time.Second})
	if err != nil || !live.Held {
		t.Fatalf("live claim: %+v, %v", live, err)
	}
	e.staleClaim(t, "bulk-stale")
	if _, err := e.ops.do(ctx, "fresh", external("x", &calls)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)

	// One batch of 1200: its keys are deleted in several statements.
	e.insertCompleted(t, "bulk-a-", 1000)
	e.expirePrefix(t, "bulk-")
	st, err := e.ops.purge(ctx, idemsql.Options{BatchSize: 1200})
	if err != nil || st.Deleted != 1000 || st.Batches != 1 {
		t.Fatalf("purge: %+v, %v; want 1000 rows in 1 batch", st, err)
	}
	// Small batches: eight full ones and a last, empty one.
	e.insertCompleted(t, "bulk-b-", 2000)
	e.expirePrefix(t, "bulk-")
	st, err = e.ops.purge(ctx, idemsql.Options{BatchSize: 250})
	if err != nil || st.Deleted != 2000 || st.Batches != 9 {
		t.Fatalf("purge: %+v, %v; want 2000 rows in 9 batches", st, err)
	}

	if n := e.queryInt("SELECT COUNT(*) FROM " + e.table); n != 3 {
		t.Fatalf("%d rows left, want the live lease, the stale claim and the fresh row", n)
	}
	e.wantRow(t, "bulk-stale", idemsql.StatusInProgress, 1, "")
	if err := live.Complete(ctx, receipt{By: "live"}); err != nil {
		t.Fatalf("live holder after the purge: %v", err)
	}
	e.wantRow(t, "bulk-live", idemsql.StatusCompleted, 1, "live")
}

// insertCompleted inserts n completed and failed rows, prefix followed by a
// number, a few hundred per statement.
func (e *leaseEnv) insertCompleted(t *testing.T, prefix string, n int) {
	t.Helper()
	now := map[string]string{
		"postgres": "clock_timestamp()",
		"mysql":    "UTC_TIMESTAMP(6)",
		"sqlite":   "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
	}[e.dialect]
	const chunk = 500
	for lo := 0; lo < n; lo += chunk {
		var sb strings.Builder
		var args []any
		sb.WriteString("INSERT INTO " + e.table + " (idem_key, status, attempt, created_at, updated_at, expires_at) VALUES ")
		for i := lo; i < min(lo+chunk, n); i++ {
			if i > lo {
				sb.WriteString(", ")
			}
			sb.WriteString("(?, ?, 1, " + now + ", " + now + ", " + now + ")")
			status := idemsql.StatusCompleted
			if i%3 == 0 {
				status = idemsql.StatusFailed
			}
			args = append(args, fmt.Sprintf("%s%05d", prefix, i), status)
		}
		if _, err := e.db.Exec(e.q(sb.String()), args...); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
}
