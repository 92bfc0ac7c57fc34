package idemsqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// Real SQLite errors, from a real database: a busy writer, a busy
// snapshot, a missing table or column, a constraint.
func TestClassify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	open := func(dsn string) *sql.DB {
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	db := open(DSN(path))
	ctx := context.Background()
	if _, err := db.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	// A deferred transaction that read, then a writer commits: its write is
	// SQLITE_BUSY_SNAPSHOT (517), which no waiting can cure.
	deferred := open("file:" + path + "?_pragma=busy_timeout(100)&_pragma=journal_mode(WAL)")
	tx, err := deferred.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(`INSERT INTO t VALUES (2)`)
	if got := Dialect.Classify(err); got != idemdriver.KindRetryable || waitedForWriter(err) {
		t.Errorf("busy snapshot %v: %v, waited for a writer: %v", err, got, waitedForWriter(err))
	}
	_, err = db.Exec(`INSERT INTO missing VALUES (1)`)
	if got := Dialect.Classify(err); got != idemdriver.KindStoreUnusable {
		t.Errorf("no such table: %v", got)
	}
	_, err = db.Exec(`UPDATE t SET missing = 1`)
	if got := Dialect.Classify(err); got != idemdriver.KindStoreUnusable {
		t.Errorf("no such column: %v", got)
	}
	_, err = db.Exec(`INSERT INTO t (k, missing) VALUES (2, 1)`)
	if got := Dialect.Classify(err); got != idemdriver.KindStoreUnusable {
		t.Errorf("no column named: %v", got)
	}
	_, err = db.Exec(`INSERT INTO t VALUES (1)`) // a constraint, about the row
	if got := Dialect.Classify(err); got != idemdriver.KindOther {
		t.Errorf("unique constraint %v: %v", err, got)
	}
	if got := Dialect.Classify(context.DeadlineExceeded); got != idemdriver.KindTxEnded {
		t.Errorf("an interrupt by a context may have rolled the transaction back: %v", got)
	}
	if got := Dialect.Classify(errors.New("x")); got != idemdriver.KindOther {
		t.Errorf("other: %v", got)
	}
}

func TestStatementsFencedByToken(t *testing.T) {
	st := Dialect.Statements(idemdriver.Table{Name: "idem"})
	for name, q := range map[string]string{"Complete": st.Complete, "Fail": st.Fail, "Release": st.Release} {
		if !strings.Contains(q, "WHERE idem_key = ? AND owner = ?") {
			t.Errorf("%s is not fenced by the claim token:\n%s", name, q)
		}
	}
	db, err := sql.Open("sqlite", "file:unused?mode=memory")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := idemsql.New(New(db), idemsql.Options{Schema: "billing"}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Errorf("Schema on SQLite: %v", err)
	}
}
