package idemotel_test

import (
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	idemotel "github.com/idemsql/idemsql/otel"
)

// The code docs/observability.md shows, compiled here because the library's
// module cannot import this one; internal/docsnippets checks that the
// document matches it.
func observerOtel() (*idempostgres.Store, error) {
	// snippet: observer-otel
	obs, err := idemotel.New(idemotel.Config{}) // the global tracer and meter providers
	if err != nil {
		return nil, err
	}
	store, err := idempostgres.New(idemsql.WithObserver(obs))
	// end snippet
	return store, err
}

var _ = observerOtel
