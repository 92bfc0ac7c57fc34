package idemsql_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// These benchmarks run Do against an executor that does nothing, so that
// -benchmem shows the library's own allocations per call, without a driver
// or a database. The SQL-backed benchmarks are in the bench module.

type nopDialect struct{}

func (nopDialect) Name() string { return "nop" }
func (nopDialect) Statements(table idemdriver.Table) idemdriver.Statements {
	return idemdriver.Statements{Claim: "claim", Read: "read", Reclaim: "reclaim", Complete: "complete", Release: "release"}
}
func (nopDialect) Classify(error) idemdriver.ErrorKind { return idemdriver.KindOther }

// execDriver is a driver whose transactions are the executors a test
// makes: Do binds them as they are, and Run has no pool.
type execDriver struct{ d idemdriver.Dialect }

func (d execDriver) Dialect() idemdriver.Dialect { return d.d }
func (execDriver) Begin(context.Context, sql.IsolationLevel) (idemdriver.Tx[idemdriver.Executor], error) {
	return nil, errors.New("execDriver has no pool")
}
func (execDriver) Bind(ex idemdriver.Executor) idemdriver.Executor { return ex }

// nopExec claims every key (claimed) or finds every key completed.
type nopExec struct {
	claimed bool
	result  []byte
}

func (e *nopExec) Exec(_ context.Context, query string, _ ...any) (int64, error) {
	if query == "claim" && !e.claimed {
		return 0, nil
	}
	return 1, nil
}

func (e *nopExec) QueryRow(context.Context, string, ...any) idemdriver.Row { return (*nopRow)(e) }

type nopRow nopExec

// Scan fills the Read columns by type, so that it keeps working when the
// column list grows: the first string is the status, the second []byte the
// result (the first is the fingerprint), int64 the attempt, bools false.
func (r *nopRow) Scan(dest ...any) error {
	strings, blobs := 0, 0
	for _, d := range dest {
		switch d := d.(type) {
		case *string:
			if strings == 0 {
				*d = idemsql.StatusCompleted
			}
			strings++
		case *[]byte:
			if blobs == 1 {
				*d = append((*d)[:0], r.result...)
			} else {
				*d = nil
			}
			blobs++
		case *int64:
			*d = 1
		case *bool:
			*d = false
		case *sql.NullString:
			*d = sql.NullString{}
		}
	}
	return nil
}

type benchCharge struct {
	Ref    string `json:"ref"`
	Amount int64  `json:"amount"`
}

func BenchmarkDoNopExecutor(b *testing.B) {
	store, err := idemsql.New(execDriver{nopDialect{}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	fn := func(context.Context) (benchCharge, error) { return benchCharge{Ref: "order-42", Amount: 4200}, nil }

	b.Run("first", func(b *testing.B) {
		tx := idemdriver.Executor(&nopExec{claimed: true})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := idemsql.Do(ctx, store, tx, "charge:order-42", fn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("first-fingerprint", func(b *testing.B) {
		tx := idemdriver.Executor(&nopExec{claimed: true})
		req := map[string]int64{"order": 42, "amount": 4200}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := idemsql.Do(ctx, store, tx, "charge:order-42", fn, idemsql.Options{Fingerprint: req}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("first-fingerprint-bytes", func(b *testing.B) {
		tx := idemdriver.Executor(&nopExec{claimed: true})
		req := []byte(`{"order":42,"amount":4200}`)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := idemsql.Do(ctx, store, tx, "charge:order-42", fn, idemsql.Options{Fingerprint: req}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("replay", func(b *testing.B) {
		tx := idemdriver.Executor(&nopExec{result: []byte(`{"ref":"order-42","amount":4200}`)})
		b.ReportAllocs()
		for b.Loop() {
			res, err := idemsql.Do(ctx, store, tx, "charge:order-42", fn)
			if err != nil || !res.Replayed {
				b.Fatal(err)
			}
		}
	})
}
