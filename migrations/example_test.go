package migrations_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

func ExampleUp() {
	dir, _ := os.MkdirTemp("", "idemsql-migrations-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(dir, "app.db")))
	if err != nil {
		panic(err)
	}
	defer db.Close()
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := migrations.Up(ctx, db, store); err != nil { // at start-up; safe to run every time
		panic(err)
	}
	status, err := migrations.Status(ctx, db, store)
	if err != nil {
		panic(err)
	}
	for _, m := range status {
		fmt.Println(m.Version, m.Source, m.Applied)
	}
	// Output:
	// 1 00001_create_idempotency_keys.sql true
}
