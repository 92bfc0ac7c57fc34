package idemsql_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// recorder notes every event and every traced call, in a log shared
// with other recorders so that their order shows.
type recorder struct {
	name   string
	log    *[]string
	events []string
	ends   []string // outcomes
}

type ctxKey string

func (r *recorder) Observe(_ context.Context, e idemsql.Event) {
	r.events = append(r.events, e.Kind)
}

func (r *recorder) StartCall(ctx context.Context, c idemsql.Event) (context.Context, func(idemsql.Event)) {
	*r.log = append(*r.log, "start "+r.name)
	// Each tracer sees the context the one before returned.
	if prev, _ := ctx.Value(ctxKey("tracer")).(string); prev != "" {
		*r.log = append(*r.log, r.name+" after "+prev)
	}
	ctx = context.WithValue(ctx, ctxKey("tracer"), r.name)
	return ctx, func(e idemsql.Event) {
		*r.log = append(*r.log, "end "+r.name)
		r.ends = append(r.ends, e.Outcome)
	}
}

// Every observer of a store sees every event, and every one that traces
// calls traces each call: nesting, the first started is the last ended.
// Nothing of one observer replaces another.
func TestEveryObserverSeesEveryEvent(t *testing.T) {
	var log []string
	a, b := &recorder{name: "a", log: &log}, &recorder{name: "b", log: &log}
	store, err := idemsql.New(execDriver{nopDialect{}}, idemsql.Options{Observers: []idemsql.Observer{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var sawB bool
	if _, err := idemsql.Do(ctx, store, idemdriver.Executor(&nopExec{claimed: true}), "k", func(ctx context.Context) (int, error) {
		sawB = ctx.Value(ctxKey("tracer")) == "b"
		return 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := idemsql.Do(ctx, store, idemdriver.Executor(&nopExec{claimed: true}), "k2", func(context.Context) (int, error) {
		return 0, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("fn's error: %v", err)
	}
	want := []string{idemsql.EventClaimed, idemsql.EventCompleted, idemsql.EventClaimed}
	for _, r := range []*recorder{a, b} {
		if !slices.Equal(r.events, want) {
			t.Errorf("observer %s saw %v, want %v", r.name, r.events, want)
		}
		if !slices.Equal(r.ends, []string{idemsql.OutcomeExecuted, idemsql.OutcomeFailed}) {
			t.Errorf("observer %s traced calls ending %v", r.name, r.ends)
		}
	}
	if !sawB {
		t.Error("fn did not get the context of the last tracer")
	}
	wantLog := []string{"start a", "start b", "b after a", "end b", "end a"}
	if !slices.Equal(log[:5], wantLog) {
		t.Errorf("tracing order %v, want %v", log[:5], wantLog)
	}
}
