// Package idemslog logs what idemsql does through log/slog: give the
// observer it returns to a store in idemsql.Options.Observers.
//
//	store, err := idemsql.New(idempostgres.New(pool), idemsql.Options{
//		Observers: []idemsql.Observer{idemslog.New(slog.Default(), nil)},
//	})
//
// Every event is one record, message "idemsql " + the event's name, with
// the attributes mode, key, dialect, attempt (when the step has one),
// duration, count (purge and sweep batches) and error. Levels follow what
// an operator should look at:
//
//   - Debug: claimed, replayed, completed — the normal life of a key.
//   - Info: in_progress, retried, taken_over, failure_recorded, purged,
//     swept — expected under concurrency and failures, worth counting.
//   - Warn: fingerprint_mismatch (a client reused a key for another
//     request), lease_lost (a holder stalled past its lease; its external
//     effect may repeat downstream), abandoned (a claim with no outcome and
//     no holder).
package idemslog

import (
	"context"
	"log/slog"

	"github.com/idemsql/idemsql/idemsql"
)

// Options adjust the records. The zero value logs keys as they are.
type Options struct {
	// Key, if set, is what the key attribute holds instead of the key
	// (a hash, a prefix), for keys that carry what logs must not. Then no
	// attribute of a record holds a key: the library's error texts never
	// name one (the key is in the errors' typed Key fields), a nested
	// call's neither. Only text of the application's making can: an error
	// of fn's that quotes the key is logged as it is.
	Key func(key string) slog.Value
	// Level, if set, overrides the level of an event kind.
	Level func(string) slog.Level
}

// New returns an observer that logs every event to l. opts may be nil.
func New(l *slog.Logger, opts *Options) idemsql.Observer {
	o := &observer{l: l}
	if opts != nil {
		o.opts = *opts
	}
	return o
}

type observer struct {
	l    *slog.Logger
	opts Options
}

var _ idemsql.Observer = (*observer)(nil)

// Level is the level an event is logged at by default.
func Level(k string) slog.Level {
	switch k {
	case idemsql.EventFingerprintMismatch, idemsql.EventLeaseLost, idemsql.EventAbandoned:
		return slog.LevelWarn
	case idemsql.EventInProgress, idemsql.EventRetried, idemsql.EventTakenOver,
		idemsql.EventFailureRecorded, idemsql.EventPurged, idemsql.EventSwept:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

func (o *observer) Observe(ctx context.Context, e idemsql.Event) {
	level := Level(e.Kind)
	if o.opts.Level != nil {
		level = o.opts.Level(e.Kind)
	}
	if !o.l.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("mode", e.Mode))
	if e.Key != "" {
		if o.opts.Key != nil {
			attrs = append(attrs, slog.Attr{Key: "key", Value: o.opts.Key(e.Key)})
		} else {
			attrs = append(attrs, slog.String("key", e.Key))
		}
	}
	attrs = append(attrs, slog.String("dialect", e.Dialect))
	if e.Attempt > 0 {
		attrs = append(attrs, slog.Int64("attempt", e.Attempt))
	}
	attrs = append(attrs, slog.Duration("duration", e.Duration))
	if e.Kind == idemsql.EventPurged || e.Kind == idemsql.EventSwept {
		attrs = append(attrs, slog.Int64("count", e.Count))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	o.l.LogAttrs(ctx, level, "idemsql "+e.Kind, attrs...)
}
