package idemotel_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/idemsql/idemsql/idemsql"
	idemotel "github.com/idemsql/idemsql/otel"
)

// rig is an observer with an in-memory span recorder and a manual metric
// reader, a migrated SQLite database and a store reporting to it, and the
// calls a test made, to check the spans and metrics against.
type rig struct {
	t      *testing.T
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	db     *sql.DB
	store  *idemsql.Store[*sql.Tx]
	calls  []wantCall
	// untraced counts the step events of calls that make no span
	// (ClaimLease), which idemsql.events counts too.
	untraced map[string]int64
}

// wantCall is one call of Do, Run or RunExternal as the caller saw it.
type wantCall struct {
	op, key, outcome string
	// parent is the span of the caller's context; invalid for a root.
	parent trace.SpanContext
	// inFn is what fn found in its context: the call's span.
	inFn fnSeen
	err  error
	// wall is how long the call took, measured around it by the caller: the
	// recorded duration can be no longer.
	wall time.Duration
	// events are the names of the span's step events, in order; nil: not
	// checked.
	events []string
}

func newRig(t *testing.T) *rig {
	r := &rig{t: t, spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(), untraced: map[string]int64{}}
	r.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	obs, err := idemotel.New(idemotel.Config{TracerProvider: r.tp, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	r.db, r.store = open(t, obs)
	return r
}

// fnSeen is what fn saw, if it ran: the span of its context.
type fnSeen struct {
	ran  bool
	span trace.SpanContext
}

// saw records the span of fn's context.
func (f *fnSeen) saw(ctx context.Context) {
	f.ran, f.span = true, trace.SpanContextFromContext(ctx)
}

// call makes one call through f, timing it, and records what its span and
// metrics must show. f's fn reports the span of its context to inFn.
func (r *rig) call(ctx context.Context, op, key, outcome string, events []string, f func(ctx context.Context, inFn *fnSeen) error) error {
	r.t.Helper()
	var inFn fnSeen
	start := time.Now()
	err := f(ctx, &inFn)
	wall := time.Since(start)
	r.calls = append(r.calls, wantCall{op: op, key: key, outcome: outcome, parent: trace.SpanContextFromContext(ctx),
		inFn: inFn, err: err, wall: wall, events: events})
	return err
}

// wantStatus is the span status the adapter gives each outcome: Error for
// fn's failures, lost transactions and lost leases. A key's misuse
// (fingerprint_mismatch), a key held elsewhere (in_progress) and a recorded
// permanent failure record the error as a span event but leave the status
// Unset, like replays (OpenTelemetry says instrumentation libraries should
// not set Ok). This pins the adapter as it is, so that changing it is a
// decision.
func wantStatus(outcome string) codes.Code {
	switch outcome {
	case idemsql.OutcomeFailed, idemsql.OutcomeRetry, idemsql.OutcomeLeaseLost:
		return codes.Error
	}
	return codes.Unset
}

// callSpans returns the spans of idemsql calls, in the order they ended.
func (r *rig) callSpans() []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.spans.Ended() {
		if strings.HasPrefix(s.Name(), "idemsql.") {
			out = append(out, s)
		}
	}
	return out
}

// check compares the spans and metrics with the calls made.
func (r *rig) check() {
	t := r.t
	t.Helper()
	if n := len(r.spans.Started()) - len(r.spans.Ended()); n != 0 {
		t.Errorf("%d spans were started and never ended", n)
	}
	spans := r.callSpans()
	if len(spans) != len(r.calls) {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name()+"/"+attr(s.Attributes(), "idemsql.outcome"))
		}
		t.Fatalf("%d call spans %v for %d calls", len(spans), names, len(r.calls))
	}
	// The step events the spans carry, by event, which idemsql.events must
	// count.
	stepEvents := map[string]int64{}
	for k, v := range r.untraced {
		stepEvents[k] += v
	}
	for i, c := range r.calls {
		s := spans[i]
		what := fmt.Sprintf("call %d (%s %q, want %s)", i, c.op, c.key, c.outcome)
		if s.Name() != "idemsql."+c.op {
			t.Errorf("%s: span %q", what, s.Name())
		}
		if s.SpanKind() != trace.SpanKindInternal {
			t.Errorf("%s: span kind %v", what, s.SpanKind())
		}
		a := s.Attributes()
		if got := attr(a, "idemsql.outcome"); got != c.outcome {
			t.Errorf("%s: outcome %q", what, got)
		}
		if attr(a, "idemsql.key") != c.key || attr(a, "idemsql.operation") != c.op || attr(a, "db.system.name") != "sqlite" {
			t.Errorf("%s: attributes %v", what, a)
		}
		if c.parent.IsValid() {
			if s.Parent().SpanID() != c.parent.SpanID() || s.SpanContext().TraceID() != c.parent.TraceID() {
				t.Errorf("%s: parent %v in trace %v, want the caller's span %v in %v", what,
					s.Parent().SpanID(), s.SpanContext().TraceID(), c.parent.SpanID(), c.parent.TraceID())
			}
		} else if s.Parent().IsValid() {
			t.Errorf("%s: parent %v, want a root span", what, s.Parent().SpanID())
		}
		switch c.outcome {
		case idemsql.OutcomeReplayed, idemsql.OutcomeMismatch, idemsql.OutcomeInProgress:
		default:
			if !c.inFn.ran { // so that the check below is not vacuous
				t.Errorf("%s: fn did not run", what)
			}
		}
		if c.inFn.ran && !c.inFn.span.Equal(s.SpanContext()) {
			t.Errorf("%s: fn's context carries span %v, want the call's %v", what, c.inFn.span.SpanID(), s.SpanContext().SpanID())
		}
		if got, want := s.Status().Code, wantStatus(c.outcome); got != want {
			t.Errorf("%s: status %v %q, want %v", what, got, s.Status().Description, want)
		} else if want == codes.Error && s.Status().Description != c.outcome {
			t.Errorf("%s: status description %q", what, s.Status().Description)
		}
		var steps, exceptions []string
		for _, e := range s.Events() {
			if e.Name == "exception" {
				exceptions = append(exceptions, attr(e.Attributes, "exception.message"))
				continue
			}
			steps = append(steps, e.Name)
			stepEvents[strings.TrimPrefix(e.Name, "idemsql.")]++
		}
		switch {
		case c.err != nil && c.outcome != idemsql.OutcomeReplayed:
			if len(exceptions) != 1 || exceptions[0] != c.err.Error() {
				t.Errorf("%s: exception events %q, want the call's error %q", what, exceptions, c.err)
			}
		case len(exceptions) != 0:
			t.Errorf("%s: exception events %q on a call that did not fail", what, exceptions)
		}
		if c.events != nil && strings.Join(steps, ",") != strings.Join(c.events, ",") {
			t.Errorf("%s: events %v, want %v", what, steps, c.events)
		}
	}
	r.checkMetrics(stepEvents)
}

