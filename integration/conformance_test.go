package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// TestConformance runs the same guarantees against every backend.
func TestConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range conformanceCases {
				if c.only != "" && c.only != b.dialect {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					e := b.setup(t)
					e.backend = b.name
					c.run(t, e)
				})
			}
		})
	}
}

type conformanceCase struct {
	name string
	only string // a dialect, for database-specific facts
	run  func(t *testing.T, e *env)
}

var conformanceCases = []conformanceCase{
	{name: "FirstCallRunsAndStores", run: testFirstCallRunsAndStores},
	{name: "DuplicateReplays", run: testDuplicateReplays},
	{name: "ConcurrentDuplicates", run: testConcurrentDuplicates},
	{name: "FingerprintMismatch", run: testFingerprintMismatch},
	{name: "Expiry", run: testExpiry},
	{name: "TTLPerStoreAndCall", run: testTTLPerStoreAndCall},
	{name: "FnErrorLeavesNoRow", run: testFnErrorLeavesNoRow},
	{name: "CallerRollbackLeavesNoRow", run: testCallerRollbackLeavesNoRow},
	{name: "WaiterRunsAfterHolderRollsBack", run: testWaiterRunsAfterHolderRollsBack},
	{name: "CancelledContext", run: testCancelledContext},
	{name: "BadKeys", run: testBadKeys},
	{name: "KeysCompareExactly", run: testKeysCompareExactly},
	{name: "BadOptions", run: testBadOptions},
	{name: "UnencodableResult", run: testUnencodableResult},
	{name: "ReplayIntoWrongType", run: testReplayIntoWrongType},
	{name: "NestedClaimInSameTx", run: testNestedClaimInSameTx},
	{name: "SnapshotIsolationRetryable", only: "postgres", run: testSnapshotIsolationRetryable},
	{name: "ConcurrentSerializable", only: "postgres", run: testConcurrentSerializable},
	{name: "ReadBeforeDoUnderRepeatableRead", only: "mysql", run: testReadBeforeDoUnderRepeatableRead},
}

type invoice struct {
	Key    string `json:"key"`
	Amount int64  `json:"amount"`
	Run    int64  `json:"run"` // which execution produced it: tells a replay from a re-run
}

var executions atomic.Int64

// charge is the business function under guard: it inserts one business row
// in tx and counts how often it really ran.
func (e *env) charge(tx testTx, key string, amount int64, runs *atomic.Int64) func(context.Context) (invoice, error) {
	return func(ctx context.Context) (invoice, error) {
		runs.Add(1)
		if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, amount); err != nil {
			return invoice{}, err
		}
		return invoice{Key: key, Amount: amount, Run: executions.Add(1)}, nil
	}
}

// guarded runs one guarded charge in its own transaction and commits it when
// Do succeeded.
func (e *env) guarded(key string, amount int64, runs *atomic.Int64, opts ...idemsql.Options) (idemsql.Result[invoice], error) {
	e.t.Helper()
	ctx := context.Background()
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		e.t.Fatalf("begin: %v", err)
	}
	res, err := doIn(ctx, tx, key, e.charge(tx, key, amount, runs), opts...)
	if err != nil {
		_ = tx.Rollback(ctx)
		return res, err
	}
	if err := tx.Commit(ctx); err != nil {
		e.t.Fatalf("commit: %v", err)
	}
	return res, nil
}

func (e *env) mustGuarded(key string, amount int64, runs *atomic.Int64, opts ...idemsql.Options) idemsql.Result[invoice] {
	e.t.Helper()
	res, err := e.guarded(key, amount, runs, opts...)
	if err != nil {
		e.t.Fatalf("Do(%q): %v", key, err)
	}
	return res
}

// retryable is what a caller that runs its own transactions checks: the
// library's class, or, for an error of the caller's own COMMIT, the
// driver's error.
func (e *env) retryable(err error) bool {
	switch dialectOf(e.dialect).Classify(err) {
	case idemdriver.KindRetryable, idemdriver.KindTxEnded:
		return true
	}
	return errors.Is(err, idemsql.ErrRetryable)
}

