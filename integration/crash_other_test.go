//go:build !linux

package integration

import (
	"os"
	"testing"
)

// The crash tests find a server's processes through /proc and start them as
// another user: Linux only (crash_test.go).
func TestCrashPostgres(t *testing.T) { crashUnsupported(t) }
func TestCrashMariaDB(t *testing.T)  { crashUnsupported(t) }

func crashUnsupported(t *testing.T) {
	if os.Getenv("IDEMSQL_CRASH") == "1" {
		missingDB(t, "IDEMSQL_CRASH", "the crash tests cannot run: they need Linux")
	}
	t.Skip("crash tests run with IDEMSQL_CRASH=1 (make test-crash), on Linux")
}
