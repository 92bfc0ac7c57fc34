package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "RunRunsOnceAndReplays", run: testRunRunsOnceAndReplays},
		conformanceCase{name: "RunRetriesTheWholeTransaction", run: testRunRetriesTheWholeTransaction},
		conformanceCase{name: "RunConcurrent", run: func(t *testing.T, e *env) { raceRun(t, e, sql.LevelDefault) }},
		conformanceCase{name: "RunConcurrentSerializable", only: "postgres", run: func(t *testing.T, e *env) { raceRun(t, e, sql.LevelSerializable) }},
		conformanceCase{name: "RunCancelledContext", run: testRunCancelledContext},
		conformanceCase{name: "DuplicatePolicyError", run: testDuplicatePolicyError},
		conformanceCase{name: "FailFastWhileHeld", run: testFailFastWhileHeld},
		conformanceCase{name: "FailFastConcurrent", run: testFailFastConcurrent},
		conformanceCase{name: "LockTimeout", run: testLockTimeout},
		conformanceCase{name: "RecordedFailure", run: testRecordedFailure},
		conformanceCase{name: "RecordedFailureAfterFailedStatement", run: testRecordedFailureAfterFailedStatement},
		conformanceCase{name: "UnrecordedErrors", run: testUnrecordedErrors},
		conformanceCase{name: "ResultSizeLimit", run: testResultSizeLimit},
		conformanceCase{name: "CustomCodec", run: testCustomCodec},
		conformanceCase{name: "WrapRun", run: testWrapRun},
		conformanceCase{name: "StaleLeaseRowNotReclaimedByDo", run: testStaleLeaseRowNotReclaimedByDo},
		conformanceCase{name: "EmptyResult", run: testEmptyResult},
		conformanceCase{name: "NestedRecordedFailures", run: testNestedRecordedFailures},
	)
}

// insertBiz is the business effect of the Run tests.
func (e *env) insertBiz(key string, amount int64, runs *atomic.Int64) bizFunc {
	return func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		runs.Add(1)
		if err := exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, amount); err != nil {
			return invoice{}, err
		}
		return invoice{Key: key, Amount: amount, Run: executions.Add(1)}, nil
	}
}

func testRunRunsOnceAndReplays(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	first, err := e.run(ctx, sql.LevelDefault, "run-1", e.insertBiz("run-1", 5, &runs))
	if err != nil || first.Replayed {
		t.Fatalf("first Run: %+v %v", first, err)
	}
	again, err := e.run(ctx, sql.LevelDefault, "run-1", e.insertBiz("run-1", 5, &runs))
	if err != nil || !again.Replayed || again.Value != first.Value {
		t.Fatalf("second Run: %+v %v", again, err)
	}
	if runs.Load() != 1 || e.bizRows("run-1") != 1 {
		t.Fatalf("runs=%d business rows=%d", runs.Load(), e.bizRows("run-1"))
	}
}

