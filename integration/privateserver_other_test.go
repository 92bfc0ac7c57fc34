//go:build !linux

package integration

import (
	"os"
	"testing"
)

// The tests that start database servers of their own find a server's
// processes through /proc and start them as another user: Linux only
// (privateserver_test.go).
func TestCrashPostgres(t *testing.T)             { privateServerUnsupported(t, os.Getenv("IDEMSQL_CRASH") == "1") }
func TestCrashMariaDB(t *testing.T)              { privateServerUnsupported(t, os.Getenv("IDEMSQL_CRASH") == "1") }
func TestRunRidesOutServerRestart(t *testing.T)  { privateServerUnsupported(t, true) }
func TestPreparedStatementFallback(t *testing.T) { privateServerUnsupported(t, true) }

// privateServerUnsupported skips the test, or fails it when it was asked
// for and IDEMSQL_REQUIRE_DB=1.
func privateServerUnsupported(t *testing.T, asked bool) {
	if asked {
		missingDB(t, "a private server", "cannot start a database server of the test's own: it needs Linux")
	}
	t.Skip("needs Linux, to start a database server of the test's own")
}