// guardedWithRetry is what a caller does with ErrRetryable: run the whole
// transaction again.
func (e *env) guardedWithRetry(ctx context.Context, iso sql.IsolationLevel, key string, runs *atomic.Int64) (idemsql.Result[invoice], error) {
	for attempt := 0; ; attempt++ {
		tx, err := e.begin(ctx, iso)
		if err != nil {
			return idemsql.Result[invoice]{}, err
		}
		res, err := doIn(ctx, tx, key, e.charge(tx, key, 100, runs))
		if err == nil {
			err = tx.Commit(ctx)
		} else {
			_ = tx.Rollback(ctx)
		}
		if err == nil {
			return res, nil
		}
		if !e.retryable(err) || attempt >= 50 {
			return res, err
		}
		time.Sleep(time.Duration(attempt+1) * 2 * time.Millisecond)
	}
}

func testFirstCallRunsAndStores(t *testing.T, e *env) {
	var runs atomic.Int64
	res := e.mustGuarded("order-1", 4200, &runs)
	if res.Replayed || runs.Load() != 1 || res.Value.Amount != 4200 {
		t.Fatalf("first call: replayed=%v runs=%d value=%+v", res.Replayed, runs.Load(), res.Value)
	}
	if got := e.bizRows("order-1"); got != 1 {
		t.Fatalf("business rows = %d, want 1", got)
	}
	if st := e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", "order-1"); st != "completed" {
		t.Fatalf("status = %q", st)
	}
	if a := e.queryInt("SELECT attempt FROM "+e.table+" WHERE idem_key = ?", "order-1"); a != 1 {
		t.Fatalf("attempt = %d", a)
	}
	if got := e.resultField("order-1", "amount"); got != "4200" {
		t.Fatalf("result->amount via the database's JSON functions = %q", got)
	}
}

func testDuplicateReplays(t *testing.T, e *env) {
	var runs atomic.Int64
	first := e.mustGuarded("order-2", 10, &runs)
	for i := 0; i < 3; i++ {
		again := e.mustGuarded("order-2", 99, &runs)
		if !again.Replayed {
			t.Fatalf("duplicate %d not marked as replay", i)
		}
		if again.Value != first.Value {
			t.Fatalf("duplicate %d got %+v, first got %+v", i, again.Value, first.Value)
		}
	}
	if runs.Load() != 1 || e.bizRows("order-2") != 1 {
		t.Fatalf("runs=%d business rows=%d, want 1 and 1", runs.Load(), e.bizRows("order-2"))
	}
}

const racers = 32

func testConcurrentDuplicates(t *testing.T, e *env) {
	raceOneKey(t, e, sql.LevelDefault)
}

func testConcurrentSerializable(t *testing.T, e *env) {
	raceOneKey(t, e, sql.LevelSerializable)
}

// race starts racers goroutines at once, each calling call, and checks that
// none failed and all got the same value. It returns how many saw a first
// execution rather than a replay.
func race(t *testing.T, call func() (idemsql.Result[invoice], error)) (fresh int) {
	t.Helper()
	results := make([]idemsql.Result[invoice], racers)
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = call()
		}()
	}
	close(start)
	wg.Wait()
	for i := range racers {
		if errs[i] != nil {
			t.Fatalf("racer %d: %v", i, errs[i])
		}
		if !results[i].Replayed {
			fresh++
		}
		if results[i].Value != results[0].Value {
			t.Fatalf("racer %d got %+v, racer 0 got %+v", i, results[i].Value, results[0].Value)
		}
	}
	if results[0].Value.Run == 0 {
		t.Fatal("no result")
	}
	return fresh
}

// raceOneKey races transactions on one key, each doing a real business
// insert. fn may start more than once when a transaction is rolled back for
// a retry; only one execution may commit, and every caller gets its result.
func raceOneKey(t *testing.T, e *env, iso sql.IsolationLevel) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var runs atomic.Int64
	fresh := race(t, func() (idemsql.Result[invoice], error) { return e.guardedWithRetry(ctx, iso, "race", &runs) })
	if got := e.bizRows("race"); got != 1 || fresh != 1 {
		t.Fatalf("business rows = %d, first executions seen = %d; want 1 and 1", got, fresh)
	}
}

