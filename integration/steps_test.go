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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
)

// TestSteps runs RunSteps's guarantees against every backend: each step's
// effect once however the holder dies, the fence, changed code, failures
// and the completer. The crash cases run the holder in a child process
// (this test binary, re-executed into TestStepsChild) and kill or stop it
// with real signals at each step boundary.
func TestSteps(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range stepsCases {
				t.Run(c.name, func(t *testing.T) { c.run(t, newStepsEnv(t, b)) })
			}
		})
	}
}

var stepsCases = []struct {
	name string
	run  func(t *testing.T, e *stepsEnv)
}{
	{"RacersRunEachStepOnce", testStepsRace},
	{"KilledAtEveryBoundaryResumes", testStepsKilled},
	{"FencedOutHolderCommitsNothing", testStepsFenced},
	{"ChangedCodeRefused", testStepsChanged},
	{"PermanentFailureCompensatedAndReplayed", testStepsPermanent},
	{"CompleterFinishesKilledRun", testStepsCompleterKilled},
	{"CompleterFinishesReleasedRun", testStepsCompleterReleased},
	{"StepTxCommitUnknownSettled", testStepsCommitUnknown},
	{"StepTxEndedUnderFnRecordsNothing", testStepsTxEndedUnderFn},
}

// stepsIn and stepsOut are the input and result of the tested operation.
type stepsIn struct {
	Key string `json:"key"`
}

type stepsOut struct {
	Results []string `json:"results"`
}

// stepsPlan is what the tested operation does: its steps in order (names
// beginning with "invoice" are StepTx steps, the others external Steps);
// at is called at each point ("charge:before", "invoice:after",
// "email:before-step", "end", ...); fail makes a step's fn fail after its
// effect; compensate is an external step run after a permanent failure.
type stepsPlan struct {
	steps      []string
	at         func(point string)
	fail       map[string]error
	compensate string
	// deaf runs the steps without fn's cancellation, as a holder that
	// ignores its context would: only the fence stops it.
	deaf bool
}

var defaultSteps = []string{"charge", "invoice", "email"}

// stepsOps calls RunSteps and Sweep on one backend's own pool type.
type stepsOps struct {
	run       func(ctx context.Context, key string, p stepsPlan, opts ...idemsql.Options) (idemsql.Result[stepsOut], error)
	completer func(p stepsPlan, opts ...idemsql.Options) idemsql.SweepHandler
	sweep     func(ctx context.Context, h idemsql.SweepHandler, opts ...idemsql.Options) (idemsql.SweepStats, error)
	lookup    func(ctx context.Context, key string) (idemsql.Record, bool, error)
}

// stepsFn is the tested operation. ext records an external effect (an
// autocommitted row in the business table, keyed by the downstream key);
// insert is a StepTx step's write in its transaction.
func stepsFn[X any](p stepsPlan, ext func(ctx context.Context, label string) error, insert func(ctx context.Context, tx X, label string) error) func(context.Context, *idemsql.Steps[X], stepsIn) (stepsOut, error) {
	at := func(point string) {
		if p.at != nil {
			p.at(point)
		}
	}
	steps := p.steps
	if steps == nil {
		steps = defaultSteps
	}
	external := func(ctx context.Context, s *idemsql.Steps[X], name string) (string, error) {
		return idemsql.Step(ctx, s, name, func(ctx context.Context, c idemsql.Claim) (string, error) {
			at(name + ":before")
			if err := ext(ctx, c.DownstreamKey); err != nil {
				return "", err
			}
			at(name + ":after")
			if err := p.fail[name]; err != nil {
				return "", err
			}
			return c.DownstreamKey, nil
		})
	}
	return func(ctx context.Context, s *idemsql.Steps[X], in stepsIn) (stepsOut, error) {
		var out stepsOut
		if p.deaf {
			ctx = context.WithoutCancel(ctx)
		}
		for _, name := range steps {
			at(name + ":before-step")
			var r string
			var err error
			if strings.HasPrefix(name, "invoice") {
				r, err = idemsql.StepTx(ctx, s, name, func(ctx context.Context, tx X) (string, error) {
					at(name + ":before")
					if err := insert(ctx, tx, in.Key+"#"+name); err != nil {
						return "", err
					}
					at(name + ":after")
					return "row", p.fail[name]
				})
			} else {
				r, err = external(ctx, s, name)
			}
			if _, permanent := idemsql.IsPermanent(err); permanent && p.compensate != "" {
				if _, cerr := external(ctx, s, p.compensate); cerr != nil {
					return out, cerr
				}
			}
			if err != nil {
				return out, err
			}
			out.Results = append(out.Results, r)
		}
		at("end")
		return out, nil
	}
}

