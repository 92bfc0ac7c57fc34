package mysql

import (
	"fmt"
	"strings"
	"testing"

	driver "github.com/go-sql-driver/mysql"

	"github.com/idemsql/idemsql/idemsql"
)

func TestClassify(t *testing.T) {
	for n, want := range map[uint16]idemsql.ErrorKind{
		1062: idemsql.KindDuplicateKey,
		1213: idemsql.KindTxEnded, // the whole transaction was rolled back; the session runs on in autocommit
		1020: idemsql.KindTxEnded,
		1206: idemsql.KindTxEnded,
		3101: idemsql.KindTxEnded,
		1205: idemsql.KindLockTimeout,
		3572: idemsql.KindLockTimeout,
		1969: idemsql.KindStatementTimeout,
		3024: idemsql.KindStatementTimeout,
		1927: idemsql.KindConnLost,
		1146: idemsql.KindOther,
	} {
		err := fmt.Errorf("wrapped: %w", &driver.MySQLError{Number: n})
		if got := Dialect.Classify(err); got != want {
			t.Errorf("%d: %v, want %v", n, got, want)
		}
	}
	if got := Dialect.Classify(driver.ErrInvalidConn); got != idemsql.KindConnLost {
		t.Errorf("ErrInvalidConn: %v", got)
	}
	if !(dialect{}).PrepareFailed(&driver.MySQLError{Number: 1461}) || (dialect{}).PrepareFailed(&driver.MySQLError{Number: 1062}) {
		t.Error("PrepareFailed")
	}
}

// Every write after the claim is matched by the claim's token, never by
// the attempt alone: after a deadlock such a statement runs in autocommit
// and must not touch a duplicate's row. There is no claim-completed fast
// path: the fenced Complete is what tells that the claim did not survive.
func TestStatementsFencedByToken(t *testing.T) {
	st := Dialect.Statements(idemsql.Table{Name: "idem"})
	for name, q := range map[string]string{"Complete": st.Complete, "Fail": st.Fail, "Release": st.Release} {
		if !strings.Contains(q, "WHERE idem_key = ? AND owner = ?") {
			t.Errorf("%s is not fenced by the claim token:\n%s", name, q)
		}
	}
	if st.ClaimCompleted != "" {
		t.Error("MySQL must not store a claim completed")
	}
	if q := Dialect.Statements(idemsql.Table{Schema: "billing", Name: "idem"}).Claim; !strings.Contains(q, "INSERT INTO `billing`.`idem`") {
		t.Errorf("schema not quoted: %s", q)
	}
}
