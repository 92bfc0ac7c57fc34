package idemhttp_test

import (
	"context"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemhttp"
)

// Abort outside New's middleware is a wiring mistake: silently doing
// nothing would let the handler's failed writes commit.
func TestAbortOutsideTheMiddlewarePanics(t *testing.T) {
	defer func() {
		r := recover()
		if s, ok := r.(string); !ok || !strings.Contains(s, "outside idemhttp.New") {
			t.Fatalf("recovered %v, want Abort's panic", r)
		}
	}()
	idemhttp.Abort(context.Background(), nil)
}
