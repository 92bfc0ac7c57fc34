package migrations

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
)

// Status reads what Up and Down did, and creates nothing itself.
func TestStatus(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(t.TempDir(), "app.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := idemsql.New(idemsqlite.New(db), idemsql.Options{Table: "idem"})
	if err != nil {
		t.Fatal(err)
	}
	want := func(applied bool) {
		t.Helper()
		st, err := Status(ctx, db, store)
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != 1 || st[0].Version != 1 || st[0].Source != "00001_create_idempotency_keys.sql" {
			t.Fatalf("Status = %+v, want version 1", st)
		}
		for _, v := range st {
			if v.Applied != applied {
				t.Fatalf("Status = %+v, want applied=%v", st, applied)
			}
			if at := v.AppliedAt; applied && (at.IsZero() || time.Since(at) > time.Hour) || !applied && !at.IsZero() {
				t.Fatalf("AppliedAt = %v", at)
			}
		}
	}
	tables := func() (n int) {
		t.Helper()
		if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	want(false)
	if n := tables(); n != 0 {
		t.Fatalf("Status created %d tables", n)
	}
	if err := Up(ctx, db, store); err != nil {
		t.Fatal(err)
	}
	want(true)
	if err := Down(ctx, db, store); err != nil {
		t.Fatal(err)
	}
	want(false)
}
