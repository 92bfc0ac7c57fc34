package idemsql_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// A result of an interface type replays as what encoding/json decodes into
// an interface: a value that would come back as another type is refused
// before anything is stored, and one that comes back as it is goes through.
func TestInterfaceResultReplaysAsItWasReturned(t *testing.T) {
	store, err := idemsql.New(execDriver{nopDialect{}})
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
		{nil, ""},
		{[]any(nil), "a []interface {} held by an interface type"},
		{map[string]any(nil), "a map[string]interface {} held by an interface type"},
		{map[string]any{"ref": "r", "amount": 5.0, "tags": []any{"a", true, nil}}, ""},
	} {
		tx := idemdriver.Executor(&nopExec{claimed: true})
		_, err := idemsql.Do(context.Background(), store, tx, "k", func(context.Context) (any, error) { return c.v, nil })
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%#v: %v", c.v, err)
		case c.want != "" && (!errors.Is(err, idemsql.ErrEncode) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%#v: err = %v, want ErrEncode saying %q", c.v, err, c.want)
		}
	}
}

// envelope decodes its payload itself, into the concrete type its kind
// names: what encoding/json alone would make of Data is not the question.
type envelope struct {
	Kind string `json:"kind"`
	Data any    `json:"data"`
}

func (e *envelope) UnmarshalJSON(b []byte) error {
	var raw struct {
		Kind string          `json:"kind"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	e.Kind = raw.Kind
	var c benchCharge
	if err := json.Unmarshal(raw.Data, &c); err != nil {
		return err
	}
	e.Data = c
	return nil
}

func TestInterfaceUnderACustomDecoder(t *testing.T) {
	in := envelope{Kind: "charge", Data: benchCharge{Ref: "r", Amount: 5}}
	data, err := idemsql.JSON.Marshal(in)
	if err != nil {
		t.Fatalf("a type that decodes its own interface field was refused: %v", err)
	}
	var back envelope
	if err := idemsql.JSON.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, in) {
		t.Fatalf("replayed as %+v, %v", back, err)
	}
	// Below such a type, what encoding/json itself would lose is still
	// refused: the type's decoder gets the encoding, not the value.
	if _, err := idemsql.JSON.Marshal(envelope{Kind: "\xff"}); err == nil || !strings.Contains(err.Error(), "result.Kind: string is not valid UTF-8") {
		t.Errorf("invalid UTF-8 below a custom decoder: %v", err)
	}
	if _, err := idemsql.JSON.Marshal(envelope{Data: secretive{token: "t"}}); err == nil || !strings.Contains(err.Error(), "result.Data.token: field token") {
		t.Errorf("unexported field below a custom decoder: %v", err)
	}
	// A nil []any or map[string]any in an interface is written as null,
	// which replays as a nil interface.
	for _, v := range []any{anyField{V: []any(nil)}, anyField{V: map[string]any(nil)}} {
		if _, err := idemsql.JSON.Marshal(v); err == nil || !strings.Contains(err.Error(), "held by an interface type") {
			t.Errorf("%#v: err = %v", v, err)
		}
	}
}