type opOutcome struct{ op, outcome string }

func (r *rig) checkMetrics(stepEvents map[string]int64) {
	t := r.t
	t.Helper()
	count := map[opOutcome]int64{}
	wall := map[opOutcome]time.Duration{}
	maxWall := map[opOutcome]time.Duration{}
	for _, c := range r.calls {
		k := opOutcome{c.op, c.outcome}
		count[k]++
		wall[k] += c.wall
		maxWall[k] = max(maxWall[k], c.wall)
	}

	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	calls := map[opOutcome]int64{}
	events := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			seen[m.Name] = true
			switch m.Name {
			case "idemsql.calls":
				d, ok := m.Data.(metricdata.Sum[int64])
				if !ok || !d.IsMonotonic {
					t.Fatalf("idemsql.calls is %T, want a monotonic Sum[int64]", m.Data)
				}
				for _, p := range d.DataPoints {
					k := callAttrs(t, "idemsql.calls", p.Attributes)
					calls[k] += p.Value
				}
			case "idemsql.call.duration":
				d, ok := m.Data.(metricdata.Histogram[float64])
				if !ok {
					t.Fatalf("idemsql.call.duration is %T, want a Histogram[float64]", m.Data)
				}
				if m.Unit != "s" {
					t.Errorf("idemsql.call.duration in %q, want s", m.Unit)
				}
				points := map[opOutcome]int{}
				for _, p := range d.DataPoints {
					k := callAttrs(t, "idemsql.call.duration", p.Attributes)
					points[k]++
					what := fmt.Sprintf("idemsql.call.duration{%s, %s}", k.op, k.outcome)
					if int64(p.Count) != count[k] {
						t.Errorf("%s: %d durations, want %d", what, p.Count, count[k])
					}
					// Every call takes some time, and no more than its
					// caller saw it take.
					if p.Sum <= 0 || p.Sum > wall[k].Seconds() {
						t.Errorf("%s: sum %gs, want in (0, %gs]", what, p.Sum, wall[k].Seconds())
					}
					lo, okMin := p.Min.Value()
					hi, okMax := p.Max.Value()
					if !okMin || !okMax || lo <= 0 || hi > maxWall[k].Seconds() || lo > hi {
						t.Errorf("%s: min %g, max %g, want in (0, %gs]", what, lo, hi, maxWall[k].Seconds())
					}
				}
				for k := range count {
					if points[k] != 1 {
						t.Errorf("idemsql.call.duration{%s, %s}: %d data points, want 1", k.op, k.outcome, points[k])
					}
				}
				if len(points) != len(count) {
					t.Errorf("idemsql.call.duration: data points for %v, want %v", points, count)
				}
			case "idemsql.events":
				d, ok := m.Data.(metricdata.Sum[int64])
				if !ok {
					t.Fatalf("idemsql.events is %T", m.Data)
				}
				for _, p := range d.DataPoints {
					mode, _ := p.Attributes.Value("idemsql.mode")
					sys, _ := p.Attributes.Value("db.system.name")
					if (mode.AsString() != "atomic" && mode.AsString() != "lease") || sys.AsString() != "sqlite" || p.Attributes.Len() != 3 {
						t.Errorf("idemsql.events: attributes %v", p.Attributes.ToSlice())
					}
					ev, _ := p.Attributes.Value("idemsql.event")
					events[ev.AsString()] += p.Value
				}
			}
		}
	}
	for _, name := range []string{"idemsql.calls", "idemsql.call.duration", "idemsql.events"} {
		if !seen[name] {
			t.Errorf("no %s metric", name)
		}
	}
	if fmt.Sprint(sorted(calls)) != fmt.Sprint(sorted(count)) {
		t.Errorf("idemsql.calls %v, want %v", sorted(calls), sorted(count))
	}
	if fmt.Sprint(events) != fmt.Sprint(stepEvents) {
		t.Errorf("idemsql.events %v, want the step events of the spans %v", events, stepEvents)
	}
}

