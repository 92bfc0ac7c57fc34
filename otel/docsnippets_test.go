package idemotel_test

import (
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	idemotel "github.com/idemsql/idemsql/otel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The code docs/observability.md shows, compiled here because the library's
// module cannot import this one; internal/docsnippets checks that the
// document matches it.
func observerOtel(pool *pgxpool.Pool) (*idemsql.Store[pgx.Tx], error) {
	// snippet: observer-otel
	obs, err := idemotel.New(idemotel.Config{}) // the global tracer and meter providers
	if err != nil {
		return nil, err
	}
	store, err := idemsql.New(idempostgres.New(pool), idemsql.Options{
		Observers: []idemsql.Observer{obs}, // with idemslog's, say: each sees every event
	})
	// end snippet
	return store, err
}

var _ = observerOtel