// fn's writes of a transaction that is retried are rolled back with it: only
// the attempt that commits leaves its effect.
func testRunRetriesTheWholeTransaction(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	biz := e.insertBiz("retry-1", 5, &runs)
	res, err := e.run(ctx, sql.LevelDefault, "retry-1", func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		inv, err := biz(ctx, exec)
		if err == nil && runs.Load() < 3 {
			return invoice{}, fmt.Errorf("simulated conflict: %w", idemsql.ErrRetryable)
		}
		return inv, err
	}, idemsql.Options{Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil || res.Replayed {
		t.Fatalf("Run: %+v %v", res, err)
	}
	if runs.Load() != 3 || e.bizRows("retry-1") != 1 {
		t.Fatalf("runs=%d business rows=%d, want 3 and 1", runs.Load(), e.bizRows("retry-1"))
	}

	// Bounded: a transaction that always conflicts gives up after the
	// attempts allowed, and says why.
	runs.Store(0)
	_, err = e.run(ctx, sql.LevelDefault, "retry-2", func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		runs.Add(1)
		return invoice{}, idemsql.ErrRetryable
	}, idemsql.Options{MaxAttempts: 4, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	if !errors.Is(err, idemsql.ErrRetryable) || runs.Load() != 4 {
		t.Fatalf("err=%v runs=%d, want ErrRetryable after 4 attempts", err, runs.Load())
	}
	if e.idemRows("retry-2") != 0 {
		t.Fatal("a transaction that never committed left a row")
	}
}

// raceRun: racers goroutines Run one key at once. No error reaches a
// caller; every one gets the same value; one business row exists.
func raceRun(t *testing.T, e *env, iso sql.IsolationLevel) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var runs atomic.Int64
	fresh := race(t, func() (idemsql.Result[invoice], error) {
		return e.run(ctx, iso, "run-race", e.insertBiz("run-race", 7, &runs),
			idemsql.Options{MaxAttempts: 100, Backoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	})
	if fresh != 1 || e.bizRows("run-race") != 1 {
		t.Fatalf("first executions=%d business rows=%d, want 1 and 1", fresh, e.bizRows("run-race"))
	}
}

func testRunCancelledContext(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var runs atomic.Int64
	_, err := e.run(ctx, sql.LevelDefault, "run-cancel", e.insertBiz("run-cancel", 1, &runs))
	if !errors.Is(err, context.Canceled) || runs.Load() != 0 || e.idemRows("run-cancel") != 0 {
		t.Fatalf("err=%v runs=%d", err, runs.Load())
	}
}

func testDuplicatePolicyError(t *testing.T, e *env) {
	var runs atomic.Int64
	first := e.mustGuarded("dup-1", 3, &runs)
	ctx := context.Background()
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	res, err := doIn(ctx, tx, "dup-1", e.charge(tx, "dup-1", 3, &runs), idemsql.Options{ErrorOnDuplicate: true})
	var de *idemsql.Error
	if !errors.Is(err, idemsql.ErrDuplicate) || !errors.As(err, &de) || de.Key != "dup-1" {
		t.Fatalf("err = %v, want an *Error of class ErrDuplicate for the key", err)
	}
	if !res.Replayed || res.Value != first.Value || runs.Load() != 1 {
		t.Fatalf("result %+v runs=%d", res, runs.Load())
	}
	_ = tx.Rollback(ctx) // SQLite has one writer
	// Run under the same policy.
	if _, err := e.run(ctx, sql.LevelDefault, "dup-1", e.insertBiz("dup-1", 3, &runs), idemsql.Options{ErrorOnDuplicate: true}); !errors.Is(err, idemsql.ErrDuplicate) {
		t.Fatalf("Run under the error policy: %v", err)
	}
	if runs.Load() != 1 || e.bizRows("dup-1") != 1 {
		t.Fatal("the error policy ran fn")
	}
}

// holdKey claims key in a transaction of its own and leaves it open.
func (e *env) holdKey(ctx context.Context, key string, runs *atomic.Int64) testTx {
	e.t.Helper()
	holder, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := doIn(ctx, holder, key, e.charge(holder, key, 1, runs)); err != nil {
		e.t.Fatal(err)
	}
	return holder
}

// lockSetting reads the setting BoundClaim changes, in tx's session.
func (e *env) lockSetting(ctx context.Context, tx testTx) int64 {
	e.t.Helper()
	var q string
	switch e.dialect {
	case "postgres":
		q = "SELECT CAST(EXTRACT(EPOCH FROM CAST(current_setting('lock_timeout') AS interval)) * 1000 AS bigint)"
	case "mysql":
		q = "SELECT @@SESSION.innodb_lock_wait_timeout"
	case "sqlite":
		q = "PRAGMA busy_timeout"
	}
	n, err := tx.QueryInt(ctx, q)
	if err != nil {
		e.t.Fatalf("read lock setting: %v", err)
	}
	return n
}

func testFailFastWhileHeld(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	holder := e.holdKey(ctx, "ff-1", &runs)
	defer holder.Rollback(ctx)

	other, err := e.beginOther(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	before := e.lockSetting(ctx, other)
	started := time.Now()
	_, err = doIn(ctx, other, "ff-1", e.charge(other, "ff-1", 1, &runs), idemsql.Options{FailFast: true})
	if !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatalf("err = %v, want ErrInProgress", err)
	}
	if waited := time.Since(started); waited > 5*time.Second {
		t.Fatalf("fail-fast waited %v", waited) // a hang, not a speed check: the holder never ends on its own
	}
	// The transaction is still usable and its session setting is back.
	if after := e.lockSetting(ctx, other); after != before {
		t.Fatalf("lock setting %d after the call, %d before", after, before)
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatalf("commit after ErrInProgress: %v", err)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if runs.Load() != 1 || e.bizRows("ff-1") != 1 {
		t.Fatalf("runs=%d business rows=%d", runs.Load(), e.bizRows("ff-1"))
	}
	// Once the holder committed, fail-fast replays like any duplicate.
	if res, err := e.guarded("ff-1", 1, &runs, idemsql.Options{FailFast: true}); err != nil || !res.Replayed {
		t.Fatalf("after commit: %+v %v", res, err)
	}
}

// Concurrent duplicates under fail-fast: each gets the result, a replay or
// ErrInProgress, and exactly one business effect exists.
func testFailFastConcurrent(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var runs atomic.Int64
	var inProgress, ok atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, racers)
	for range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tx, err := e.beginOther(ctx)
			if err != nil {
				errs <- err
				return
			}
			_, err = doIn(ctx, tx, "ff-race", e.charge(tx, "ff-race", 1, &runs), idemsql.Options{FailFast: true})
			switch {
			case errors.Is(err, idemsql.ErrInProgress):
				if errors.Is(err, idemsql.ErrRetryable) || errors.Is(err, idemsql.ErrLockTimeout) {
					errs <- fmt.Errorf("ErrInProgress matches another class too: %w", err)
				}
				inProgress.Add(1)
				_ = tx.Rollback(ctx)
			case err != nil:
				_ = tx.Rollback(ctx)
				errs <- err
			default:
				if err := tx.Commit(ctx); err != nil {
					errs <- err
					return
				}
				ok.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("unexpected error: %v", err)
	}
	if e.bizRows("ff-race") != 1 {
		t.Fatalf("business rows = %d, want 1 (ok=%d in progress=%d)", e.bizRows("ff-race"), ok.Load(), inProgress.Load())
	}
	t.Logf("%d succeeded or replayed, %d got ErrInProgress", ok.Load(), inProgress.Load())
}

func testLockTimeout(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var runs atomic.Int64
	holder := e.holdKey(ctx, "lt-1", &runs)
	defer holder.Rollback(ctx)
	other, err := e.beginOther(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	before := e.lockSetting(ctx, other)
	_, err = doIn(ctx, other, "lt-1", e.charge(other, "lt-1", 1, &runs), idemsql.Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, idemsql.ErrLockTimeout) {
		t.Fatalf("err = %v, want ErrLockTimeout", err)
	}
	if e.dialect == "postgres" {
		if !strings.Contains(err.Error(), "aborted") {
			t.Fatalf("the error does not say the transaction is lost: %v", err)
		}
	} else if after := e.lockSetting(ctx, other); after != before {
		t.Fatalf("lock setting %d after the call, %d before", after, before)
	}
	if runs.Load() != 1 {
		t.Fatal("fn ran behind a held key")
	}
}

var errDeclined = errors.New("card declined: insufficient funds")

func testRecordedFailure(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	biz := e.insertBiz("rf-1", 9, &runs)
	declining := func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		if _, err := biz(ctx, exec); err != nil {
			return invoice{}, err
		}
		return invoice{}, idemsql.Permanent("card_declined", errDeclined)
	}
	res, err := e.run(ctx, sql.LevelDefault, "rf-1", declining, idemsql.Options{RecordFailures: true})
	var fe *idemsql.Error
	if !errors.Is(err, idemsql.ErrFailureRecorded) || !errors.As(err, &fe) || res.Replayed || fe.Class != "card_declined" || !errors.Is(err, errDeclined) {
		t.Fatalf("first call: %v (%+v)", err, fe)
	}
	if e.bizRows("rf-1") != 0 {
		t.Fatal("the failed call's business write survived")
	}
	if st := e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", "rf-1"); st != "failed" {
		t.Fatalf("status = %q", st)
	}
	for i := 0; i < 2; i++ {
		res, err = e.run(ctx, sql.LevelDefault, "rf-1", declining, idemsql.Options{RecordFailures: true})
		var again *idemsql.Error
		if !errors.As(err, &again) || !res.Replayed || again.Class != "card_declined" || again.Message != errDeclined.Error() {
			t.Fatalf("duplicate %d: %v", i, err)
		}
		if !errors.Is(err, idemsql.ErrFailureRecorded) {
			t.Fatal("a replayed failure does not match ErrFailureRecorded")
		}
	}
	// Do replays it the same way, whatever the duplicate's own options.
	var doRuns atomic.Int64
	if res, err := e.guarded("rf-1", 9, &doRuns); !errors.Is(err, idemsql.ErrFailureRecorded) || !errors.As(err, &fe) || !res.Replayed {
		t.Fatalf("Do on a failed key: %v", err)
	}
	if runs.Load() != 1 || doRuns.Load() != 0 || e.bizRows("rf-1") != 0 {
		t.Fatalf("runs=%d doRuns=%d business rows=%d", runs.Load(), doRuns.Load(), e.bizRows("rf-1"))
	}
}

// On PostgreSQL a failed statement aborts the transaction; the savepoint
// brings it back, so the failure can still be recorded.
func testRecordedFailureAfterFailedStatement(t *testing.T, e *env) {
	ctx := context.Background()
	_, err := e.run(ctx, sql.LevelDefault, "rf-2", func(ctx context.Context, exec func(context.Context, string, ...any) error) (invoice, error) {
		err := exec(ctx, "INSERT INTO "+e.biz+" (idem_key, amount) VALUES (NULL, 1)") // violates NOT NULL
		if err == nil {
			t.Fatal("the broken statement succeeded")
		}
		return invoice{}, idemsql.Permanent("invalid_request", err)
	}, idemsql.Options{RecordFailures: true})
	var fe *idemsql.Error
	if !errors.As(err, &fe) || fe.Class != "invalid_request" {
		t.Fatalf("err = %v", err)
	}
	if st := e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", "rf-2"); st != "failed" {
		t.Fatalf("status = %q", st)
	}
}

// Only errors marked permanent, and only with recording on, are recorded.
func testUnrecordedErrors(t *testing.T, e *env) {
	ctx := context.Background()
	for name, c := range map[string]struct {
		err  error
		opts []idemsql.Options
	}{
		"plain error, recording on":  {errDeclined, []idemsql.Options{{RecordFailures: true}}},
		"permanent, recording off":   {idemsql.Permanent("card_declined", errDeclined), nil},
		"permanent, recording unset": {idemsql.Permanent("x", errDeclined), []idemsql.Options{{RecordFailures: false}}},
	} {
		key := "ur-" + strings.ReplaceAll(name, " ", "")
		_, err := e.run(ctx, sql.LevelDefault, key, func(context.Context, func(context.Context, string, ...any) error) (invoice, error) {
			return invoice{}, c.err
		}, c.opts...)
		if !errors.Is(err, errDeclined) || errors.Is(err, idemsql.ErrFailureRecorded) {
			t.Fatalf("%s: err = %v", name, err)
		}
		if e.idemRows(key) != 0 {
			t.Fatalf("%s: recorded", name)
		}
	}
}

func testResultSizeLimit(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	_, err := e.run(ctx, sql.LevelDefault, "big-1", e.insertBiz("big-1", 1, &runs), idemsql.Options{MaxResultSize: 16})
	if !errors.Is(err, idemsql.ErrResultTooLarge) {
		t.Fatalf("err = %v, want ErrResultTooLarge", err)
	}
	if e.idemRows("big-1") != 0 || e.bizRows("big-1") != 0 {
		t.Fatal("a result over the limit left rows")
	}
}

// upperCodec is a codec of a user's: JSON with its own encoder.
type upperCodec struct{ calls *atomic.Int64 }

func (c upperCodec) Marshal(v any) ([]byte, error) {
	c.calls.Add(1)
	b, err := json.Marshal(map[string]any{"wrapped": v})
	return b, err
}

func (c upperCodec) Unmarshal(data []byte, v any) error {
	c.calls.Add(1)
	var w struct{ Wrapped json.RawMessage }
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	return json.Unmarshal(w.Wrapped, v)
}

type notJSONCodec struct{}

func (notJSONCodec) Marshal(v any) ([]byte, error)      { return []byte("gob\x00data"), nil }
func (notJSONCodec) Unmarshal(data []byte, v any) error { return nil }

func testCustomCodec(t *testing.T, e *env) {
	ctx := context.Background()
	var runs, calls atomic.Int64
	codec := idemsql.Options{Codec: upperCodec{&calls}}
	first, err := e.run(ctx, sql.LevelDefault, "codec-1", e.insertBiz("codec-1", 1, &runs), codec)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.run(ctx, sql.LevelDefault, "codec-1", e.insertBiz("codec-1", 1, &runs), codec)
	if err != nil || again.Value != first.Value || calls.Load() != 2 {
		t.Fatalf("replay through the codec: %+v %v calls=%d", again, err, calls.Load())
	}
	if got := e.queryString("SELECT "+map[string]string{
		"postgres": "result->'wrapped'->>'key'",
		"mysql":    "JSON_UNQUOTE(JSON_EXTRACT(result, '$.wrapped.key'))",
		"sqlite":   "json_extract(result, '$.wrapped.key')",
	}[e.dialect]+" FROM "+e.table+" WHERE idem_key = ?", "codec-1"); got != "codec-1" {
		t.Fatalf("stored by the codec: %q", got)
	}
	_, err = e.run(ctx, sql.LevelDefault, "codec-2", e.insertBiz("codec-2", 1, &runs), idemsql.Options{Codec: notJSONCodec{}})
	if !errors.Is(err, idemsql.ErrEncode) || e.idemRows("codec-2") != 0 || e.bizRows("codec-2") != 0 {
		t.Fatalf("a codec that writes no JSON: %v", err)
	}
}

type invoiceReq struct {
	Customer string `json:"customer"`
	Amount   int64  `json:"amount"`
}

func testWrapRun(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	createInvoice := e.wrapRun(idemsql.ArgsKey[invoiceReq]("create_invoice"), &runs, idemsql.Options{TTL: 5 * time.Minute})
	a1, err := createInvoice(ctx, invoiceReq{"ada", 100})
	if err != nil || a1.Replayed {
		t.Fatal(a1, err)
	}
	a2, err := createInvoice(ctx, invoiceReq{"ada", 100})
	if err != nil || !a2.Replayed || a2.Value != a1.Value {
		t.Fatalf("same arguments: %+v %v", a2, err)
	}
	b, err := createInvoice(ctx, invoiceReq{"ada", 101})
	if err != nil || b.Replayed {
		t.Fatalf("other arguments: %+v %v", b, err)
	}
	if runs.Load() != 2 {
		t.Fatalf("runs = %d, want 2", runs.Load())
	}
	key, _ := idemsql.DeriveKey("create_invoice", invoiceReq{"ada", 100})
	if e.bizRows(key) != 1 {
		t.Fatal("the derived key is not the one stored")
	}
	if got := e.ttlSeconds(key); got < 295 || got > 305 {
		t.Fatalf("wrapper TTL stored as %ds", got)
	}
	// A hand-written keyer, and its error.
	byCustomer := e.wrapRun(func(r invoiceReq) (string, error) {
		if r.Customer == "" {
			return "", fmt.Errorf("no customer: %w", idemsql.ErrInvalidKey)
		}
		return "invoice-of:" + r.Customer, nil
	}, &runs)
	if _, err := byCustomer(ctx, invoiceReq{"", 1}); !errors.Is(err, idemsql.ErrInvalidKey) {
		t.Fatalf("keyer error: %v", err)
	}
	if r, err := byCustomer(ctx, invoiceReq{"bob", 1}); err != nil || r.Replayed || e.bizRows("invoice-of:bob") != 1 {
		t.Fatalf("hand-written keyer: %+v %v", r, err)
	}

	// A keyer that does not see the whole request, and each call's own
	// fingerprint, over the wrapper's options: the same key with another
	// amount is a mismatch, never a replay of the first amount.
	byRef := e.wrapRun(func(r invoiceReq) (string, error) { return "invoice-ref:" + r.Customer, nil }, &runs, idemsql.Options{TTL: 5 * time.Minute})
	req := invoiceReq{"carol", 300}
	first, err := byRef(ctx, req, idemsql.Options{Fingerprint: req})
	if err != nil || first.Replayed {
		t.Fatalf("per-call fingerprint, first call: %+v %v", first, err)
	}
	before := runs.Load()
	changed := invoiceReq{"carol", 999}
	if r, err := byRef(ctx, changed, idemsql.Options{Fingerprint: changed}); !errors.Is(err, idemsql.ErrFingerprintMismatch) || r.Replayed {
		t.Fatalf("the same key with another request: %+v %v; want ErrFingerprintMismatch", r, err)
	}
	if r, err := byRef(ctx, req, idemsql.Options{Fingerprint: req}); err != nil || !r.Replayed || r.Value != first.Value {
		t.Fatalf("the same request again: %+v %v", r, err)
	}
	if runs.Load() != before || e.bizRows("invoice-ref:carol") != 1 {
		t.Fatalf("fn ran again: %d runs, %d business rows", runs.Load()-before, e.bizRows("invoice-ref:carol"))
	}
	if got := e.ttlSeconds("invoice-ref:carol"); got < 295 || got > 305 {
		t.Fatalf("the wrapper's TTL under a call's Options: %ds", got)
	}
	if _, err := byRef(ctx, req, idemsql.Options{}, idemsql.Options{}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("two Options for one call: %v", err)
	}
}

// wrapInsert is the function wrapped by the wrapper tests.
func (e *env) wrapInsert(runs *atomic.Int64) func(ctx context.Context, exec func(context.Context, string, ...any) error, key string, r invoiceReq) (invoice, error) {
	return func(ctx context.Context, exec func(context.Context, string, ...any) error, key string, r invoiceReq) (invoice, error) {
		runs.Add(1)
		if err := exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, r.Amount); err != nil {
			return invoice{}, err
		}
		return invoice{Key: key, Amount: r.Amount, Run: executions.Add(1)}, nil
	}
}