func testFingerprintMismatch(t *testing.T, e *env) {
	var runs atomic.Int64
	req := map[string]any{"amount": 10, "currency": "EUR"}
	e.mustGuarded("pay-1", 10, &runs, idemsql.Options{Fingerprint: req})

	// The same request, spelled as another map: replays.
	same := map[string]any{"currency": "EUR", "amount": 10}
	if res := e.mustGuarded("pay-1", 10, &runs, idemsql.Options{Fingerprint: same}); !res.Replayed {
		t.Fatal("same fingerprint did not replay")
	}
	for name, opts := range map[string][]idemsql.Options{
		"other request":  {idemsql.Options{Fingerprint: map[string]any{"amount": 11, "currency": "EUR"}}},
		"no fingerprint": nil,
	} {
		_, err := e.guarded("pay-1", 11, &runs, opts...)
		if !errors.Is(err, idemsql.ErrFingerprintMismatch) {
			t.Fatalf("%s: err = %v, want ErrFingerprintMismatch", name, err)
		}
	}
	if runs.Load() != 1 || e.bizRows("pay-1") != 1 {
		t.Fatalf("runs=%d business rows=%d, want 1 and 1", runs.Load(), e.bizRows("pay-1"))
	}
}

func testExpiry(t *testing.T, e *env) {
	var runs atomic.Int64
	first := e.mustGuarded("exp-1", 1, &runs)
	e.expire("exp-1")
	second := e.mustGuarded("exp-1", 2, &runs)
	if second.Replayed || second.Value.Run == first.Value.Run || runs.Load() != 2 {
		t.Fatalf("after expiry: replayed=%v runs=%d", second.Replayed, runs.Load())
	}
	if a := e.queryInt("SELECT attempt FROM "+e.table+" WHERE idem_key = ?", "exp-1"); a != 2 {
		t.Fatalf("attempt after re-claim = %d, want 2", a)
	}
	if e.idemRows("exp-1") != 1 || e.bizRows("exp-1") != 2 {
		t.Fatalf("idempotency rows=%d business rows=%d, want 1 and 2", e.idemRows("exp-1"), e.bizRows("exp-1"))
	}
	// Re-claimed in place, the key is guarded again.
	if third := e.mustGuarded("exp-1", 3, &runs); !third.Replayed || third.Value != second.Value {
		t.Fatalf("after re-claim: %+v", third)
	}
}

func testTTLPerStoreAndCall(t *testing.T, e *env) {
	var runs atomic.Int64
	e.mustGuarded("ttl-default", 1, &runs)
	e.mustGuarded("ttl-call", 1, &runs, idemsql.Options{TTL: 2 * time.Hour})
	near := func(got, want int64) bool { return got >= want-5 && got <= want+5 }
	if got := e.ttlSeconds("ttl-default"); !near(got, int64(idemsql.DefaultTTL/time.Second)) {
		t.Fatalf("default TTL stored as %ds", got)
	}
	if got := e.ttlSeconds("ttl-call"); !near(got, 7200) {
		t.Fatalf("per-call TTL stored as %ds, want 7200", got)
	}
}

func testFnErrorLeavesNoRow(t *testing.T, e *env) {
	ctx := context.Background()
	declined := errors.New("card declined")
	for _, commit := range []bool{false, true} {
		key := fmt.Sprintf("fail-commit-%v", commit)
		tx, err := e.begin(ctx, sql.LevelDefault)
		if err != nil {
			t.Fatal(err)
		}
		_, err = doIn(ctx, tx, key, func(ctx context.Context) (invoice, error) {
			return invoice{}, declined
		})
		if err != declined {
			t.Fatalf("Do returned %v, want fn's error unchanged", err)
		}
		// A caller that commits after the error still leaves the key free.
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n := e.idemRows(key); n != 0 {
			t.Fatalf("commit=%v: %d idempotency rows after fn failed", commit, n)
		}
		var runs atomic.Int64
		if res := e.mustGuarded(key, 1, &runs); res.Replayed || runs.Load() != 1 {
			t.Fatalf("retry after a failure did not run fn")
		}
	}
}

