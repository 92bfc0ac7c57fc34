package idemsql_test

import (
	"context"
	"testing"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// endTracer records how each traced call ended.
type endTracer struct{ ends []idemsql.Event }

func (*endTracer) Observe(context.Context, idemsql.Event) {}

func (t *endTracer) StartCall(ctx context.Context, _ idemsql.Event) (context.Context, func(idemsql.Event)) {
	return ctx, func(e idemsql.Event) { t.ends = append(t.ends, e) }
}

// A traced call whose fn panics still ends, as failed, so that a span is
// not left open and the call is counted; the panic goes on to the caller.
func TestTracedCallEndsWhenFnPanics(t *testing.T) {
	tr := &endTracer{}
	store, err := idemsql.New(execDriver{nopDialect{}}, idemsql.Options{Observers: []idemsql.Observer{tr}})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want fn's panic", r)
			}
		}()
		_, _ = idemsql.Do(context.Background(), store, idemdriver.Executor(&nopExec{claimed: true}), "k", func(context.Context) (int, error) {
			panic("boom")
		})
	}()
	if len(tr.ends) != 1 || tr.ends[0].Outcome != idemsql.OutcomeFailed || tr.ends[0].Err == nil {
		t.Fatalf("call ends %+v, want one, failed", tr.ends)
	}
	_, err = idemsql.Do(context.Background(), store, idemdriver.Executor(&nopExec{claimed: true}), "k", func(context.Context) (int, error) { return 1, nil })
	if err != nil || len(tr.ends) != 2 || tr.ends[1].Outcome != idemsql.OutcomeExecuted {
		t.Fatalf("after a normal call: %v, ends %+v", err, tr.ends)
	}
}
