// Package idemotel reports what idemsql does to OpenTelemetry: a span
// around each call of Do, Run and RunExternal, with its outcome; span
// events for its steps; and metrics. It uses the OpenTelemetry API only:
// the application chooses the SDK and exporters. It is a module of its own,
// so that idemsql's module requires nothing of OpenTelemetry.
//
//	obs, err := idemotel.New(idemotel.Config{}) // the global providers
//	store, err := idemsql.New(idempostgres.New(pool), idemsql.Options{Observers: []idemsql.Observer{obs}})
//
// Spans are named "idemsql.Do", "idemsql.Run", "idemsql.RunExternal"; each
// is a child of the span in the caller's context, and the spans of the
// database driver's statements (pgx's tracer, otelsql) started under fn's
// context are its children. Attributes: db.system.name, idemsql.outcome
// (see idemsql.Outcome*), and idemsql.key unless Config.OmitKey.
//
// Metrics, each with the attributes db.system.name and idemsql.operation
// (Do, Run, RunExternal) or idemsql.mode (atomic, lease):
//
//   - idemsql.calls (counter): calls that ended, by idemsql.outcome.
//   - idemsql.call.duration (histogram, seconds): how long they took, by
//     idemsql.outcome.
//   - idemsql.events (counter): steps, by idemsql.event (claimed,
//     replayed, taken_over, lease_lost, ..., and purged and swept, one per
//     batch of Purge and Sweep).
//   - idemsql.purged (counter): rows Purge deleted.
//
// Through the OpenTelemetry Prometheus exporter they appear as
// idemsql_calls_total, idemsql_call_duration_seconds,
// idemsql_events_total and idemsql_purged_total.
package idemotel

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/idemsql/idemsql/idemsql"
)

// Config chooses the providers. The zero value uses the global ones
// (otel.GetTracerProvider, otel.GetMeterProvider).
type Config struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// OmitKey leaves the key out of span attributes and events, for keys
	// that carry what telemetry must not. Nothing else needs rewriting: the
	// library's error messages never name a key (it is in the errors'
	// typed Key fields), so no exception event, error.message or status
	// holds one, a nested call's neither. Only text of the application's
	// own making can: an error of fn's that quotes the key is recorded as
	// it is.
	OmitKey bool
}

const scope = "github.com/idemsql/idemsql/otel"

// New returns an observer, to give to a store with idemsql.Options.Observers.
func New(cfg Config) (idemsql.Observer, error) {
	tp, mp := cfg.TracerProvider, cfg.MeterProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(scope)
	o := &observer{tracer: tp.Tracer(scope), omitKey: cfg.OmitKey}
	var err error
	if o.calls, err = m.Int64Counter("idemsql.calls", metric.WithUnit("{call}"),
		metric.WithDescription("Calls of Do, Run and RunExternal that ended, by outcome")); err != nil {
		return nil, fmt.Errorf("idemotel: %w", err)
	}
	if o.duration, err = m.Float64Histogram("idemsql.call.duration", metric.WithUnit("s"),
		metric.WithDescription("How long calls of Do, Run and RunExternal took, by outcome"),
		// In seconds: the SDK's default bounds are meant for milliseconds
		// and would put every call below 5 s in one bucket.
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)); err != nil {
		return nil, fmt.Errorf("idemotel: %w", err)
	}
	if o.events, err = m.Int64Counter("idemsql.events", metric.WithUnit("{event}"),
		metric.WithDescription("Steps of idemsql calls: claims, replays, takeovers, lost leases, ...")); err != nil {
		return nil, fmt.Errorf("idemotel: %w", err)
	}
	if o.purged, err = m.Int64Counter("idemsql.purged", metric.WithUnit("{row}"),
		metric.WithDescription("Rows Purge deleted")); err != nil {
		return nil, fmt.Errorf("idemotel: %w", err)
	}
	return o, nil
}

type observer struct {
	tracer   trace.Tracer
	omitKey  bool
	calls    metric.Int64Counter
	duration metric.Float64Histogram
	events   metric.Int64Counter
	purged   metric.Int64Counter
}

var (
	_ idemsql.Observer   = (*observer)(nil)
	_ idemsql.CallTracer = (*observer)(nil)
)

// dbSystem is the semantic conventions' name of each dialect.
func dbSystem(dialect string) attribute.KeyValue {
	switch dialect {
	case "postgres":
		dialect = "postgresql"
	case "mysql":
		dialect = "mysql" // MariaDB too: the dialect cannot tell
	}
	return attribute.String("db.system.name", dialect)
}

func (o *observer) StartCall(ctx context.Context, c idemsql.Event) (context.Context, func(idemsql.Event)) {
	attrs := []attribute.KeyValue{dbSystem(c.Dialect), attribute.String("idemsql.operation", c.Op)}
	spanAttrs := attrs
	if !o.omitKey {
		spanAttrs = append(spanAttrs[:len(spanAttrs):len(spanAttrs)], attribute.String("idemsql.key", c.Key))
	}
	ctx, span := o.tracer.Start(ctx, "idemsql."+c.Op, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(spanAttrs...))
	return ctx, func(end idemsql.Event) {
		outcome := attribute.String("idemsql.outcome", end.Outcome)
		span.SetAttributes(outcome)
		if end.Err != nil && end.Outcome != idemsql.OutcomeReplayed {
			span.RecordError(end.Err)
			if end.Outcome == idemsql.OutcomeFailed || end.Outcome == idemsql.OutcomeRetry || end.Outcome == idemsql.OutcomeLeaseLost {
				span.SetStatus(codes.Error, end.Outcome)
			}
		}
		span.End()
		set := metric.WithAttributes(append(attrs, outcome)...)
		o.calls.Add(ctx, 1, set)
		o.duration.Record(ctx, end.Duration.Seconds(), set)
	}
}

func (o *observer) Observe(ctx context.Context, e idemsql.Event) {
	attrs := []attribute.KeyValue{dbSystem(e.Dialect), attribute.String("idemsql.mode", e.Mode)}
	o.events.Add(ctx, 1, metric.WithAttributes(append(attrs, attribute.String("idemsql.event", e.Kind))...))
	if e.Kind == idemsql.EventPurged {
		o.purged.Add(ctx, e.Count, metric.WithAttributes(attrs...))
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	ev := []attribute.KeyValue{}
	if e.Attempt > 0 {
		ev = append(ev, attribute.Int64("idemsql.attempt", e.Attempt))
	}
	if e.Key != "" && !o.omitKey {
		ev = append(ev, attribute.String("idemsql.key", e.Key))
	}
	if e.Err != nil {
		ev = append(ev, attribute.String("error.message", e.Err.Error()))
	}
	span.AddEvent("idemsql."+e.Kind, trace.WithAttributes(ev...))
}
