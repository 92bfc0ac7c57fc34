package idempostgres

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassify(t *testing.T) {
	for code, want := range map[string]idemdriver.ErrorKind{
		"40001": idemdriver.KindRetryable,
		"40P01": idemdriver.KindRetryable,
		"55P03": idemdriver.KindLockTimeout,
		"57014": idemdriver.KindStatementTimeout,
		"25P02": idemdriver.KindTxAborted,
		"57P01": idemdriver.KindConnLost,
		"08006": idemdriver.KindConnLost,
		"40003": idemdriver.KindConnLost, // CockroachDB: the result is ambiguous
		"23505": idemdriver.KindOther,    // a unique violation aborts the transaction: never "replay"
		"42P01": idemdriver.KindStoreUnusable,
		"42703": idemdriver.KindStoreUnusable,
		"42501": idemdriver.KindStoreUnusable,
		"3F000": idemdriver.KindStoreUnusable,
	} {
		err := fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code})
		if got := Dialect.Classify(err); got != want {
			t.Errorf("%s: %v, want %v", code, got, want)
		}
	}
	for err, want := range map[error]idemdriver.ErrorKind{
		pgx.ErrTxClosed:         idemdriver.KindTxAborted,
		pgx.ErrTxCommitRollback: idemdriver.KindTxAborted,
		pgconn.ErrConnClosed:    idemdriver.KindConnLost,
		context.Canceled:        idemdriver.KindOther, // a bare context error did not come from a statement
	} {
		if got := Dialect.Classify(err); got != want {
			t.Errorf("%v: %v, want %v", err, got, want)
		}
	}
}

func TestStatementsFencedByToken(t *testing.T) {
	st := Dialect.Statements(idemdriver.Table{Schema: "billing", Name: "idem"})
	for name, q := range map[string]string{"Complete": st.Complete, "Fail": st.Fail, "Release": st.Release} {
		if !strings.Contains(q, "AND owner = $") || strings.Contains(q, "attempt = $") {
			t.Errorf("%s is not fenced by the claim token alone:\n%s", name, q)
		}
	}
	if !strings.Contains(st.Claim, `INSERT INTO "billing"."idem"`) {
		t.Errorf("schema not quoted: %s", st.Claim)
	}
}
