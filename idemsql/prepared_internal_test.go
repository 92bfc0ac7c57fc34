package idemsql

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/idemsql/idemsql/idemdriver"
	_ "modernc.org/sqlite"
)

// preparingDialect prepares statements that any SQLite database accepts.
type preparingDialect struct{}

func (preparingDialect) Name() string { return "test" }
func (preparingDialect) Statements(idemdriver.Table) idemdriver.Statements {
	return idemdriver.Statements{Claim: "SELECT 1", Read: "SELECT 2"}
}
func (preparingDialect) Classify(error) idemdriver.ErrorKind { return idemdriver.KindOther }
func (preparingDialect) PrepareStatements() bool             { return true }
func (preparingDialect) PrepareFailed(error) bool            { return false }

// A store bound to pools that come and go keeps the prepared statements of
// open pools only.
func TestPreparedStatementsOfClosedPoolsAreDropped(t *testing.T) {
	s, err := NewStore(preparingDialect{})
	if err != nil {
		t.Fatal(err)
	}
	open := func(name string) *sql.DB {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	ctx := context.Background()
	first := open("a.db")
	ps := s.preparedSet(first)
	if s.prepare(ctx, ps); len(ps.stmts) != 2 {
		t.Fatalf("%d statements prepared, want 2", len(ps.stmts))
	}
	first.Close()
	second := open("b.db")
	s.preparedSet(second)
	var pools []*sql.DB
	s.prepared.Range(func(k, _ any) bool { pools = append(pools, k.(*sql.DB)); return true })
	if len(pools) != 1 || pools[0] != second {
		t.Fatalf("statements kept for %d pools, want only the open one", len(pools))
	}
}