func stepsOpsFor[X any](s *idemsql.Store[X], ext func(context.Context, string) error, insert func(context.Context, X, string) error) stepsOps {
	return stepsOps{
		run: func(ctx context.Context, key string, p stepsPlan, opts ...idemsql.Options) (idemsql.Result[stepsOut], error) {
			return idemsql.RunSteps(ctx, s, key, stepsIn{Key: key}, stepsFn(p, ext, insert), opts...)
		},
		completer: func(p stepsPlan, opts ...idemsql.Options) idemsql.SweepHandler {
			return idemsql.Completer(s, stepsFn(p, ext, insert), opts...)
		},
		sweep: func(ctx context.Context, h idemsql.SweepHandler, opts ...idemsql.Options) (idemsql.SweepStats, error) {
			return idemsql.Sweep(ctx, s, h, opts...)
		},
		lookup: func(ctx context.Context, key string) (idemsql.Record, bool, error) {
			return idemsql.Lookup(ctx, s, key)
		},
	}
}

// openStepsOps connects on its own, as a child process does: the store on
// the backend's own driver, and a database/sql pool for the effects.
func openStepsOps(backend, dsn, table, biz string) (stepsOps, func(), error) {
	opt := idemsql.Options{Table: table}
	var driver, dialect string
	switch backend {
	case "postgres-pgx", "postgres-stdlib":
		driver, dialect = "pgx", "postgres"
	case "mysql", "galera":
		driver, dialect = "mysql", "mysql"
	case "sqlite":
		driver, dialect, dsn = "sqlite", "sqlite", idemsqlite.DSN(dsn)
	default:
		return stepsOps{}, nil, fmt.Errorf("unknown backend %q", backend)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return stepsOps{}, nil, err
	}
	insertSQL := "INSERT INTO " + biz + " (idem_key, amount) VALUES (?, 1)"
	if dialect == "postgres" {
		insertSQL = "INSERT INTO " + biz + " (idem_key, amount) VALUES ($1, 1)"
	}
	ext := func(ctx context.Context, label string) error {
		_, err := db.ExecContext(context.WithoutCancel(ctx), insertSQL, label)
		return err
	}
	if backend == "postgres-pgx" {
		pool, err := pgxpool.New(context.Background(), dsn)
		if err != nil {
			db.Close()
			return stepsOps{}, nil, err
		}
		s, err := idemsql.New(idempostgres.New(pool), opt)
		if err != nil {
			pool.Close()
			db.Close()
			return stepsOps{}, nil, err
		}
		return stepsOpsFor(s, ext, func(ctx context.Context, tx pgx.Tx, label string) error {
			_, err := tx.Exec(ctx, insertSQL, label)
			return err
		}), func() { pool.Close(); db.Close() }, nil
	}
	s, err := newStore(dialect, db, opt)
	if err != nil {
		db.Close()
		return stepsOps{}, nil, err
	}
	return stepsOpsFor(s, ext, func(ctx context.Context, tx *sql.Tx, label string) error {
		_, err := tx.ExecContext(ctx, insertSQL, label)
		return err
	}), func() { db.Close() }, nil
}

type stepsEnv struct {
	*leaseEnv
	steps stepsOps
}

func newStepsEnv(t *testing.T, b backend) *stepsEnv {
	e := &stepsEnv{leaseEnv: newLeaseEnv(t, b)}
	ops, closeFn, err := openStepsOps(b.name, e.dsn, e.table, e.biz)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	e.steps = ops
	return e
}

// stepsLease is the lease of the tests' holders: short, since the crash
// cases wait for it to run out; the survivors wait for it with LeaseWait.
const stepsLease = time.Second

var stepsOpts = idemsql.Options{Lease: stepsLease, LeaseWait: 20 * time.Millisecond}

// effects counts the rows an external step wrote under key's downstream
// keys for the step (any downstream key: a run with another would show
// here), and the distinct downstream keys among them.
func (e *stepsEnv) effects(key, step string) (rows, keys int64) {
	e.t.Helper()
	pattern := key + ":%/" + step
	return e.queryInt("SELECT COUNT(*) FROM "+e.biz+" WHERE idem_key LIKE ?", pattern),
		e.queryInt("SELECT COUNT(DISTINCT idem_key) FROM "+e.biz+" WHERE idem_key LIKE ?", pattern)
}

