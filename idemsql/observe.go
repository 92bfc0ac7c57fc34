package idemsql

import (
	"context"
	"errors"
	"time"
)

// Observer sees what the library does, for logs and metrics: each step of
// a call that matters to an operator is one [Event]. Give observers to a
// store in Options.Observers: every one of them sees every event. idemslog
// (log/slog) and the otel module (OpenTelemetry) are ready-made ones. A
// store without an observer builds no event and pays nothing.
//
// Observe is called synchronously, from the goroutine doing the step, often
// while a transaction is open: keep it fast and never block in it. It must
// be safe for concurrent use.
type Observer interface {
	Observe(ctx context.Context, e Event)
}

// CallTracer is implemented by observers that also want to wrap whole calls
// ([Do], [Run], [RunExternal]), to make a span of each, say. StartCall is
// called when the call starts, with the caller's context (whose span, if
// any, is the parent) and an Event of the call (Op, Mode, Key, Dialect);
// the context it returns is the one the call and fn go on with (the next
// tracer's, if several: they nest in the order given). end is called once
// when the call returns, with the Event completed by its Outcome, Duration
// and Err.
type CallTracer interface {
	StartCall(ctx context.Context, call Event) (context.Context, func(end Event))
}

// Outcomes of a call, in Event.Outcome and as the outcome of metrics.
const (
	OutcomeExecuted        = "executed"         // fn ran and its result is stored
	OutcomeReplayed        = "replayed"         // an earlier result was returned
	OutcomeFailureRecorded = "failure_recorded" // fn's permanent failure was stored (or replayed)
	OutcomeInProgress      = "in_progress"      // another holder has the key
	OutcomeMismatch        = "fingerprint_mismatch"
	OutcomeRetry           = "retry"      // the transaction was lost; retry it
	OutcomeLeaseLost       = "lease_lost" // lease mode: another holder took the key
	OutcomeFailed          = "failed"     // fn failed, or an error without a class of its own
)

// The kinds of [Event], in Event.Kind.
const (
	// EventClaimed: the call claimed the key and fn is about to run.
	// Attempt is the claim's attempt (more than 1 after a re-claim).
	EventClaimed = "claimed"
	// EventReplayed: the key had completed; its result was returned.
	EventReplayed = "replayed"
	// EventFingerprintMismatch: the key was used for another request.
	EventFingerprintMismatch = "fingerprint_mismatch"
	// EventInProgress: another holder has the key (fail-fast, or a live
	// lease).
	EventInProgress = "in_progress"
	// EventTakenOver: lease mode: the call (or a sweeper) took over a claim
	// whose lease ran out. Attempt is the new holder's.
	EventTakenOver = "taken_over"
	// EventLeaseLost: lease mode: the fence refused a write of the holder
	// (a renewal or its outcome): another took the key over or resolved it,
	// and nothing this holder does is recorded. A lease that only ran out by
	// the local clock (no renewal got through, nobody took the key) is no
	// such event: fn is cancelled with [ErrLeaseLost] as its cause, and the
	// call's end (a [CallTracer]) says how it ended.
	EventLeaseLost = "lease_lost"
	// EventCompleted: fn's result is stored (atomic mode: in the caller's
	// transaction, which still has to commit) by Do, Run or RunExternal. A
	// Lease used by hand (ClaimLease, then Complete or Fail) reports its
	// claim and a refused write only.
	EventCompleted = "completed"
	// EventFailureRecorded: fn's permanent failure is stored.
	EventFailureRecorded = "failure_recorded"
	// EventRetried: [Run] lost its transaction and runs it again. Err is
	// why. Lease mode retries its short transactions and fenced writes
	// without an event.
	EventRetried = "retried"
	// EventAbandoned: a call found a claim with no outcome and nobody
	// holding it (Attempt and Err say which), or [Sweep] without a handler
	// gave one up (Attempt 0). A Sweep handler's decision shows as
	// EventTakenOver.
	EventAbandoned = "abandoned"
	// EventPurged: [Purge] deleted Count rows in one batch; a pass that
	// deletes nothing reports one batch of 0.
	EventPurged = "purged"
	// EventSwept: [Sweep] finished a batch: Count claims found, each
	// abandoned, or taken over with its handler's resolution recorded (or
	// not: see SweepStats). A pass that finds nothing reports one batch of
	// 0.
	EventSwept = "swept"
)

// Event is one step of a call, or, for a [CallTracer], the call itself.
type Event struct {
	// Kind is one of the Event constants; empty for a CallTracer's call.
	Kind    string
	Mode    string // "atomic" or "lease"
	Key     string // empty for a step about no one key (a batch)
	Dialect string
	// Attempt is the claim's attempt, where the step has one; else 0.
	Attempt int64
	// Duration is the time since the call started (through [Run]'s
	// retries); for [SweepEvery] and [PurgeEvery], since the loop started.
	Duration time.Duration
	// Count is the number of rows, for EventPurged and EventSwept.
	Count int64
	// Err is the error the step reports, where there is one.
	Err error
	// Op is the call a CallTracer traces: "Do", "Run", "RunExternal";
	// empty in a step's event.
	Op string
	// Outcome is how a traced call ended, one of the Outcome constants;
	// empty until it ended, and in a step's event.
	Outcome string
}