// callAttrs checks the attributes of a call metric's data point and returns
// its operation and outcome.
func callAttrs(t *testing.T, metric string, set attribute.Set) opOutcome {
	t.Helper()
	op, _ := set.Value("idemsql.operation")
	outcome, _ := set.Value("idemsql.outcome")
	sys, _ := set.Value("db.system.name")
	if set.Len() != 3 || op.AsString() == "" || outcome.AsString() == "" || sys.AsString() != "sqlite" {
		t.Errorf("%s: attributes %v, want db.system.name, idemsql.operation, idemsql.outcome", metric, set.ToSlice())
	}
	return opOutcome{op.AsString(), outcome.AsString()}
}

func sorted(m map[opOutcome]int64) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s/%s=%d", k.op, k.outcome, v))
	}
	sort.Strings(out)
	return out
}

// errDeclined is fn's own failure.
var errDeclined = errors.New("card declined")

// Do in the caller's transaction: a span per call, child of the caller's
// span (or a root), whose context fn gets; each outcome Do can reach alone.
func TestDoSpans(t *testing.T) {
	r := newRig(t)
	app, parent := r.tp.Tracer("app").Start(context.Background(), "request")

	// do runs Do in a transaction of its own, committed when Do asks for a
	// commit (no error, or a recorded failure).
	do := func(ctx context.Context, key, outcome string, events []string, fn func(context.Context) (int, error), opts ...idemsql.Options) error {
		t.Helper()
		return r.call(ctx, "Do", key, outcome, events, func(ctx context.Context, inFn *fnSeen) error {
			tx, err := r.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = idemsql.Do(ctx, r.store, tx, key, func(ctx context.Context) (int, error) {
				inFn.saw(ctx)
				return fn(ctx)
			}, opts...)
			if err == nil || errors.Is(err, idemsql.ErrFailureRecorded) {
				if cerr := tx.Commit(); cerr != nil {
					t.Fatal(cerr)
				}
			} else {
				_ = tx.Rollback()
			}
			return err
		})
	}
	seven := func(context.Context) (int, error) { return 7, nil }
	fp := idemsql.Options{Fingerprint: "order 1"}

	if err := do(app, "do-1", idemsql.OutcomeExecuted, []string{"idemsql.claimed", "idemsql.completed"}, seven, fp); err != nil {
		t.Fatal(err)
	}
	if err := do(app, "do-1", idemsql.OutcomeReplayed, []string{"idemsql.replayed"}, seven, fp); err != nil {
		t.Fatal(err)
	}
	// A replay that the caller asked to get as an error is still a replay.
	if err := do(app, "do-1", idemsql.OutcomeReplayed, []string{"idemsql.replayed"}, seven,
		idemsql.Options{Fingerprint: fp.Fingerprint, ErrorOnDuplicate: true}); !errors.Is(err, idemsql.ErrDuplicate) {
		t.Fatalf("duplicate: %v, want ErrDuplicate", err)
	}
	if err := do(app, "do-1", idemsql.OutcomeMismatch, []string{"idemsql.fingerprint_mismatch"}, seven,
		idemsql.Options{Fingerprint: "order 2"}); !errors.Is(err, idemsql.ErrFingerprintMismatch) {
		t.Fatalf("other request: %v, want ErrFingerprintMismatch", err)
	}
	if err := do(app, "do-2", idemsql.OutcomeFailed, []string{"idemsql.claimed"}, func(context.Context) (int, error) {
		return 0, errDeclined
	}); !errors.Is(err, errDeclined) {
		t.Fatalf("failing fn: %v", err)
	}
	if err := do(app, "do-3", idemsql.OutcomeFailureRecorded, []string{"idemsql.claimed", "idemsql.failure_recorded"}, func(context.Context) (int, error) {
		return 0, idemsql.Permanent("declined", errDeclined)
	}, idemsql.Options{RecordFailures: true}); !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatalf("permanent failure: %v, want ErrFailureRecorded", err)
	}
	if err := do(app, "do-4", idemsql.OutcomeRetry, []string{"idemsql.claimed"}, func(context.Context) (int, error) {
		return 0, fmt.Errorf("fn lost its transaction: %w", idemsql.ErrRetryable)
	}); !errors.Is(err, idemsql.ErrRetryable) {
		t.Fatalf("retryable fn: %v, want ErrRetryable", err)
	}
	// No span in the caller's context: the call's span is a root.
	if err := do(context.Background(), "do-5", idemsql.OutcomeExecuted, nil, seven); err != nil {
		t.Fatal(err)
	}
	parent.End()
	r.check()
}

