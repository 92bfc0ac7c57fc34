package idemsql_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemsql"
)

func TestStepsRefuseBadUse(t *testing.T) {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	noop := func(ctx context.Context, c idemsql.Claim) (int, error) { return 1, nil }
	cases := map[string]func(ctx context.Context, s *idemsql.Steps[*sql.Tx]) error{
		"empty name": func(ctx context.Context, s *idemsql.Steps[*sql.Tx]) error {
			_, err := idemsql.Step(ctx, s, "", noop)
			return err
		},
		"a space": func(ctx context.Context, s *idemsql.Steps[*sql.Tx]) error {
			_, err := idemsql.Step(ctx, s, "send mail", noop)
			return err
		},
		"65 bytes": func(ctx context.Context, s *idemsql.Steps[*sql.Tx]) error {
			_, err := idemsql.Step(ctx, s, strings.Repeat("a", 65), noop)
			return err
		},
		"a name twice": func(ctx context.Context, s *idemsql.Steps[*sql.Tx]) error {
			if _, err := idemsql.Step(ctx, s, "a", noop); err != nil {
				return err
			}
			_, err := idemsql.Step(ctx, s, "a", noop)
			return err
		},
		"a step inside a step": func(ctx context.Context, s *idemsql.Steps[*sql.Tx]) error {
			_, err := idemsql.Step(ctx, s, "outer", func(ctx context.Context, c idemsql.Claim) (int, error) {
				return idemsql.StepTx(ctx, s, "inner", func(ctx context.Context, tx *sql.Tx) (int, error) { return 1, nil })
			})
			return err
		},
		"nil fn": func(ctx context.Context, s *idemsql.Steps[*sql.Tx]) error {
			_, err := idemsql.StepTx[*sql.Tx, int](ctx, s, "a", nil)
			return err
		},
	}
	for name, use := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := idemsql.RunSteps(ctx, store, "bad:"+name, 0, func(ctx context.Context, s *idemsql.Steps[*sql.Tx], _ int) (int, error) {
				return 0, use(ctx, s)
			})
			if !errors.Is(err, idemsql.ErrInvalidOption) {
				t.Fatalf("%v, want ErrInvalidOption", err)
			}
		})
	}
	if _, err := idemsql.Step(ctx, &idemsql.Steps[*sql.Tx]{}, "a", noop); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("a Steps not made by RunSteps: %v, want ErrInvalidOption", err)
	}
	if _, err := idemsql.RunSteps(ctx, store, "bad:input", make(chan int), func(ctx context.Context, s *idemsql.Steps[*sql.Tx], _ chan int) (int, error) {
		return 0, nil
	}); !errors.Is(err, idemsql.ErrEncode) {
		t.Fatalf("an input that does not encode: %v, want ErrEncode", err)
	}
	if _, found, err := idemsql.Lookup(ctx, store, "bad:input"); found || err != nil {
		t.Fatalf("an input that does not encode left a row (%v, %v)", found, err)
	}
}

// A resumed run gets the input its first run stored, whatever the caller
// passes: the steps it hands back were made from that input.
func TestStepsResumeWithStoredInput(t *testing.T) {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	var seen []string
	fn := func(fail bool) func(context.Context, *idemsql.Steps[*sql.Tx], string) (string, error) {
		return func(ctx context.Context, s *idemsql.Steps[*sql.Tx], in string) (string, error) {
			seen = append(seen, in)
			first, err := idemsql.Step(ctx, s, "first", func(ctx context.Context, c idemsql.Claim) (string, error) { return in, nil })
			if err != nil {
				return "", err
			}
			if fail {
				return "", errors.New("down")
			}
			return first + "+" + in, nil
		}
	}
	if _, err := idemsql.RunSteps(ctx, store, "resume", "A", fn(true)); err == nil {
		t.Fatal("the failing run succeeded")
	}
	res, err := idemsql.RunSteps(ctx, store, "resume", "B", fn(false))
	if err != nil || res.Value != "A+A" || res.Replayed {
		t.Fatalf("resumed: %+v, %v; want A+A, not replayed", res, err)
	}
	if strings.Join(seen, ",") != "A,A" {
		t.Fatalf("fn saw inputs %v, want A twice", seen)
	}
}

// A step stored as one kind (Step) and called as the other (StepTx) is a
// change of code, as a rename is.
func TestStepsKindChanged(t *testing.T) {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	_, err := idemsql.RunSteps(ctx, store, "kind", 0, func(ctx context.Context, s *idemsql.Steps[*sql.Tx], _ int) (int, error) {
		if _, err := idemsql.Step(ctx, s, "a", func(ctx context.Context, c idemsql.Claim) (int, error) { return 1, nil }); err != nil {
			return 0, err
		}
		return 0, errors.New("down")
	})
	if err == nil {
		t.Fatal("the failing run succeeded")
	}
	_, err = idemsql.RunSteps(ctx, store, "kind", 0, func(ctx context.Context, s *idemsql.Steps[*sql.Tx], _ int) (int, error) {
		return idemsql.StepTx(ctx, s, "a", func(ctx context.Context, tx *sql.Tx) (int, error) { return 2, nil })
	})
	if !errors.Is(err, idemsql.ErrStepsChanged) {
		t.Fatalf("%v, want ErrStepsChanged", err)
	}
}
