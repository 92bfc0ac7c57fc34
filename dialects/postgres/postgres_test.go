package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemsql/idemsql/idemsql"
)

func TestClassify(t *testing.T) {
	for code, want := range map[string]idemsql.ErrorKind{
		"40001": idemsql.KindRetryable,
		"40P01": idemsql.KindRetryable,
		"55P03": idemsql.KindLockTimeout,
		"57014": idemsql.KindStatementTimeout,
		"25P02": idemsql.KindTxAborted,
		"57P01": idemsql.KindConnLost,
		"08006": idemsql.KindConnLost,
		"40003": idemsql.KindConnLost, // CockroachDB: the result is ambiguous
		"23505": idemsql.KindOther,    // a unique violation aborts the transaction: never "replay"
	} {
		err := fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code})
		if got := Dialect.Classify(err); got != want {
			t.Errorf("%s: %v, want %v", code, got, want)
		}
	}
	for err, want := range map[error]idemsql.ErrorKind{
		pgx.ErrTxClosed:         idemsql.KindTxAborted,
		pgx.ErrTxCommitRollback: idemsql.KindTxAborted,
		pgconn.ErrConnClosed:    idemsql.KindConnLost,
		context.Canceled:        idemsql.KindOther, // a bare context error did not come from a statement
	} {
		if got := Dialect.Classify(err); got != want {
			t.Errorf("%v: %v, want %v", err, got, want)
		}
	}
}

func TestStatementsFencedByToken(t *testing.T) {
	st := Dialect.Statements(idemsql.Table{Schema: "billing", Name: "idem"})
	for name, q := range map[string]string{"Complete": st.Complete, "Fail": st.Fail, "Release": st.Release} {
		if !strings.Contains(q, "AND owner = $") || strings.Contains(q, "attempt = $") {
			t.Errorf("%s is not fenced by the claim token alone:\n%s", name, q)
		}
	}
	if !strings.Contains(st.Claim, `INSERT INTO "billing"."idem"`) {
		t.Errorf("schema not quoted: %s", st.Claim)
	}
}
