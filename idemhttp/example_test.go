package idemhttp_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// A POST handler whose order insert and stored response commit in one
// transaction; a retry with the same key replays the response.
func Example() {
	dir, _ := os.MkdirTemp("", "idemhttp-example-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(dir, "shop.db")))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := migrations.Up(ctx, db, store); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	guard, err := idemhttp.New(store, idemhttp.Config{
		// Keys are per account; here the account comes from a header an
		// authenticating proxy would set.
		Principal: func(r *http.Request) (string, error) { return r.Header.Get("X-Account"), nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	createOrder := func(w http.ResponseWriter, r *http.Request) {
		tx := idemhttp.MustTx[*sql.Tx](r.Context())
		var id int64
		if err := tx.QueryRowContext(r.Context(), `INSERT INTO orders (item) VALUES ('book') RETURNING id`).Scan(&id); err != nil {
			idemhttp.Abort(r.Context(), err) // rolled back, not stored; run again if the database asks
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", fmt.Sprintf("/orders/%d", id))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d}`, id)
	}
	srv := guard(http.HandlerFunc(createOrder))

	for range 2 {
		req := httptest.NewRequest("POST", "/orders", strings.NewReader(`{"item":"book"}`))
		req.Header.Set("X-Account", "acct_1")
		req.Header.Set("Idempotency-Key", `"8e03978e-40d5-43e8-bc93-6894a57f9324"`)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Header().Get("Location"), rec.Body.String(), "replayed:", rec.Header().Get("Idempotent-Replayed") == "true")
	}
	var orders int
	_ = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders`).Scan(&orders)
	fmt.Println("orders:", orders)
	// Output:
	// 201 /orders/1 {"id":1} replayed: false
	// 201 /orders/1 {"id":1} replayed: true
	// orders: 1
}
