package idemotel_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/idemsql/idemsql/dialects/sqlite"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/migrations"
	idemotel "github.com/idemsql/idemsql/otel"
)

// open returns a migrated SQLite database and a store that reports to obs.
func open(t testing.TB, obs idemsql.Observer) (*sql.DB, *idemsql.Store) {
	db, err := sql.Open("sqlite", sqlite.DSN(filepath.Join(t.TempDir(), "app.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := sqlite.New(idemsql.WithObserver(obs))
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
	db, store := open(t, obs)

	ctx, parent := tp.Tracer("app").Start(context.Background(), "request")
	for range 2 {
		if _, err := idemsql.Run(ctx, store.DB(db, nil), "order-1", func(ctx context.Context, tx *sql.Tx) (int, error) {
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

func TestOmitKey(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	obs, err := idemotel.New(idemotel.Config{TracerProvider: tp, MeterProvider: sdkmetric.NewMeterProvider(), OmitKey: true})
	if err != nil {
		t.Fatal(err)
	}
	db, store := open(t, obs)
	if _, err := idemsql.Run(context.Background(), store.DB(db, nil), "secret-key", func(ctx context.Context, tx *sql.Tx) (int, error) {
		return 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	// The library's errors quote the key: a mismatch's must not bring it
	// back into the span's exception or the events' error.message.
	if _, err := idemsql.Run(context.Background(), store.DB(db, nil), "secret-key", func(ctx context.Context, tx *sql.Tx) (int, error) {
		return 2, nil
	}, idemsql.WithFingerprint([]byte("another request"))); !errors.Is(err, idemsql.ErrFingerprintMismatch) || !strings.Contains(err.Error(), "secret-key") {
		t.Fatalf("err = %v, want a mismatch naming the key", err)
	}
	// fn's error may carry a nested call's error, quoting that call's key.
	nested := &idemsql.Error{Op: "claim", Key: "inner-secret", Kind: idemsql.ErrFingerprintMismatch}
	if _, err := idemsql.Run(context.Background(), store.DB(db, nil), "secret-key-2", func(ctx context.Context, tx *sql.Tx) (int, error) {
		return 0, fmt.Errorf("charging: %w", nested)
	}); !errors.Is(err, nested) {
		t.Fatalf("err = %v, want fn's", err)
	}
	leaks := func(attrs []attribute.KeyValue) bool {
		for _, a := range attrs {
			if v := a.Value.String(); strings.Contains(v, "secret-key") || strings.Contains(v, "inner-secret") {
				return true
			}
		}
		return false
	}
	for _, s := range spans.Ended() {
		if leaks(s.Attributes()) {
			t.Errorf("span %s carries the key: %v", s.Name(), s.Attributes())
		}
		for _, e := range s.Events() {
			if leaks(e.Attributes) {
				t.Errorf("event %s of span %s carries the key: %v", e.Name, s.Name(), e.Attributes)
			}
		}
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
	db, store := open(t, obs)
	if _, err := idemsql.Run(context.Background(), store.DB(db, nil), "k", func(ctx context.Context, tx *sql.Tx) (int, error) { return 1, nil }); err != nil {
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
