package idemmysql_test

import (
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemmysql"
)

// The dialect and go-sql-driver/mysql are imported side by side, without an
// alias: a user's file that builds the driver's config and reads its errors
// compiles as it is.
func TestImportedBesideTheDriver(t *testing.T) {
	cfg := mysql.NewConfig()
	cfg.ParseTime = true
	if cfg.FormatDSN() == "" {
		t.Fatal("empty DSN")
	}
	var err error = &mysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock"}
	if k := idemmysql.Dialect.Classify(err); k != idemdriver.KindTxEnded {
		t.Fatalf("a deadlock (*mysql.MySQLError 1213) classifies as %v, want KindTxEnded", k)
	}
}
