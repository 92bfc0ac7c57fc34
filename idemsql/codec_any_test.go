package idemsql_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemsql"
)

// A result of an interface type replays as what encoding/json decodes into
// an interface: a value that would come back as another type is refused
// before anything is stored, and one that comes back as it is goes through.
func TestInterfaceResultReplaysAsItWasReturned(t *testing.T) {
	store, err := idemsql.NewStore(nopDialect{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		v    any
		want string // "" for stored
	}{
		{int64(9007199254740993), "a int64 held by an interface type"},
		{5, "a int held by an interface type"},
		{benchCharge{Ref: "r"}, "a idemsql_test.benchCharge held by an interface type"},
		{[]byte("ab"), "a []uint8 held by an interface type"},
		{5.0, ""},
		{map[string]any{"ref": "r", "amount": 5.0, "tags": []any{"a", true, nil}}, ""},
	} {
		tx := store.Bind(&nopExec{claimed: true})
		_, err := idemsql.Do(context.Background(), tx, "k", func(context.Context) (any, error) { return c.v, nil })
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%#v: %v", c.v, err)
		case c.want != "" && (!errors.Is(err, idemsql.ErrEncode) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%#v: err = %v, want ErrEncode saying %q", c.v, err, c.want)
		}
	}
}
