package idemsqlite_test

import (
	"database/sql"
	"errors"
	"testing"

	"modernc.org/sqlite"

	"github.com/idemsql/idemsql/idemsqlite"
)

// The dialect and modernc.org/sqlite are imported side by side, without an
// alias: a user's file that reads the driver's errors compiles as it is.
func TestImportedBesideTheDriver(t *testing.T) {
	db, err := sql.Open("sqlite", idemsqlite.DSN(t.TempDir()+"/i.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.Exec("SELECT * FROM missing")
	var e *sqlite.Error
	if !errors.As(err, &e) || e.Code()&0xff != 1 {
		t.Fatalf("a missing table: %v, want a *sqlite.Error with SQLITE_ERROR", err)
	}
}