// Run: a span per call, not one per attempt nor one more for the Do inside;
// retried attempts are events of the one span.
func TestRunSpans(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	pool := r.store
	run := func(ctx context.Context, key, outcome string, events []string, fn func(context.Context) (int, error), opts ...idemsql.Options) error {
		t.Helper()
		return r.call(ctx, "Run", key, outcome, events, func(ctx context.Context, inFn *fnSeen) error {
			_, err := idemsql.Run(ctx, pool, key, func(ctx context.Context, tx *sql.Tx) (int, error) {
				inFn.saw(ctx)
				return fn(ctx)
			}, opts...)
			return err
		})
	}
	seven := func(context.Context) (int, error) { return 7, nil }

	if err := run(ctx, "run-1", idemsql.OutcomeExecuted, []string{"idemsql.claimed", "idemsql.completed"}, seven); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, "run-1", idemsql.OutcomeReplayed, []string{"idemsql.replayed"}, seven); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, "run-1", idemsql.OutcomeMismatch, []string{"idemsql.fingerprint_mismatch"}, seven,
		idemsql.Options{Fingerprint: "another request"}); !errors.Is(err, idemsql.ErrFingerprintMismatch) {
		t.Fatalf("other request: %v, want ErrFingerprintMismatch", err)
	}
	if err := run(ctx, "run-2", idemsql.OutcomeFailed, []string{"idemsql.claimed"}, func(context.Context) (int, error) {
		return 0, errDeclined
	}); !errors.Is(err, errDeclined) {
		t.Fatalf("failing fn: %v", err)
	}
	// The first attempt loses its transaction, the second runs: one span.
	attempts := 0
	if err := run(ctx, "run-3", idemsql.OutcomeExecuted,
		[]string{"idemsql.claimed", "idemsql.retried", "idemsql.claimed", "idemsql.completed"},
		func(context.Context) (int, error) {
			if attempts++; attempts == 1 {
				return 0, fmt.Errorf("deadlock: %w", idemsql.ErrRetryable)
			}
			return 3, nil
		}, idemsql.Options{MaxAttempts: 2, Backoff: time.Nanosecond, MaxBackoff: time.Nanosecond}); err != nil || attempts != 2 {
		t.Fatalf("retried call: %v after %d attempts", err, attempts)
	}
	if err := run(ctx, "run-4", idemsql.OutcomeRetry, []string{"idemsql.claimed"}, func(context.Context) (int, error) {
		return 0, fmt.Errorf("deadlock: %w", idemsql.ErrRetryable)
	}, idemsql.Options{MaxAttempts: 1}); !errors.Is(err, idemsql.ErrRetryable) {
		t.Fatalf("retryable fn, one attempt: %v", err)
	}
	r.check()
}

