package docsnippets

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idemhttp"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
)

func httpGuide(pool *pgxpool.Pool, mux *http.ServeMux) {
	// snippet: http-guide
	store, err := idemsql.New(idempostgres.New(pool))
	if err != nil {
		log.Fatal(err)
	}
	guard, err := idemhttp.New(store, idemhttp.Config{
		Principal: func(r *http.Request) (string, error) { return accountID(r), nil },
	})
	if err != nil {
		log.Fatal(err) // a bad Config, wrapping idemsql.ErrInvalidOption
	}
	mux.Handle("POST /orders", guard(http.HandlerFunc(createOrder)))
	// end snippet
}

// snippet: http-handler
func createOrder(w http.ResponseWriter, r *http.Request) {
	tx := idemhttp.MustTx[pgx.Tx](r.Context()) // *sql.Tx on a database/sql store
	var id int64
	err := tx.QueryRow(r.Context(), `INSERT INTO orders (item) VALUES ($1) RETURNING id`, r.FormValue("item")).Scan(&id)
	if err != nil {
		idemhttp.Abort(r.Context(), err) // rolled back, not stored; run again if the database asks
		http.Error(w, "could not create the order", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/orders/%d", id))
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]int64{"id": id})
}

// end snippet

func abortOnFailure(w http.ResponseWriter, r *http.Request, sku string) {
	// snippet: abort
	tx := idemhttp.MustTx[*sql.Tx](r.Context())
	if _, err := tx.ExecContext(r.Context(), "UPDATE stock SET n = n - 1 WHERE sku = $1", sku); err != nil {
		idemhttp.Abort(r.Context(), err)
		http.Error(w, "could not reserve the item", http.StatusInternalServerError)
		return
	}
	// end snippet
}

// Order is a request body of the HTTP snippets.
type Order struct {
	Item   string `json:"item"`
	Amount int64  `json:"amount"`
}

func notBegun(w http.ResponseWriter, r *http.Request) {
	// snippet: notbegun
	var o Order
	if err := json.NewDecoder(r.Body).Decode(&o); err != nil || o.Amount <= 0 {
		idemhttp.NotBegun(r.Context()) // nothing stored: the corrected request runs under the same key
		http.Error(w, "amount must be a positive number", http.StatusUnprocessableEntity)
		return
	}
	// end snippet
	w.WriteHeader(http.StatusCreated)
}

func storedKey() string {
	// snippet: http-storedkey
	key := idemhttp.StoredKey("http", "acct_42", "8e03978e-40d5-43e8-bc93-6894a57f9324", false)
	// end snippet
	return key
}
