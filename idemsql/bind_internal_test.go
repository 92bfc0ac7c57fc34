package idemsql

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// DB.Tx binds a transaction that holds the pool's only connection without
// waiting for preparing, which needs a connection; once the background
// preparation is done, later transactions run prepared statements.
func TestDBTxPreparesInTheBackground(t *testing.T) {
	s, err := NewStore(preparingDialect{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	pool := s.DB(db, nil)

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	bound := pool.Tx(tx)
	if _, ok := bound.exec.(sqlExecutor); !ok {
		t.Fatalf("first binding: executor %T, want the unprepared one while the pool's only connection is in use", bound.exec)
	}
	if n, err := bound.exec.Exec(ctx, "SELECT 1"); err != nil || n != 0 {
		t.Fatalf("unprepared statement: %d, %v", n, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for s.preparedSoon(db) == nil {
		if time.Now().After(deadline) {
			t.Fatal("statements not prepared after the connection was free")
		}
		time.Sleep(time.Millisecond)
	}
	tx, err = db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	bound = pool.Tx(tx)
	pe, ok := bound.exec.(preparedExecutor)
	if !ok || len(pe.ps.stmts) != 2 {
		t.Fatalf("later binding: executor %T, want the prepared one with 2 statements", bound.exec)
	}
	var v int
	if err := bound.exec.QueryRow(ctx, "SELECT 2").Scan(&v); err != nil || v != 2 {
		t.Fatalf("prepared statement: %d, %v", v, err)
	}
}

// A nil transaction, or a DB without a pool, binds nothing: Do refuses it.
func TestDBTxUnbound(t *testing.T) {
	s, err := NewStore(preparingDialect{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for name, tx := range map[string]Tx{
		"nil tx":     s.DB(db, nil).Tx(nil),
		"nil pool":   s.DB(nil, nil).Tx(new(sql.Tx)),
		"zero value": DB[*sql.Tx]{}.Tx(new(sql.Tx)),
	} {
		_, err := Do(context.Background(), tx, "k", func(context.Context) (int, error) { return 1, nil })
		if err != errUnbound {
			t.Errorf("%s: %v, want errUnbound", name, err)
		}
	}
}