// wantEffects checks each step's effect count and that every run of a
// step used one downstream key.
func (e *stepsEnv) wantEffects(t *testing.T, key string, want map[string]int64) {
	t.Helper()
	for step, n := range want {
		var rows, keys int64
		if strings.HasPrefix(step, "invoice") {
			rows, keys = e.queryInt("SELECT COUNT(*) FROM "+e.biz+" WHERE idem_key = ?", key+"#"+step), 1
		} else {
			rows, keys = e.effects(key, step)
		}
		if rows != n || n > 0 && keys != 1 {
			t.Errorf("step %s: %d effects under %d downstream keys, want %d under one", step, rows, keys, n)
		}
	}
}

// wantSteps checks the stored progress: each step's state and runs.
func (e *stepsEnv) wantSteps(t *testing.T, key string, want ...string) idemsql.Record {
	t.Helper()
	r, found, err := e.steps.lookup(context.Background(), key)
	if err != nil || !found {
		t.Fatalf("Lookup: %v, found %v", err, found)
	}
	var got []string
	for _, s := range r.Steps {
		got = append(got, fmt.Sprintf("%s %s %d", s.Name, s.State, s.Runs))
		if s.Started.IsZero() || s.State != "started" && s.Finished.Before(s.Started) {
			t.Errorf("step %s: started %v, finished %v", s.Name, s.Started, s.Finished)
		}
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("steps %q, want %q", got, want)
	}
	return r
}

func testStepsRace(t *testing.T, e *stepsEnv) {
	const n = 8
	key := "steps:race"
	var wg sync.WaitGroup
	results := make([]idemsql.Result[stepsOut], n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.steps.run(context.Background(), key, stepsPlan{}, stepsOpts)
		}()
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("racer %d: %v", i, errs[i])
		}
		if !results[i].Replayed {
			fresh++
		}
		if strings.Join(results[i].Value.Results, ",") != strings.Join(results[0].Value.Results, ",") {
			t.Errorf("racer %d got %v, racer 0 %v", i, results[i].Value, results[0].Value)
		}
	}
	if fresh != 1 {
		t.Errorf("%d racers ran the steps, want 1", fresh)
	}
	e.wantEffects(t, key, map[string]int64{"charge": 1, "invoice": 1, "email": 1})
	r := e.wantSteps(t, key, "charge done 1", "invoice done 1", "email done 1")
	if r.Status != idemsql.StatusCompleted {
		t.Errorf("status %s", r.Status)
	}
}

// Environment of a steps child process.
const (
	envStepsChild = "IDEMSQL_STEPS_CHILD" // backend|table|biz|key|point|mode
	stepsAtLine   = "AT "
)

// TestStepsChild is not a test: it is the holder process of the crash
// cases, started by startStepsChild. At its point it prints a line and
// hangs (mode "hang": until killed) or waits for a line on stdin (mode
// "pause": the parent stops it meanwhile).
func TestStepsChild(t *testing.T) {
	args := strings.Split(os.Getenv(envStepsChild), "|")
	if len(args) != 6 {
		t.Skip("runs only as a child process of TestSteps")
	}
	backend, table, biz, key, point, mode := args[0], args[1], args[2], args[3], args[4], args[5]
	ops, closeFn, err := openStepsOps(backend, os.Getenv(envChildDSN), table, biz)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	stdin := bufio.NewReader(os.Stdin)
	res, err := ops.run(context.Background(), key, stepsPlan{at: func(p string) {
		if p != point {
			return
		}
		fmt.Println(stepsAtLine + p)
		if mode == "hang" {
			time.Sleep(time.Hour)
		}
		_, _ = stdin.ReadString('\n')
	}, deaf: mode == "pause"}, idemsql.Options{Lease: stepsLease})
	switch {
	case errors.Is(err, idemsql.ErrLeaseLost):
		fmt.Println(childDoneLine + "lease-lost")
	case err != nil:
		fmt.Println(childDoneLine + "error: " + strings.ReplaceAll(err.Error(), "\n", " "))
	default:
		fmt.Printf("%sok %v replayed=%v\n", childDoneLine, res.Value.Results, res.Replayed)
	}
}

func (e *stepsEnv) startStepsChild(t *testing.T, key, point, mode string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStepsChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envChildDSN+"="+e.dsn,
		envStepsChild+"="+strings.Join([]string{e.backend, e.table, e.biz, key, point, mode}, "|"))
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

