//go:build linux

package integration

import (
	"os"
	"testing"
)

// The crash tests start database servers of their own
// (privateserver_test.go) and kill them again and again. They run only
// when asked (make test-crash), since they take minutes and a server per
// database.
const envCrash = "IDEMSQL_CRASH" // "1": run the crash tests

// crashEnabled skips the test unless the crash tests were asked for.
func crashEnabled(t *testing.T) {
	t.Helper()
	if os.Getenv(envCrash) != "1" {
		t.Skipf("crash tests run with %s=1 (make test-crash)", envCrash)
	}
}