// RunExternal (lease mode): a span per call, child of the caller's span;
// a call made inside fn is a child of the outer call's span. Covers a key
// held by a live lease (in_progress) and a lease lost to another holder.
func TestRunExternalSpans(t *testing.T) {
	r := newRig(t)
	app, parent := r.tp.Tracer("app").Start(context.Background(), "request")
	pool := r.store
	ext := func(ctx context.Context, key, outcome string, events []string, fn func(context.Context) (int, error), opts ...idemsql.Options) error {
		t.Helper()
		return r.call(ctx, "RunExternal", key, outcome, events, func(ctx context.Context, inFn *fnSeen) error {
			_, err := idemsql.RunExternal(ctx, pool, key, func(ctx context.Context, l idemsql.Claim) (int, error) {
				inFn.saw(ctx)
				return fn(ctx)
			}, opts...)
			return err
		})
	}
	seven := func(context.Context) (int, error) { return 7, nil }

	// Inside fn the key is held by this call's live lease: a nested call
	// finds it in progress, and its span is a child of the outer one.
	if err := ext(app, "ext-1", idemsql.OutcomeExecuted, []string{"idemsql.claimed", "idemsql.completed"}, func(ctx context.Context) (int, error) {
		if err := ext(ctx, "ext-1", idemsql.OutcomeInProgress, []string{"idemsql.in_progress"}, seven); !errors.Is(err, idemsql.ErrInProgress) {
			t.Errorf("nested call: %v, want ErrInProgress", err)
		}
		return 7, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := ext(app, "ext-1", idemsql.OutcomeReplayed, []string{"idemsql.replayed"}, seven); err != nil {
		t.Fatal(err)
	}
	if err := ext(app, "ext-1", idemsql.OutcomeMismatch, []string{"idemsql.fingerprint_mismatch"}, seven,
		idemsql.Options{Fingerprint: "another request"}); !errors.Is(err, idemsql.ErrFingerprintMismatch) {
		t.Fatalf("other request: %v, want ErrFingerprintMismatch", err)
	}
	if err := ext(app, "ext-2", idemsql.OutcomeFailed, []string{"idemsql.claimed"}, func(context.Context) (int, error) {
		return 0, errDeclined
	}); !errors.Is(err, errDeclined) {
		t.Fatalf("failing fn: %v", err)
	}
	// Another holder takes the key while fn runs, as far as the fence can
	// tell: the outcome cannot be recorded.
	if err := ext(app, "ext-3", idemsql.OutcomeLeaseLost, []string{"idemsql.claimed", "idemsql.lease_lost"}, func(ctx context.Context) (int, error) {
		if _, err := r.db.ExecContext(ctx, "UPDATE idempotency_keys SET attempt = attempt + 1, owner = ? WHERE idem_key = ?", "someone-else", "ext-3"); err != nil {
			t.Error(err)
		}
		return 7, nil
	}); !errors.Is(err, idemsql.ErrLeaseLost) {
		t.Fatalf("taken-over holder: %v, want ErrLeaseLost", err)
	}
	// A claim held by ClaimLease: a root call finds the key in progress.
	c, err := idemsql.ClaimLease(context.Background(), pool, "ext-4")
	if err != nil || !c.Held {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	r.untraced["claimed"]++
	if err := ext(context.Background(), "ext-4", idemsql.OutcomeInProgress, []string{"idemsql.in_progress"}, seven); !errors.Is(err, idemsql.ErrInProgress) {
		t.Fatalf("held key: %v, want ErrInProgress", err)
	}
	parent.End()
	spans := r.callSpans()
	r.check()
	// The nested call ended first; its parent is the outer call's span.
	if len(spans) > 1 && spans[0].Parent().SpanID() != spans[1].SpanContext().SpanID() {
		t.Errorf("nested call's parent %v, want the outer call's span %v", spans[0].Parent().SpanID(), spans[1].SpanContext().SpanID())
	}
}