// killAt runs a holder in a child process and SIGKILLs it at point.
func (e *stepsEnv) killAt(t *testing.T, key, point string) {
	t.Helper()
	c := e.startStepsChild(t, key, point, "hang")
	c.expect(t, stepsAtLine+point, time.Minute)
	c.signal(t, syscall.SIGKILL)
	<-c.done
}

// Every boundary: before and inside each step (before and after its
// effect), and after the last. The next caller takes the dead holder's
// claim over once its lease runs out and resumes: steps stored done never
// run again, the StepTx step's row is written once, and an external step
// runs again only when the holder died inside it, with the same downstream
// key.
func testStepsKilled(t *testing.T, e *stepsEnv) {
	points := []string{"charge:before", "charge:after", "invoice:before-step", "invoice:before", "invoice:after",
		"email:before-step", "email:before", "email:after", "end"}
	for i, point := range points {
		t.Run(point, func(t *testing.T) {
			key := "steps:killed:" + strconv.Itoa(i)
			e.killAt(t, key, point)
			res, err := e.steps.run(context.Background(), key, stepsPlan{}, stepsOpts)
			if err != nil || res.Replayed || len(res.Value.Results) != 3 {
				t.Fatalf("resume: %+v, %v", res, err)
			}
			want := map[string]int64{"charge": 1, "invoice": 1, "email": 1}
			runs := map[string]int{"charge": 1, "invoice": 1, "email": 1}
			switch point {
			case "charge:after":
				want["charge"] = 2
				runs["charge"] = 2
			case "charge:before":
				runs["charge"] = 2
			case "email:after":
				want["email"] = 2
				runs["email"] = 2
			case "email:before":
				runs["email"] = 2
			}
			e.wantEffects(t, key, want)
			e.wantSteps(t, key, fmt.Sprintf("charge done %d", runs["charge"]), "invoice done 1",
				fmt.Sprintf("email done %d", runs["email"]))
			again, err := e.steps.run(context.Background(), key, stepsPlan{}, stepsOpts)
			if err != nil || !again.Replayed || strings.Join(again.Value.Results, ",") != strings.Join(res.Value.Results, ",") {
				t.Fatalf("replay: %+v, %v; first %+v", again, err, res)
			}
		})
	}
}

// A holder stopped between two steps past its lease is taken over; the
// new holder finishes. Woken, the old holder's StepTx is refused by its
// first, fenced statement: it writes nothing, and neither does anything
// after it.
func testStepsFenced(t *testing.T, e *stepsEnv) {
	key := "steps:fenced"
	c := e.startStepsChild(t, key, "invoice:before-step", "pause")
	c.expect(t, stepsAtLine+"invoice:before-step", time.Minute)
	c.signal(t, syscall.SIGSTOP)
	res, err := e.steps.run(context.Background(), key, stepsPlan{}, stepsOpts)
	if err != nil || res.Replayed {
		t.Fatalf("takeover: %+v, %v", res, err)
	}
	c.signal(t, syscall.SIGCONT)
	if _, err := c.stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if got := c.expect(t, childDoneLine, time.Minute); got != "lease-lost" && !strings.Contains(got, "lease lost") {
		t.Errorf("the fenced-out holder: %s", got)
	}
	e.wantEffects(t, key, map[string]int64{"charge": 1, "invoice": 1, "email": 1})
	e.wantSteps(t, key, "charge done 1", "invoice done 1", "email done 1")
}

// A resumed run whose code names its steps otherwise, or calls fewer of
// them, gets ErrStepsChanged, and the claim keeps its progress for code
// that matches.
func testStepsChanged(t *testing.T, e *stepsEnv) {
	ctx := context.Background()
	key := "steps:changed"
	flaky := stepsPlan{steps: []string{"charge", "email"}, fail: map[string]error{"email": errors.New("mailer down")}}
	if _, err := e.steps.run(ctx, key, flaky, stepsOpts); err == nil || err.Error() != "mailer down" {
		t.Fatalf("first run: %v", err)
	}
	for _, steps := range [][]string{{"charge", "ship"}, {"charge"}, {"refund", "charge", "email"}} {
		_, err := e.steps.run(ctx, key, stepsPlan{steps: steps}, stepsOpts)
		var ie *idemsql.Error
		if !errors.Is(err, idemsql.ErrStepsChanged) || !errors.As(err, &ie) || ie.Key != key || strings.Contains(err.Error(), key) {
			t.Fatalf("steps %v: %v (want ErrStepsChanged, the key in the field only)", steps, err)
		}
	}
	r := e.wantSteps(t, key, "charge done 1", "email started 1")
	if r.Status != idemsql.StatusInProgress {
		t.Fatalf("status %s after changed code, want in_progress", r.Status)
	}
	res, err := e.steps.run(ctx, key, stepsPlan{steps: []string{"charge", "email"}}, stepsOpts)
	if err != nil || len(res.Value.Results) != 2 {
		t.Fatalf("matching code: %+v, %v", res, err)
	}
	e.wantEffects(t, key, map[string]int64{"charge": 1, "email": 2, "ship": 0, "refund": 0})
	e.wantSteps(t, key, "charge done 1", "email done 2")
}

