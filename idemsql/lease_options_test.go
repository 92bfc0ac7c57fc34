package idemsql_test

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// Options are checked before any SQL: the pool below is never connected.
func TestLeaseOptionScopes(t *testing.T) {
	g, err := idemsql.New(unconnected(t), idemsql.Options{Lease: time.Minute, FailFast: true})
	if err != nil {
		t.Fatalf("a store takes the options of both modes: %v", err)
	}
	ctx := context.Background()
	fn := func(context.Context, idemsql.Claim) (int, error) { return 1, nil }
	run := func(context.Context, *sql.Tx) (int, error) { return 1, nil }

	for name, o := range map[string]idemsql.Options{
		"FailFast":            idemsql.Options{FailFast: true},
		"LockTimeout":         idemsql.Options{LockTimeout: time.Second},
		"Table":               idemsql.Options{Table: "x"},
		"heartbeat > lease/2": idemsql.Options{Heartbeat: 31 * time.Second},
	} {
		if _, err := idemsql.RunExternal(ctx, g, "k", fn, o); !errors.Is(err, idemsql.ErrInvalidOption) {
			t.Errorf("RunExternal with %s: %v, want ErrInvalidOption", name, err)
		}
		if _, err := idemsql.ClaimLease(ctx, g, "k", o); !errors.Is(err, idemsql.ErrInvalidOption) {
			t.Errorf("ClaimLease with %s: %v, want ErrInvalidOption", name, err)
		}
	}
	for _, o := range []idemsql.Options{{Lease: time.Second}, {Heartbeat: time.Second},
		{LeaseWait: time.Second}, {BatchSize: 5}} {
		_, err := idemsql.Run(ctx, g, "k", run, o)
		if !errors.Is(err, idemsql.ErrInvalidOption) || !strings.Contains(err.Error(), "lease mode") {
			t.Errorf("Run with a lease option: %v", err)
		}
	}
	if _, err := idemsql.Sweep(ctx, g, nil, idemsql.Options{LockTimeout: time.Second}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Errorf("Sweep with LockTimeout: %v", err)
	}
}

func TestErrorWithoutKey(t *testing.T) {
	e := &idemsql.Error{Op: "purge", Err: errors.New("boom")}
	if got := e.Error(); got != "idemsql: purge: boom" {
		t.Errorf("Error() = %q", got)
	}
	e = &idemsql.Error{Op: "renew", Key: "k", Kind: idemsql.ErrLeaseLost}
	if got := e.Error(); got != `idemsql: renew: lease lost` {
		t.Errorf("Error() = %q", got)
	}
}

// Options.ResultType is a lease-mode option, and RunExternal refuses one whose
// type is not its fn's, before any SQL: the pool below is never connected.
func TestResultTypeOption(t *testing.T) {
	g, err := idemsql.New(unconnected(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idemsql.New(unconnected(t), idemsql.Options{ResultType: reflect.TypeFor[int]()}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Errorf("a store with ResultType: %v, want ErrInvalidOption", err)
	}
	ctx := context.Background()
	fn := func(context.Context, idemsql.Claim) (int, error) { return 1, nil }
	if _, err := idemsql.RunExternal(ctx, g, "k", fn, idemsql.Options{ResultType: reflect.TypeFor[string]()}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Errorf("RunExternal returning int with ResultType string: %v, want ErrInvalidOption", err)
	}
	run := func(context.Context, *sql.Tx) (int, error) { return 1, nil }
	if _, err := idemsql.Run(ctx, g, "k", run, idemsql.Options{ResultType: reflect.TypeFor[int]()}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Errorf("Run with ResultType: %v, want ErrInvalidOption", err)
	}
}
