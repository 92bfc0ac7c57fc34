package idemotel_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/internal/redacttest"
	"github.com/idemsql/idemsql/migrations"
	idemotel "github.com/idemsql/idemsql/otel"
)

// open returns a migrated SQLite database and a store that reports to obs.
func open(t testing.TB, obs idemsql.Observer) (*sql.DB, *idemsql.Store[*sql.Tx]) {
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(t.TempDir(), "app.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := idemsql.New(idemsqlite.New(db), idemsql.Options{Observers: []idemsql.Observer{obs}})
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(context.Background(), db, store); err != nil {
		t.Fatal(err)
	}
	return db, store
}

func TestSpansAndMetrics(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	obs, err := idemotel.New(idemotel.Config{TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	_, store := open(t, obs)

	ctx, parent := tp.Tracer("app").Start(context.Background(), "request")
	for range 2 {
		if _, err := idemsql.Run(ctx, store, "order-1", func(ctx context.Context, tx *sql.Tx) (int, error) {
			return 7, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	parent.End()

	var calls []sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.Name() == "idemsql.Run" {
			calls = append(calls, s)
		}
	}
	if len(calls) != 2 {
		t.Fatalf("%d idemsql.Run spans, want 2", len(calls))
	}
	for i, want := range []string{idemsql.OutcomeExecuted, idemsql.OutcomeReplayed} {
		s := calls[i]
		if got := attr(s.Attributes(), "idemsql.outcome"); got != want {
			t.Errorf("span %d: outcome %q, want %q", i, got, want)
		}
		if attr(s.Attributes(), "idemsql.key") != "order-1" || attr(s.Attributes(), "db.system.name") != "sqlite" {
			t.Errorf("span %d: attributes %v", i, s.Attributes())
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %d is not a child of the caller's span", i)
		}
	}
	var evs []string
	for _, e := range calls[0].Events() {
		evs = append(evs, e.Name)
	}
	if len(evs) != 2 || evs[0] != "idemsql.claimed" || evs[1] != "idemsql.completed" {
		t.Errorf("events of the first call: %v", evs)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	byOutcome := map[string]int64{}
	var histCount uint64
	events := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if m.Name == "idemsql.calls" {
						v, _ := p.Attributes.Value("idemsql.outcome")
						byOutcome[v.AsString()] += p.Value
					}
					if m.Name == "idemsql.events" {
						v, _ := p.Attributes.Value("idemsql.event")
						events[v.AsString()] += p.Value
					}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					histCount += p.Count
				}
			}
		}
	}
	if byOutcome[idemsql.OutcomeExecuted] != 1 || byOutcome[idemsql.OutcomeReplayed] != 1 || histCount != 2 {
		t.Errorf("calls by outcome %v, durations recorded %d", byOutcome, histCount)
	}
	if events["claimed"] != 1 || events["completed"] != 1 || events["replayed"] != 1 {
		t.Errorf("events %v", events)
	}
}

// With OmitKey, no span, span event (exceptions included), status or
// metric holds a key: not as an attribute, and not in the text of an error
// about the key, a nested call's included.
func TestOmitKey(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	obs, err := idemotel.New(idemotel.Config{TracerProvider: tp,
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), OmitKey: true})
	if err != nil {
		t.Fatal(err)
	}
	redacttest.Drive(t, obs)

	leaks := func(what string, attrs []attribute.KeyValue) {
		t.Helper()
		for _, a := range attrs {
			if v := a.Value.String(); strings.Contains(v, redacttest.Secret) {
				t.Errorf("%s: %s holds a key: %q", what, a.Key, v)
			}
		}
	}
	exceptions := map[string]int{} // by span name
	withErr := map[string]int{}    // step events with an error, by name
	for _, s := range spans.Ended() {
		if strings.Contains(s.Name(), redacttest.Secret) || strings.Contains(s.Status().Description, redacttest.Secret) {
			t.Errorf("span %q, status %q: holds a key", s.Name(), s.Status().Description)
		}
		leaks("span "+s.Name(), s.Attributes())
		for _, e := range s.Events() {
			leaks("event "+e.Name+" of span "+s.Name(), e.Attributes)
			switch {
			case e.Name == "exception":
				exceptions[s.Name()]++
			case attr(e.Attributes, "error.message") != "":
				withErr[e.Name]++
			}
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	points := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			var sets []attribute.Set
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					sets = append(sets, dp.Attributes)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					sets = append(sets, dp.Attributes)
				}
			default:
				t.Errorf("metric %s: unexpected data %T", m.Name, m.Data)
			}
			for _, set := range sets {
				points++
				leaks("metric "+m.Name, set.ToSlice())
			}
		}
	}
	// So that the searches above are not vacuous.
	for _, name := range []string{"idemsql.Do", "idemsql.Run", "idemsql.RunExternal"} {
		if exceptions[name] == 0 {
			t.Errorf("no exception event in a %s span; exceptions: %v", name, exceptions)
		}
	}
	for _, name := range []string{"idemsql.fingerprint_mismatch", "idemsql.in_progress", "idemsql.replayed",
		"idemsql.failure_recorded", "idemsql.retried"} {
		if withErr[name] == 0 {
			t.Errorf("no %s event with an error; events with errors: %v", name, withErr)
		}
	}
	if points == 0 {
		t.Error("no metric data points")
	}
}

// Call durations are in seconds, bucketed in seconds: calls of a
// millisecond and of a second land in different buckets.
func TestDurationBucketsAreSeconds(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	obs, err := idemotel.New(idemotel.Config{TracerProvider: sdktrace.NewTracerProvider(), MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	if err != nil {
		t.Fatal(err)
	}
	_, store := open(t, obs)
	if _, err := idemsql.Run(context.Background(), store, "k", func(ctx context.Context, tx *sql.Tx) (int, error) { return 1, nil }); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "idemsql.call.duration" {
				continue
			}
			h := m.Data.(metricdata.Histogram[float64])
			for _, dp := range h.DataPoints {
				if !slices.Contains(dp.Bounds, 0.001) || !slices.Contains(dp.Bounds, 1) || slices.Max(dp.Bounds) > 60 {
					t.Fatalf("bounds %v: want second-scale buckets", dp.Bounds)
				}
			}
			return
		}
	}
	t.Fatal("no idemsql.call.duration")
}

func attr(attrs []attribute.KeyValue, key string) string {
	for _, a := range attrs {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}