// A Permanent failure of a step is stored with it, the compensating step
// runs, and the request's failure is recorded and replayed: nothing runs
// again.
func testStepsPermanent(t *testing.T, e *stepsEnv) {
	ctx := context.Background()
	key := "steps:permanent"
	p := stepsPlan{fail: map[string]error{"email": idemsql.Permanent("bounced", errors.New("no such mailbox"))}, compensate: "refund"}
	for i := range 2 {
		res, err := e.steps.run(ctx, key, p, stepsOpts)
		var ie *idemsql.Error
		if !errors.Is(err, idemsql.ErrFailureRecorded) || !errors.As(err, &ie) || ie.Class != "bounced" {
			t.Fatalf("call %d: %+v, %v", i, res, err)
		}
		if res.Replayed != (i == 1) {
			t.Errorf("call %d: Replayed %v", i, res.Replayed)
		}
	}
	e.wantEffects(t, key, map[string]int64{"charge": 1, "invoice": 1, "email": 1, "refund": 1})
	r := e.wantSteps(t, key, "charge done 1", "invoice done 1", "email failed 1", "refund done 1")
	if r.Status != idemsql.StatusFailed || r.ErrorClass != "bounced" || r.Steps[2].Class != "bounced" {
		t.Errorf("row %s %s, step %+v", r.Status, r.ErrorClass, r.Steps[2])
	}
}

// A run whose holder died and that nobody retries is finished by a sweep
// with the Completer, from the stored input.
func testStepsCompleterKilled(t *testing.T, e *stepsEnv) {
	ctx := context.Background()
	key := "steps:completer"
	e.killAt(t, key, "email:before-step")
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := e.steps.sweep(ctx, e.steps.completer(stepsPlan{}), idemsql.Options{Lease: stepsLease})
		if err != nil {
			t.Fatalf("sweep: %+v, %v", st, err)
		}
		if st.Completed == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sweep completed the run: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	res, err := e.steps.run(ctx, key, stepsPlan{}, stepsOpts)
	if err != nil || !res.Replayed || len(res.Value.Results) != 3 {
		t.Fatalf("after the completer: %+v, %v", res, err)
	}
	e.wantEffects(t, key, map[string]int64{"charge": 1, "invoice": 1, "email": 1})
	e.wantSteps(t, key, "charge done 1", "invoice done 1", "email done 1")
}

// A run that failed with a retryable error is released; a sweep that
// reconciles released claims finishes it with the Completer.
func testStepsCompleterReleased(t *testing.T, e *stepsEnv) {
	ctx := context.Background()
	key := "steps:released"
	flaky := stepsPlan{fail: map[string]error{"email": errors.New("mailer down")}}
	if _, err := e.steps.run(ctx, key, flaky, stepsOpts); err == nil {
		t.Fatal("the flaky run succeeded")
	}
	st, err := e.steps.sweep(ctx, e.steps.completer(stepsPlan{}), idemsql.Options{Lease: stepsLease, SweepReleased: true})
	if err != nil || st.Completed != 1 {
		t.Fatalf("sweep: %+v, %v", st, err)
	}
	r := e.wantSteps(t, key, "charge done 1", "invoice done 1", "email done 2")
	if r.Status != idemsql.StatusCompleted {
		t.Errorf("status %s", r.Status)
	}
	e.wantEffects(t, key, map[string]int64{"charge": 1, "invoice": 1, "email": 2})
}

// unknownCommitTx is a transaction whose COMMIT reports a broken
// connection once it ran a step's checkpoint (StepsSwap), after it really
// committed (commit) or rolled back: the caller cannot tell which.
type unknownCommitTx struct {
	inner      idemdriver.Tx[*sql.Tx]
	commit     bool
	checkpoint bool
	fired      *atomic.Bool
}