// A stale lease-mode claim may hide an external effect that happened;
// atomic mode must not claim it anew, however old it is.
func testStaleLeaseRowNotReclaimedByDo(t *testing.T, e *env) {
	var runs atomic.Int64
	e.mustGuarded("stale-lease", 1, &runs)
	past := e.secondsAgo(3600)
	if _, err := e.db.Exec(e.q("UPDATE "+e.table+" SET status = 'in_progress', result = NULL, lease_until = "+past+
		", expires_at = "+past+" WHERE idem_key = ?"), "stale-lease"); err != nil {
		t.Fatal(err)
	}
	_, err := e.guarded("stale-lease", 1, &runs)
	if !errors.Is(err, idemsql.ErrInProgress) || runs.Load() != 1 {
		t.Fatalf("err = %v runs = %d, want ErrInProgress and no second run", err, runs.Load())
	}
	if a := e.queryInt("SELECT attempt FROM "+e.table+" WHERE idem_key = ?", "stale-lease"); a != 1 {
		t.Fatalf("attempt = %d: the row was re-claimed", a)
	}
}

// A function with nothing to return (struct{}) has its row stored completed
// with the claim, without a Complete statement. The guarantees are the same.
func testEmptyResult(t *testing.T, e *env) {
	ctx := context.Background()
	var runs atomic.Int64
	notify := func(tx testTx, key string) func(context.Context) (struct{}, error) {
		return func(ctx context.Context) (struct{}, error) {
			runs.Add(1)
			return struct{}{}, tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 0)"), key)
		}
	}
	do := func(key string, fail bool, commit bool) (idemsql.Result[struct{}], error) {
		tx, err := e.begin(ctx, sql.LevelDefault)
		if err != nil {
			t.Fatal(err)
		}
		fn := notify(tx, key)
		if fail {
			fn = func(ctx context.Context) (struct{}, error) {
				runs.Add(1)
				return struct{}{}, errDeclined
			}
		}
		res, err := doIn(ctx, tx, key, fn)
		if commit {
			if cerr := tx.Commit(ctx); cerr != nil {
				t.Fatal(cerr)
			}
		} else {
			_ = tx.Rollback(ctx)
		}
		return res, err
	}
	if res, err := do("empty-1", false, true); err != nil || res.Replayed {
		t.Fatalf("first: %+v %v", res, err)
	}
	if st := e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", "empty-1"); st != "completed" {
		t.Fatalf("status = %q", st)
	}
	if res, err := do("empty-1", false, true); err != nil || !res.Replayed {
		t.Fatalf("duplicate: %+v %v", res, err)
	}
	if runs.Load() != 1 || e.bizRows("empty-1") != 1 {
		t.Fatalf("runs=%d business rows=%d", runs.Load(), e.bizRows("empty-1"))
	}
	// fn's error leaves no row even if the caller commits; a rollback none.
	if _, err := do("empty-2", true, true); !errors.Is(err, errDeclined) || e.idemRows("empty-2") != 0 {
		t.Fatalf("fn error: %v, rows %d", err, e.idemRows("empty-2"))
	}
	if _, err := do("empty-3", false, false); err != nil || e.idemRows("empty-3") != 0 {
		t.Fatalf("rollback: %v, rows %d", err, e.idemRows("empty-3"))
	}
	// Expiry: claimed anew in place.
	e.expire("empty-1")
	if res, err := do("empty-1", false, true); err != nil || res.Replayed || e.bizRows("empty-1") != 2 {
		t.Fatalf("after expiry: %+v %v", res, err)
	}
	// Racing duplicates: one effect.
	runs.Store(0)
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 0; attempt < 50; attempt++ {
				tx, err := e.begin(ctx, sql.LevelDefault)
				if err != nil {
					errs[i] = err
					return
				}
				_, err = doIn(ctx, tx, "empty-race", notify(tx, "empty-race"))
				if err == nil {
					err = tx.Commit(ctx)
				} else {
					_ = tx.Rollback(ctx)
				}
				if errs[i] = err; err == nil || !e.retryable(err) {
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if e.bizRows("empty-race") != 1 {
		t.Fatalf("business rows = %d, want 1", e.bizRows("empty-race"))
	}
}

// A recorded failure inside a recorded failure's fn: the outer failure
// undoes all of the outer fn's writes, the inner call's record included.
func testNestedRecordedFailures(t *testing.T, e *env) {
	ctx := context.Background()
	tx, err := e.begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	rec := idemsql.Options{RecordFailures: true}
	_, err = doIn(ctx, tx, "nrf-outer", func(ctx context.Context) (invoice, error) {
		if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 1)"), "nrf-outer"); err != nil {
			return invoice{}, err
		}
		_, inner := doIn(ctx, tx, "nrf-inner", func(ctx context.Context) (invoice, error) {
			if err := tx.Exec(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, 2)"), "nrf-inner"); err != nil {
				return invoice{}, err
			}
			return invoice{}, idemsql.Permanent("inner_declined", errDeclined)
		}, rec)
		if !errors.Is(inner, idemsql.ErrFailureRecorded) {
			t.Errorf("inner: %v", inner)
		}
		return invoice{}, idemsql.Permanent("outer_declined", errDeclined)
	}, rec)
	if !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatalf("outer: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.bizRows("nrf-outer") + e.bizRows("nrf-inner"); n != 0 {
		t.Fatalf("%d business rows survived the outer failure", n)
	}
	if st := e.queryString("SELECT status FROM "+e.table+" WHERE idem_key = ?", "nrf-outer"); st != "failed" {
		t.Fatalf("outer status = %q", st)
	}
	if e.idemRows("nrf-inner") != 0 {
		t.Fatal("the inner record survived the outer failure that undid it")
	}
}
