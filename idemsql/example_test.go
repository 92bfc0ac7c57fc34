package idemsql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

var exampleDBPath = map[*sql.DB]string{}

// openDeferred opens a second handle on db's file whose transactions begin
// DEFERRED.
func openDeferred(db *sql.DB) (*sql.DB, error) {
	return sql.Open("sqlite", "file:"+exampleDBPath[db]+"?_pragma=busy_timeout(10000)")
}

// openExampleDB opens a migrated SQLite database in a temporary directory.
func openExampleDB() (*sql.DB, *idemsql.Store[*sql.Tx], func()) {
	dir, err := os.MkdirTemp("", "idemsql-example-")
	if err != nil {
		panic(err)
	}
	path := filepath.Join(dir, "app.db")
	db, err := sql.Open("sqlite", idemsqlite.DSN(path))
	if err != nil {
		panic(err)
	}
	exampleDBPath[db] = path
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := migrations.Up(ctx, db, store); err != nil {
		panic(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)`); err != nil {
		panic(err)
	}
	return db, store, func() { db.Close(); os.RemoveAll(dir) }
}

func ExampleDo() {
	db, store, done := openExampleDB()
	defer done()
	ctx := context.Background()

	placeOrder := func(key string) (idemsql.Result[int64], error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return idemsql.Result[int64]{}, err
		}
		defer tx.Rollback()
		res, err := idemsql.Do(ctx, store, tx, key, func(ctx context.Context) (int64, error) {
			var id int64
			err := tx.QueryRowContext(ctx, `INSERT INTO orders (total) VALUES (4200) RETURNING id`).Scan(&id)
			return id, err
		})
		if err != nil {
			return res, err
		}
		return res, tx.Commit()
	}

	for range 3 {
		res, err := placeOrder("order-request-1")
		if err != nil {
			panic(err)
		}
		fmt.Printf("order %d, replayed: %v\n", res.Value, res.Replayed)
	}
	var n int
	_ = db.QueryRow(`SELECT COUNT(*) FROM orders`).Scan(&n)
	fmt.Println("orders in the table:", n)
	// Output:
	// order 1, replayed: false
	// order 1, replayed: true
	// order 1, replayed: true
	// orders in the table: 1
}

func ExampleOptions_fingerprint() {
	db, store, done := openExampleDB()
	defer done()
	ctx := context.Background()

	type transfer struct {
		To     string `json:"to"`
		Amount int64  `json:"amount"`
	}
	send := func(key string, t transfer) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		_, err = idemsql.Do(ctx, store, tx, key, func(ctx context.Context) (string, error) {
			return "sent", nil
		}, idemsql.Options{Fingerprint: t})
		if err != nil {
			return err
		}
		return tx.Commit()
	}

	fmt.Println(send("tr-1", transfer{To: "bob", Amount: 100}))
	fmt.Println(send("tr-1", transfer{To: "bob", Amount: 100}))
	err := send("tr-1", transfer{To: "bob", Amount: 999})
	fmt.Println(errors.Is(err, idemsql.ErrFingerprintMismatch))
	// Output:
	// <nil>
	// <nil>
	// true
}

func ExampleDeriveKey() {
	key, err := idemsql.DeriveKey("create_invoice", 42, 1999)
	fmt.Println(key, err)
	// Output: create_invoice:271eabe0f31d812d3db7b66479e281118c31a1bb9c0e4d62bee664f0801a4247 <nil>
}