func (u *unknownCommitTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	if strings.Contains(query, "AND steps = ") {
		u.checkpoint = true
	}
	return u.inner.Exec(ctx, query, args...)
}

func (u *unknownCommitTx) QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row {
	return u.inner.QueryRow(ctx, query, args...)
}

func (u *unknownCommitTx) Tx() *sql.Tx                        { return u.inner.Tx() }
func (u *unknownCommitTx) Rollback(ctx context.Context) error { return u.inner.Rollback(ctx) }

func (u *unknownCommitTx) Commit(ctx context.Context) error {
	if !u.checkpoint || !u.fired.CompareAndSwap(false, true) {
		return u.inner.Commit(ctx)
	}
	if u.commit {
		if err := u.inner.Commit(ctx); err != nil {
			return err
		}
	} else {
		_ = u.inner.Rollback(ctx)
	}
	return io.ErrUnexpectedEOF
}

// A StepTx whose COMMIT broke is settled by the next try, which locks the
// row and reads whether the step is stored done: fn runs again only when
// that COMMIT did not go through, and its write is there once either way.
func testStepsCommitUnknown(t *testing.T, e *stepsEnv) {
	ctx := context.Background()
	for _, committed := range []bool{true, false} {
		t.Run(fmt.Sprintf("committed=%v", committed), func(t *testing.T) {
			var fired atomic.Bool
			inner := sqlDriver(e.dialect, e.db)
			store := storeOn(e.env, testDriver[*sql.Tx]{inner: inner,
				begin: func(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[*sql.Tx], error) {
					tx, err := inner.Begin(ctx, level)
					if err != nil {
						return nil, err
					}
					return &unknownCommitTx{inner: tx, commit: committed, fired: &fired}, nil
				}})
			key := fmt.Sprintf("steps:unknown:%v", committed)
			var runs atomic.Int64
			res, err := idemsql.RunSteps(ctx, store, key, 0, func(ctx context.Context, s *idemsql.Steps[*sql.Tx], _ int) (int64, error) {
				return idemsql.StepTx(ctx, s, "invoice", func(ctx context.Context, tx *sql.Tx) (int64, error) {
					n := runs.Add(1)
					_, err := tx.ExecContext(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, n)
					return n, err
				})
			}, stepsOpts)
			if !fired.Load() {
				t.Fatal("no COMMIT of a checkpoint was interrupted")
			}
			wantRuns := int64(1)
			if !committed {
				wantRuns = 2
			}
			if err != nil || res.Value != wantRuns || runs.Load() != wantRuns {
				t.Fatalf("%+v, %v; fn ran %d times, want %d", res, err, runs.Load(), wantRuns)
			}
			if n := e.bizRows(key); n != 1 {
				t.Fatalf("%d rows written by the step, want 1", n)
			}
			e.wantSteps(t, key, "invoice done 1")
		})
	}
}

// fn ends the step's transaction under the library (a ROLLBACK, as a
// deadlock does on MySQL, after which the session goes on in autocommit)
// and returns no error. The checkpoint finds the transaction's first write
// gone and records nothing: the step runs again, and its write is there
// once, not zero times.
func testStepsTxEndedUnderFn(t *testing.T, e *stepsEnv) {
	ctx := context.Background()
	key := "steps:ended"
	var runs atomic.Int64
	res, err := idemsql.RunSteps(ctx, e.store, key, 0, func(ctx context.Context, s *idemsql.Steps[*sql.Tx], _ int) (int64, error) {
		return idemsql.StepTx(ctx, s, "invoice", func(ctx context.Context, tx *sql.Tx) (int64, error) {
			n := runs.Add(1)
			if _, err := tx.ExecContext(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, n); err != nil {
				return 0, err
			}
			if n == 1 {
				if _, err := tx.ExecContext(ctx, "ROLLBACK"); err != nil {
					t.Logf("ROLLBACK inside the transaction: %v", err)
				}
			}
			return n, nil
		})
	}, stepsOpts)
	if err != nil || res.Value != 2 || runs.Load() != 2 {
		t.Fatalf("%+v, %v; fn ran %d times, want 2", res, err, runs.Load())
	}
	if n := e.bizRows(key); n != 1 {
		t.Fatalf("%d rows written by the step, want 1", n)
	}
	e.wantSteps(t, key, "invoice done 1")
}