func testCallerRollbackLeavesNoRow(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := doIn(ctx, tx, "rb-1", e.charge(tx, "rb-1", 1, &runs)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if e.idemRows("rb-1") != 0 || e.bizRows("rb-1") != 0 {
		t.Fatal("rollback left rows behind")
	}
	if res := e.mustGuarded("rb-1", 1, &runs); res.Replayed || runs.Load() != 2 {
		t.Fatal("key not free after rollback")
	}
}

type waitOutcome struct {
	res idemsql.Result[invoice]
	err error
}

// waitBehind starts a guarded call on key while another transaction holds
// it, ends the holder with end (commit or rollback) once the call waits for
// the holder's lock, by the database's own lock view, and returns what the
// waiter got. On SQLite a transaction waits in BEGIN IMMEDIATE for the
// holder's write lock, before its call starts, so there is no lock of the
// key to watch: the holder ends once the waiter has begun asking.
func (e *env) waitBehind(ctx context.Context, key string, runs *atomic.Int64, end func(context.Context) error) waitOutcome {
	e.t.Helper()
	done := make(chan waitOutcome, 1)
	asking := make(chan int64, 1)
	go func() {
		for attempt := 0; ; attempt++ {
			if e.dialect == "sqlite" && attempt == 0 {
				asking <- 0
			}
			tx, err := e.begin(ctx, sql.LevelDefault)
			if err != nil {
				done <- waitOutcome{err: err}
				return
			}
			if e.dialect != "sqlite" && attempt == 0 {
				asking <- e.connID(ctx, tx)
			}
			res, err := doIn(ctx, tx, key, e.charge(tx, key, 100, runs))
			if err == nil {
				err = tx.Commit(ctx)
			} else {
				_ = tx.Rollback(ctx)
			}
			if err == nil || !e.retryable(err) || attempt >= 50 {
				done <- waitOutcome{res, err}
				return
			}
		}
	}()
	if id := <-asking; e.dialect != "sqlite" {
		e.waitUntilBlocked(ctx, id)
	}
	if err := end(ctx); err != nil {
		e.t.Fatal(err)
	}
	o := <-done
	if o.err != nil {
		e.t.Fatalf("waiter: %v", o.err)
	}
	return o
}

// A duplicate that waited on a holder which then rolled back must run fn
// itself, not replay nothing.
func testWaiterRunsAfterHolderRollsBack(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	holder, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := doIn(ctx, holder, "wait-1", e.charge(holder, "wait-1", 1, &runs)); err != nil {
		t.Fatal(err)
	}
	o := e.waitBehind(ctx, "wait-1", &runs, holder.Rollback)
	if o.res.Replayed || runs.Load() != 2 || e.bizRows("wait-1") != 1 {
		t.Fatalf("waiter replayed=%v runs=%d business rows=%d", o.res.Replayed, runs.Load(), e.bizRows("wait-1"))
	}
}

func testCancelledContext(t *testing.T, e *env) {
	var runs atomic.Int64
	tx, err := e.begin(context.Background(), sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = doIn(ctx, tx, "cancel-1", e.charge(tx, "cancel-1", 1, &runs))
	if !errors.Is(err, context.Canceled) || runs.Load() != 0 {
		t.Fatalf("cancelled before: err=%v runs=%d", err, runs.Load())
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.idemRows("cancel-1") != 0 {
		t.Fatal("a cancelled call left a row")
	}

	// Cancelled while fn runs: fn's error comes back. A caller who commits
	// anyway keeps no claim where Do could remove it; on SQLite, where a
	// context error may mean the transaction is gone, Do sends nothing and
	// the committed claim then answers ErrAbandoned instead of running fn.
	tx, err = e.begin(context.Background(), sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	_, err = doIn(ctx, tx, "cancel-2", func(ctx context.Context) (invoice, error) {
		runs.Add(1)
		cancel()
		return invoice{}, ctx.Err()
	})
	if !errors.Is(err, context.Canceled) || errors.Is(err, idemsql.ErrRetryable) {
		t.Fatalf("cancelled during fn: %v", err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = e.guarded("cancel-2", 1, &runs)
	switch {
	case e.dialect == "sqlite":
		if !errors.Is(err, idemsql.ErrAbandoned) || runs.Load() != 1 {
			t.Fatalf("after a committed cancelled call: err = %v, runs = %d; want ErrAbandoned", err, runs.Load())
		}
	case err != nil || runs.Load() != 2:
		t.Fatalf("after a committed cancelled call: err = %v, runs = %d; want a first execution", err, runs.Load())
	}
}

func testBadKeys(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for name, key := range map[string]string{
		"empty":        "",
		"too long":     strings.Repeat("k", idemsql.MaxKeyLen+1),
		"too long utf": strings.Repeat("é", idemsql.MaxKeyLen/2+1),
		"invalid utf8": "abc\xff",
		"nul byte":     "a\x00b",
	} {
		_, err := doIn(ctx, tx, key, e.charge(tx, key, 1, &runs))
		if !errors.Is(err, idemsql.ErrInvalidKey) {
			t.Fatalf("%s: err = %v, want ErrInvalidKey", name, err)
		}
	}
	if runs.Load() != 0 {
		t.Fatal("fn ran for a bad key")
	}
	// The transaction is untouched: it can still claim a good key.
	longest := strings.Repeat("é", idemsql.MaxKeyLen/2) + "x" // exactly MaxKeyLen bytes
	if _, err := doIn(ctx, tx, longest, e.charge(tx, longest, 1, &runs)); err != nil {
		t.Fatalf("longest valid key: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if res := e.mustGuarded(longest, 1, &runs); !res.Replayed {
		t.Fatal("longest key not stored exactly")
	}
}

func testKeysCompareExactly(t *testing.T, e *env) {
	var runs atomic.Int64
	keys := []string{"ABC", "abc", "a", "a ", "é", "e\u0301", "ß", "ss"}
	for _, k := range keys {
		if res := e.mustGuarded(k, 1, &runs); res.Replayed {
			t.Fatalf("key %q replayed another key's result %+v", k, res.Value)
		}
	}
	for _, k := range keys {
		res := e.mustGuarded(k, 1, &runs)
		if !res.Replayed || res.Value.Key != k {
			t.Fatalf("key %q: replayed=%v value=%+v", k, res.Replayed, res.Value)
		}
	}
	if runs.Load() != int64(len(keys)) {
		t.Fatalf("runs = %d, want %d", runs.Load(), len(keys))
	}
}

func testBadOptions(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for name, opts := range map[string][]idemsql.Options{
		"two Options":       {{TTL: time.Hour}, {Fingerprint: "x"}},
		"store-only option": {{Table: "other"}},
		"lease-mode option": {{Lease: time.Second}},
		"negative TTL":      {{TTL: -time.Second}},
		"unencodable fp":    {{Fingerprint: map[string]any{"f": func() {}}}},
	} {
		_, err := doIn(ctx, tx, "opt-1", e.charge(tx, "opt-1", 1, &runs), opts...)
		if !errors.Is(err, idemsql.ErrInvalidOption) {
			t.Fatalf("%s: err = %v, want ErrInvalidOption", name, err)
		}
	}
	if _, err := doIn[invoice](ctx, tx, "opt-1", nil); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("nil fn: %v", err)
	}
	if _, err := idemsql.Do(ctx, nil, (*sql.Tx)(nil), "opt-1", e.charge(tx, "opt-1", 1, &runs)); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("nil store: %v", err)
	}
	if _, err := idemsql.Do(ctx, e.store, nil, "opt-1", e.charge(tx, "opt-1", 1, &runs)); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("nil transaction: %v", err)
	}
	if runs.Load() != 0 {
		t.Fatal("fn ran despite a bad option")
	}
}

func testUnencodableResult(t *testing.T, e *env) {
	ctx := context.Background()
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	_, err = doIn(ctx, tx, "enc-1", func(ctx context.Context) (float64, error) {
		return math.Inf(1), nil
	})
	if !errors.Is(err, idemsql.ErrEncode) {
		t.Fatalf("err = %v, want ErrEncode", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if e.idemRows("enc-1") != 0 {
		t.Fatal("an unencodable result left a row")
	}
}

func testReplayIntoWrongType(t *testing.T, e *env) {
	var runs atomic.Int64
	e.mustGuarded("type-1", 1, &runs)
	ctx := context.Background()
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	_, err = doIn(ctx, tx, "type-1", func(ctx context.Context) ([]int, error) {
		t.Fatal("fn ran for a completed key")
		return nil, nil
	})
	if !errors.Is(err, idemsql.ErrDecode) {
		t.Fatalf("err = %v, want ErrDecode", err)
	}
}

// A nested Do on a key its own transaction is still inside must neither
// deadlock nor replay a result that does not exist yet.
func testNestedClaimInSameTx(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var runs atomic.Int64
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var inner error
	_, err = doIn(ctx, tx, "nest-1", func(ctx context.Context) (invoice, error) {
		_, inner = doIn(ctx, tx, "nest-1", e.charge(tx, "nest-1", 1, &runs))
		return invoice{}, nil
	})
	if err != nil {
		t.Fatalf("outer: %v", err)
	}
	if !errors.Is(inner, idemsql.ErrReentrant) || runs.Load() != 0 {
		t.Fatalf("inner: err=%v runs=%d, want ErrReentrant and no run", inner, runs.Load())
	}
}

// PostgreSQL REPEATABLE READ and SERIALIZABLE: a key committed by another
// transaction after this one's snapshot gives a retryable error, never a
// second execution and never a wrong replay; the retry replays.
func testSnapshotIsolationRetryable(t *testing.T, e *env) {
	for _, iso := range []sql.IsolationLevel{sql.LevelRepeatableRead, sql.LevelSerializable} {
		key := "snap-" + iso.String()
		ctx := context.Background()
		var runs atomic.Int64
		late, err := e.begin(ctx, iso)
		if err != nil {
			t.Fatal(err)
		}
		defer late.Rollback(ctx) // a failed test must not keep the connection and hang the pool's Close
		// Take the snapshot.
		if _, err := late.QueryInt(ctx, "SELECT COUNT(*) FROM "+e.biz); err != nil {
			t.Fatal(err)
		}
		first := e.mustGuarded(key, 1, &runs)
		_, err = doIn(ctx, late, key, e.charge(late, key, 1, &runs))
		if !errors.Is(err, idemsql.ErrRetryable) {
			t.Fatalf("%s: err = %v, want ErrRetryable", iso, err)
		}
		_ = late.Rollback(ctx)
		res, err := e.guardedWithRetry(ctx, iso, key, &runs)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Replayed || res.Value != first.Value || runs.Load() != 1 || e.bizRows(key) != 1 {
			t.Fatalf("%s: retry replayed=%v runs=%d", iso, res.Replayed, runs.Load())
		}
	}
}

// snapshotIsolation reports whether the server refuses a write to a row
// changed since the transaction's snapshot (MariaDB 11.6.2 and later,
// innodb_snapshot_isolation; the variable does not exist before).
func (e *env) snapshotIsolation() bool {
	if e.dialect != "mysql" {
		return false
	}
	var on bool
	return e.db.QueryRow("SELECT @@innodb_snapshot_isolation").Scan(&on) == nil && on
}

// MariaDB/MySQL REPEATABLE READ: a plain read before Do fixes the snapshot;
// the row another transaction commits afterwards is invisible to a plain
// SELECT. Do must still see it and replay. MariaDB 11.6.2 and later, with
// innodb_snapshot_isolation ON (their default), refuse the claim instead
// (1020): then Do says retry, and Run's new transaction replays.
func testReadBeforeDoUnderRepeatableRead(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	late, err := e.begin(ctx, sql.LevelRepeatableRead)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback(ctx)
	if n, err := late.QueryInt(ctx, "SELECT COUNT(*) FROM "+e.table); err != nil || n != 0 {
		t.Fatalf("snapshot read: n=%d err=%v", n, err)
	}
	first := e.mustGuarded("rr-1", 1, &runs)
	if n, _ := late.QueryInt(ctx, "SELECT COUNT(*) FROM "+e.table); n != 0 {
		t.Fatalf("the snapshot trap did not arm: plain read sees %d rows", n)
	}
	res, err := doIn(ctx, late, "rr-1", e.charge(late, "rr-1", 1, &runs))
	if e.snapshotIsolation() {
		if !errors.Is(err, idemsql.ErrRetryable) || runs.Load() != 1 {
			t.Fatalf("innodb_snapshot_isolation: %+v, %v (runs %d); want ErrRetryable", res, err, runs.Load())
		}
		_ = late.Rollback(ctx)
		res, err = e.run(ctx, sql.LevelRepeatableRead, "rr-1", e.insertBiz("rr-1", 1, &runs))
		if err != nil || !res.Replayed || res.Value != first.Value || runs.Load() != 1 {
			t.Fatalf("Run after the refused claim: %+v, %v (runs %d); want a replay", res, err, runs.Load())
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !res.Replayed || res.Value != first.Value || runs.Load() != 1 {
		t.Fatalf("replayed=%v value=%+v runs=%d", res.Replayed, res.Value, runs.Load())
	}
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if e.bizRows("rr-1") != 1 {
		t.Fatal("second business row")
	}
}
