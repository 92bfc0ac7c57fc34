package migrations

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
)

// The files render for another table in another schema: the table named
// schema.name everywhere it is named, the names derived from it (indexes,
// constraints) with the new name, every name quoted so that a reserved
// word can be one.
func TestRenderedForTableAndSchema(t *testing.T) {
	for dialect, q := range map[string]string{"postgres": `"`, "mysql": "`", "sqlite": `"`} {
		fsys, err := FS(dialect)
		if err != nil {
			t.Fatal(err)
		}
		r, err := rendered(fsys, idemdriver.Table{Schema: "billing", Name: "order"}, q)
		if err != nil {
			t.Fatal(err)
		}
		b, err := fs.ReadFile(r, "00001_create_idempotency_keys.sql")
		if err != nil {
			t.Fatal(err)
		}
		sql := strings.ReplaceAll(string(b), q, "|")
		for _, want := range []string{"CREATE TABLE IF NOT EXISTS |billing|.|order| (", "|order_expires_at_idx|", "|order_lease_idx|", "DROP TABLE IF EXISTS |billing|.|order|;"} {
			if !strings.Contains(sql, want) {
				t.Errorf("%s: rendered migration lacks %q:\n%s", dialect, want, sql)
			}
		}
		if strings.Contains(sql, "idempotency_keys") || strings.Contains(sql, "billing|.|order_") || strings.Contains(sql, " order") {
			t.Errorf("%s: a default, unquoted or wrongly qualified name is left:\n%s", dialect, sql)
		}
	}
}

// The stock goose command, run with the version table the package
// documents, and Up keep one version table: neither applies what the other
// did, and a down through one is seen by the other.
func TestGooseCommandAndUpAgree(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(t.TempDir(), "app.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// An application of its own already at version 1 in goose's default
	// version table: idemsql's files must not be skipped because of it.
	if _, err := db.Exec(`CREATE TABLE goose_db_version (id INTEGER PRIMARY KEY, version_id INTEGER NOT NULL, is_applied INTEGER NOT NULL, tstamp TIMESTAMP DEFAULT (datetime('now')));
INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, 1), (1, 1)`); err != nil {
		t.Fatal(err)
	}
	fsys, err := FS("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	// What `goose -table idempotency_keys_goose_version -dir migrations/sqlite sqlite3 app.db up` does.
	cli, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithTableName(VersionTable(idemsql.DefaultTable)), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Up(ctx); err != nil {
		t.Fatal(err)
	}
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		t.Fatal(err)
	}
	if err := Up(ctx, db, store); err != nil {
		t.Fatalf("Up after the goose command: %v", err)
	}
	if _, err := cli.DownTo(ctx, 0); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'idempotency_keys'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("table still there after the goose command's down: %d %v", n, err)
	}
	if err := Up(ctx, db, store); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'idempotency_keys'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("Up after the goose command's down did not create the table again: %d %v", n, err)
	}
}

func TestBadTarget(t *testing.T) {
	if err := Up(context.Background(), nil, nil); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("Up(nil, nil) = %v", err)
	}
	if _, err := FS("oracle"); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("FS(oracle) = %v", err)
	}
}
