package idemmysql

import (
	"fmt"
	"strings"
	"testing"

	driver "github.com/go-sql-driver/mysql"
	"github.com/idemsql/idemsql/idemdriver"
)

func TestClassify(t *testing.T) {
	for n, want := range map[uint16]idemdriver.ErrorKind{
		1062: idemdriver.KindDuplicateKey,
		1213: idemdriver.KindTxEnded, // the whole transaction was rolled back; the session runs on in autocommit
		1020: idemdriver.KindTxEnded,
		1206: idemdriver.KindTxEnded,
		3101: idemdriver.KindTxEnded,
		1205: idemdriver.KindLockTimeout,
		3572: idemdriver.KindLockTimeout,
		1969: idemdriver.KindStatementTimeout,
		3024: idemdriver.KindStatementTimeout,
		1927: idemdriver.KindConnLost,
		1146: idemdriver.KindStoreUnusable, // the table is missing: not the key's doing
		1049: idemdriver.KindStoreUnusable,
		1054: idemdriver.KindStoreUnusable,
		1142: idemdriver.KindStoreUnusable,
		1406: idemdriver.KindOther,
	} {
		err := fmt.Errorf("wrapped: %w", &driver.MySQLError{Number: n})
		if got := Dialect.Classify(err); got != want {
			t.Errorf("%d: %v, want %v", n, got, want)
		}
	}
	if got := Dialect.Classify(driver.ErrInvalidConn); got != idemdriver.KindConnLost {
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
	st := Dialect.Statements(idemdriver.Table{Name: "idem"})
	for name, q := range map[string]string{"Complete": st.Complete, "Fail": st.Fail, "Release": st.Release} {
		if !strings.Contains(q, "WHERE idem_key = ? AND owner = ?") {
			t.Errorf("%s is not fenced by the claim token:\n%s", name, q)
		}
	}
	if st.ClaimCompleted != "" {
		t.Error("MySQL must not store a claim completed")
	}
	if q := Dialect.Statements(idemdriver.Table{Schema: "billing", Name: "idem"}).Claim; !strings.Contains(q, "INSERT INTO `billing`.`idem`") {
		t.Errorf("schema not quoted: %s", q)
	}
}

// Inline writes every argument as a literal that its content cannot break
// out of, and refuses what it cannot write.
func TestInline(t *testing.T) {
	in := dialect{}
	got, ok := in.Inline("UPDATE t SET a = ?, b = ? WHERE k = ? AND n = ? AND m = ? AND f = ? AND z = ?",
		[]any{"x' OR '1'='1", []byte{0, 0xff}, "é", int64(-7), 3, nil, []byte(nil)})
	want := "UPDATE t SET a = _utf8mb4 X'7827204f52202731273d2731', b = X'00ff' WHERE k = _utf8mb4 X'c3a9' AND n = -7 AND m = 3 AND f = NULL AND z = NULL"
	if !ok || got != want {
		t.Fatalf("Inline: %q, %v\nwant %q", got, ok, want)
	}
	if _, ok := in.Inline("SELECT ?", []any{1.5}); ok {
		t.Error("a float was written")
	}
	if _, ok := in.Inline("SELECT ?, ?", []any{1}); ok {
		t.Error("a missing argument was written")
	}
	if _, ok := in.Inline("SELECT ?", []any{1, 2}); ok {
		t.Error("an argument too many was written")
	}
	if got, ok := in.Inline("SELECT ?", []any{""}); !ok || got != "SELECT _utf8mb4 X''" {
		t.Errorf("empty string: %q %v", got, ok)
	}
}
