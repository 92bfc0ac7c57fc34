package idemsql_test

import (
	"database/sql"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"bytes"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
)

func jsonUnmarshalNumber(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

func TestStoreOptions(t *testing.T) {
	good := []string{"idempotency_keys", "_x", "keys2", strings.Repeat("t", 48)}
	for _, name := range good {
		s, err := idemsql.New(unconnected(t), idemsql.Options{Table: name})
		if err != nil || s.Table().Name != name {
			t.Errorf("Table %q: %v", name, err)
		}
	}
	// Upper case is refused: the migrations name the table unquoted, and
	// PostgreSQL would fold "IdemKeys" to idemkeys while the statements
	// quote it.
	bad := []string{"1abc", "a b", `a"b`, "a;DROP TABLE x", "schema.table", "ключ", strings.Repeat("t", 49), "IdemKeys", "Keys2"}
	for _, name := range bad {
		if _, err := idemsql.New(unconnected(t), idemsql.Options{Table: name}); !errors.Is(err, idemsql.ErrInvalidOption) {
			t.Errorf("Table %q: err = %v, want ErrInvalidOption", name, err)
		}
		if _, err := idemsql.New(idempostgres.New(nil), idemsql.Options{Schema: name}); !errors.Is(err, idemsql.ErrInvalidOption) {
			t.Errorf("Schema %q: err = %v, want ErrInvalidOption", name, err)
		}
	}
	if s, err := idemsql.New(idempostgres.New(nil), idemsql.Options{Schema: "billing"}); err != nil || s.Table().Schema != "billing" {
		t.Errorf("Schema on PostgreSQL: %v", err)
	}
	if _, err := idemsql.New(unconnected(t), idemsql.Options{Schema: "billing"}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Errorf("Schema on SQLite: err = %v, want ErrInvalidOption", err)
	}
	for name, opt := range map[string]idemsql.Options{
		"TTL too short":        idemsql.Options{TTL: time.Microsecond},
		"negative TTL":         idemsql.Options{TTL: -time.Hour},
		"nil observer":         idemsql.Options{Observers: []idemsql.Observer{nil}},
		"call-only ResultType": idemsql.Options{ResultType: reflect.TypeFor[int]()},
		"TTL too long":         idemsql.Options{TTL: idemsql.MaxTTL + time.Hour},
		"call-only on store":   idemsql.Options{Fingerprint: "x"},
		"unencodable request":  idemsql.Options{Fingerprint: make(chan int)},
	} {
		if _, err := idemsql.New(unconnected(t), opt); !errors.Is(err, idemsql.ErrInvalidOption) {
			t.Errorf("%s: err = %v, want ErrInvalidOption", name, err)
		}
	}
	// Two Options are refused rather than merged: nothing is replaced
	// silently.
	if _, err := idemsql.New(unconnected(t), idemsql.Options{TTL: time.Hour}, idemsql.Options{Table: "x"}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Errorf("two Options: %v, want ErrInvalidOption", err)
	}
	if _, err := idemsql.New[*sql.Tx](nil); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Errorf("nil driver: %v", err)
	}
	s, err := idemsql.New(unconnected(t))
	if err != nil || s.Table().Name != idemsql.DefaultTable {
		t.Fatalf("defaults: %v %v", s, err)
	}
}

// unconnected is the driver of a SQLite pool that never connects: options
// are checked before any SQL.
func unconnected(t *testing.T) idemdriver.Driver[*sql.Tx] {
	t.Helper()
	db, err := sql.Open("sqlite", "file:unused?mode=memory")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return idemsqlite.New(db)
}