// observe reports an event of a call that started at start to every
// observer of the store.
func (s *core) observe(ctx context.Context, kind string, mode, key string, attempt int64, start time.Time, err error) {
	if len(s.defaults.observers) == 0 {
		return
	}
	s.emit(ctx, Event{Kind: kind, Mode: mode, Key: key, Dialect: s.dialect.Name(),
		Attempt: attempt, Duration: time.Since(start), Err: err})
}

// emit hands e to every observer of the store, in order.
func (s *core) emit(ctx context.Context, e Event) {
	for _, o := range s.defaults.observers {
		o.Observe(ctx, e)
	}
}

// startCall begins a call for the store's CallTracers, in order, each
// with the context the one before returned; finish ends it for each, in
// the reverse order. Without one, both cost a length check.
func (s *core) startCall(ctx context.Context, op, mode, key string, start time.Time) (context.Context, *tracedCall) {
	var c *tracedCall
	for _, o := range s.defaults.observers {
		t, ok := o.(CallTracer)
		if !ok {
			continue
		}
		if c == nil {
			c = &tracedCall{start: start, call: Event{Op: op, Mode: mode, Key: key, Dialect: s.dialect.Name()}}
		}
		var end func(Event)
		ctx, end = t.StartCall(ctx, c.call)
		c.ends = append(c.ends, end)
	}
	return ctx, c // nil when no observer traces calls: nothing allocated
}

// tracedCall is a call that CallTracers follow; nil when there is none.
type tracedCall struct {
	call  Event
	ends  []func(Event)
	start time.Time
	done  bool
}

// end ends the call for every tracer, the last started first.
func (c *tracedCall) end(outcome string, err error) {
	e := c.call
	e.Outcome, e.Duration, e.Err = outcome, time.Since(c.start), err
	for i := len(c.ends) - 1; i >= 0; i-- {
		c.ends[i](e)
	}
}

// finish ends the call with its outcome.
func (c *tracedCall) finish(replayed bool, err error) {
	if c == nil || c.done {
		return
	}
	c.done = true
	c.end(outcomeOf(replayed, err), err)
}

// errPanicked is the error a traced call ends with when fn panicked.
var errPanicked = errors.New("idemsql: fn panicked")

// unwinding, deferred, ends a call that never reached finish (fn
// panicked) as failed, so that its span and metrics are not lost. It does
// not recover: the panic goes on with its own stack.
func (c *tracedCall) unwinding() {
	if c == nil || c.done {
		return
	}
	c.done = true
	c.end(OutcomeFailed, errPanicked)
}

// outcomeOf names how a call ended, for a [CallTracer] and metrics.
func outcomeOf(replayed bool, err error) string {
	switch {
	case err == nil && replayed:
		return OutcomeReplayed
	case err == nil:
		return OutcomeExecuted
	}
	var e *Error
	if ok := errors.As(err, &e); ok {
		switch e.Kind {
		case ErrInProgress:
			return OutcomeInProgress
		case ErrFingerprintMismatch:
			return OutcomeMismatch
		case ErrRetryable:
			return OutcomeRetry
		case ErrLeaseLost:
			return OutcomeLeaseLost
		}
	}
	switch {
	case errors.Is(err, ErrDuplicate):
		return OutcomeReplayed
	case errors.Is(err, ErrFailureRecorded):
		return OutcomeFailureRecorded
	case errors.Is(err, ErrInProgress):
		return OutcomeInProgress
	case errors.Is(err, ErrFingerprintMismatch):
		return OutcomeMismatch
	case errors.Is(err, ErrLeaseLost):
		return OutcomeLeaseLost
	case errors.Is(err, ErrRetryable):
		return OutcomeRetry
	}
	return OutcomeFailed
}

// observeRefusal reports why a duplicate got no result: a fingerprint
// mismatch, a key in progress, an abandoned claim. A replayed failure is a
// replay.
func (s *core) observeRefusal(ctx context.Context, mode, key string, attempt int64, start time.Time, err error) {
	if len(s.defaults.observers) == 0 {
		return
	}
	var kind string
	switch {
	case errors.Is(err, ErrFingerprintMismatch):
		kind = EventFingerprintMismatch
	case errors.Is(err, ErrInProgress):
		kind = EventInProgress
	case errors.Is(err, ErrAbandoned):
		kind = EventAbandoned
	case errors.Is(err, ErrFailureRecorded):
		kind = EventReplayed
	default:
		return
	}
	s.observe(ctx, kind, mode, key, attempt, start, err)
}
