// Command quickstart is the README's first example: a charge made once,
// however often its request comes, on SQLite with no setup.
//
// snippet: quickstart
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

func main() {
	ctx := context.Background()
	db, err := sql.Open("sqlite", idemsqlite.DSN("shop.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	store, err := idemsql.New(idemsqlite.New(db)) // once, at start-up
	if err != nil {
		log.Fatal(err)
	}
	if err := migrations.Up(ctx, db, store); err != nil { // creates the idempotency table
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS charges (id INTEGER PRIMARY KEY, amount INTEGER)`); err != nil {
		log.Fatal(err)
	}
	for range 2 { // a request, then its retry
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			log.Fatal(err)
		}
		res, err := idemsql.Do(ctx, store, tx, "charge:order-42", func(ctx context.Context) (int64, error) {
			r, err := tx.ExecContext(ctx, `INSERT INTO charges (amount) VALUES (4200)`) // in the same transaction
			if err != nil {
				return 0, err
			}
			return r.LastInsertId()
		})
		if err != nil {
			tx.Rollback()
			log.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			log.Fatal(store.CommitError(ctx, err))
		}
		fmt.Printf("charge #%d, replayed: %v\n", res.Value, res.Replayed)
	}
	// charge #1, replayed: false
	// charge #1, replayed: true
}

// end snippet
