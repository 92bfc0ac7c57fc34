package idemsql_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

type benchResult struct {
	ID       string   `json:"id"`
	Amount   int64    `json:"amount"`
	Currency string   `json:"currency"`
	Paid     bool     `json:"paid"`
	Tags     []string `json:"tags,omitempty"`
}

func TestJSONUnmarshalRefusesUnknownFields(t *testing.T) {
	for _, data := range []string{
		`{"id":"inv_1","amount":10,"note":"gone from the type"}`,
		`{"outer":{"id":"inv_1","gone":1}}`,
	} {
		var v struct {
			benchResult
			Outer *benchResult `json:"outer"`
		}
		err := idemsql.JSON.Unmarshal([]byte(data), &v)
		if err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("JSON.Unmarshal(%s) = %v; want an unknown field error", data, err)
		}
		if err := idemsql.LenientJSON.Unmarshal([]byte(data), &v); err != nil {
			t.Errorf("LenientJSON.Unmarshal(%s) = %v", data, err)
		}
	}
	var v benchResult
	if err := idemsql.LenientJSON.Unmarshal([]byte(`{"id":"inv_1","note":"x"}`), &v); err != nil || v.ID != "inv_1" {
		t.Fatalf("LenientJSON: %+v, %v", v, err)
	}
}

func TestJSONUnmarshalIsJSONUnmarshal(t *testing.T) {
	big := `"` + strings.Repeat("x", 100<<10) + `"`
	for _, c := range []struct {
		data string
		ok   bool
	}{
		{`{"id":"a","amount":1}`, true},
		{" \n{\"id\":\"a\"}\t\r\n ", true},
		{big, true},
		{`42`, true},
		{`7`, true},
		{`null`, true},
		{``, false},
		{`   `, false},
		{`{"id":`, false},
		{`{"id":"a"} {}`, false},
		{`{"id":"a"}]`, false},
		{`42 7`, false},
		{big + `x`, false},
		{`{"amount":"not a number"}`, false},
	} {
		// Any result type decodes these; which one depends on the data.
		var got, want any
		switch c.data {
		case `42`, `7`, `42 7`:
			got, want = new(int), new(int)
		case big, big + `x`:
			got, want = new(string), new(string)
		default:
			got, want = new(benchResult), new(benchResult)
		}
		err := idemsql.JSON.Unmarshal([]byte(c.data), got)
		werr := json.Unmarshal([]byte(c.data), want)
		if (err == nil) != c.ok || (werr == nil) != c.ok {
			t.Errorf("%.40q: err = %v, json.Unmarshal's %v; want ok=%v", c.data, err, werr, c.ok)
		}
		if c.ok && !reflect.DeepEqual(got, want) {
			t.Errorf("%.40q: decoded %v, json.Unmarshal %v", c.data, got, want)
		}
	}
}

// The strict decoder is reused across calls: whatever came before, a call
// decodes exactly its own input.
func TestJSONUnmarshalReuse(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				want := benchResult{ID: fmt.Sprintf("g%d-%d", g, i), Amount: int64(i)}
				data, _ := json.Marshal(want)
				var got benchResult
				if err := idemsql.JSON.Unmarshal(append(data, ' '), &got); err != nil || got.ID != want.ID || got.Amount != want.Amount {
					t.Errorf("got %+v, %v; want %+v", got, err, want)
					return
				}
				var n int
				if err := idemsql.JSON.Unmarshal([]byte(fmt.Sprint(i)), &n); err != nil || n != i {
					t.Errorf("got %d, %v; want %d", n, err, i)
					return
				}
				// Failures of every kind in between, whose offsets count
				// from the start of their own input.
				_ = idemsql.JSON.Unmarshal([]byte(`{"id":"x","unknown":1}`), &got)
				_ = idemsql.JSON.Unmarshal([]byte(`1 2`), &n)
				_ = idemsql.JSON.Unmarshal(nil, &n)
				for _, bad := range []string{`{"id":"x",]`, ` {"amount":"1"}`} {
					if err := idemsql.JSON.Unmarshal([]byte("7 \n"), &n); err != nil {
						t.Error(err)
						return
					}
					if err, want := idemsql.JSON.Unmarshal([]byte(bad), &got), json.Unmarshal([]byte(bad), &got); errorOffset(err) != errorOffset(want) {
						t.Errorf("%s: offset %d (%v), json.Unmarshal's %d (%v)", bad, errorOffset(err), err, errorOffset(want), want)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func errorOffset(err error) int64 {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return se.Offset
	case errors.As(err, &te):
		return te.Offset
	}
	return -1
}

type (
	secretive struct {
		ID    string `json:"id"`
		token string
	}
	hidden    struct{ X int }
	embedsPtr struct{ *hidden }
	leftOut   struct {
		ID string `json:"id"`
		//lint:ignore U1000 the field exists to be left out of the JSON on purpose
		token string `json:"-"`
		Cache any    `json:"-"`
	}
	rawResult struct {
		Body json.RawMessage `json:"body"`
	}
)

func TestJSONMarshalRefusesResultsAReplayWouldChange(t *testing.T) {
	for name, c := range map[string]struct {
		v    any
		want string
	}{
		"invalid UTF-8":                          {benchResult{ID: "inv\xff"}, "result.ID: string is not valid UTF-8 (byte 3)"},
		"invalid UTF-8 in slice":                 {benchResult{Tags: []string{"ok", "\xe2\x82"}}, "result.Tags[1]: string is not valid UTF-8"},
		"invalid UTF-8 map key":                  {map[string]int{"k\xff": 1}, `result["k\xff"]: map key is not valid UTF-8`},
		"invalid UTF-8 in a map value":           {map[string][]string{"k": {"\xff"}}, `result["k"][0]: string is not valid UTF-8`},
		"invalid UTF-8 in any":                   {[]any{1.0, map[string]any{"a": "\xff"}}, `result[1]["a"]: string`},
		"int in []any":                           {[]any{1.0, 2}, "result[1]: a int held by an interface type"},
		"large int64 in map[string]any":          {map[string]any{"n": int64(9007199254740993)}, `result["n"]: a int64 held by an interface type`},
		"[]byte in an any field":                 {anyField{V: []byte("ab")}, "result.V: a []uint8 held by an interface type"},
		"struct in an any field":                 {anyField{V: benchResult{}}, "result.V: a idemsql_test.benchResult held by an interface type"},
		"through a pointer":                      {&benchResult{Currency: "\xff"}, "result.Currency"},
		"unexported field":                       {secretive{ID: "a", token: "t"}, "result.token: field token of idemsql_test.secretive is unexported"},
		"embedded pointer to an unexported type": {embedsPtr{&hidden{1}}, "result.hidden: idemsql_test.embedsPtr embeds *idemsql_test.hidden"},
	} {
		for _, codec := range []idemsql.Codec{idemsql.JSON, idemsql.LenientJSON} {
			data, err := codec.Marshal(c.v)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: Marshal = %s, %v; want an error saying %q", name, data, err, c.want)
			}
		}
	}

	// A replay could not set the embedded pointer's fields. A key, which
	// is never decoded, loses nothing.
	data, _ := json.Marshal(embedsPtr{&hidden{1}})
	if err := json.Unmarshal(data, new(embedsPtr)); err == nil {
		t.Fatalf("encoding/json decoded %s into an embedded pointer to an unexported type", data)
	}
	if _, err := idemsql.Canonical(embedsPtr{&hidden{1}}); err != nil {
		t.Fatal(err)
	}
}

func TestJSONMarshalKeepsWhatAReplayReturns(t *testing.T) {
	stamp := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for name, v := range map[string]any{
		// A genuine U+FFFD is valid UTF-8; so is text that looks like the
		// escape encoding/json writes in place of invalid bytes.
		"replacement character": benchResult{ID: "a\uFFFDb", Tags: []string{"\uFFFD"}},
		"escape-like text":      benchResult{ID: `\ufffd`, Currency: `\\ufffd`, Tags: []string{`\\\ufffd`, `"\ufffd"`}},
		"map keys":              map[string]string{"\uFFFD": `\ufffd`, `\ufffd`: "\uFFFD"},
		"json:\"-\" fields":     leftOut{ID: "a"},
		"nil embedded pointer":  embedsPtr{},
		"json.Marshaler":        stamp,
		"raw JSON":              rawResult{Body: json.RawMessage(`{"s":"\ufffd"}`)},
		"bytes":                 []byte("\xff"),
	} {
		data, err := idemsql.JSON.Marshal(v)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if want, _ := json.Marshal(v); string(data) != string(want) {
			t.Errorf("%s: Marshal = %s, encoding/json %s", name, data, want)
		}
		back := reflect.New(reflect.TypeOf(v))
		if err := idemsql.JSON.Unmarshal(data, back.Interface()); err != nil {
			t.Errorf("%s: Unmarshal(%s): %v", name, data, err)
		} else if got := back.Elem().Interface(); !reflect.DeepEqual(got, v) {
			t.Errorf("%s: replays as %#v, want %#v", name, got, v)
		}
	}
}

// openCodecDB opens a migrated SQLite database for one test.
func openCodecDB(t *testing.T) (*sql.DB, *idemsql.Store[*sql.Tx]) {
	t.Helper()
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(t.TempDir(), "codec.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(context.Background(), db, store); err != nil {
		t.Fatal(err)
	}
	return db, store
}

func TestReplayIsWhatTheFirstCallGot(t *testing.T) {
	_, store := openCodecDB(t)
	ctx := context.Background()
	pool := store

	type v1 struct {
		ID   string `json:"id"`
		Note string `json:"note"`
	}
	type v2 struct {
		ID string `json:"id"`
	}
	first, err := idemsql.Run(ctx, pool, "evolve", func(context.Context, *sql.Tx) (v1, error) {
		return v1{ID: "inv_1", Note: "paid late"}, nil
	})
	if err != nil || first.Replayed {
		t.Fatalf("first call: %+v, %v", first, err)
	}
	// The result type lost a field: the default codec refuses to replay
	// the stored result without it.
	ran := false
	_, err = idemsql.Run(ctx, pool, "evolve", func(context.Context, *sql.Tx) (v2, error) { ran = true; return v2{}, nil })
	if !errors.Is(err, idemsql.ErrDecode) || !strings.Contains(err.Error(), `unknown field "note"`) || ran {
		t.Fatalf("replay into a type without the stored field: err = %v, ran = %v; want ErrDecode", err, ran)
	}
	res, err := idemsql.Run(ctx, pool, "evolve", func(context.Context, *sql.Tx) (v2, error) { ran = true; return v2{}, nil },
		idemsql.Options{Codec: idemsql.LenientJSON})
	if err != nil || !res.Replayed || res.Value.ID != "inv_1" || ran {
		t.Fatalf("lenient replay: %+v, %v, ran = %v", res, err, ran)
	}

	// A result a replay would return changed is not stored: the call fails
	// and the key stays free.
	_, err = idemsql.Run(ctx, pool, "utf8", func(context.Context, *sql.Tx) (v2, error) { return v2{ID: "inv\xff"}, nil })
	if !errors.Is(err, idemsql.ErrEncode) {
		t.Fatalf("invalid UTF-8 result: err = %v; want ErrEncode", err)
	}
	res, err = idemsql.Run(ctx, pool, "utf8", func(context.Context, *sql.Tx) (v2, error) { return v2{ID: "inv\uFFFD"}, nil })
	if err != nil || res.Replayed {
		t.Fatalf("after a refused result the key must be free: %+v, %v", res, err)
	}
	res, err = idemsql.Run(ctx, pool, "utf8", func(context.Context, *sql.Tx) (v2, error) { return v2{}, nil })
	if err != nil || !res.Replayed || res.Value.ID != "inv\uFFFD" {
		t.Fatalf("replay of a genuine U+FFFD: %+v, %v", res, err)
	}
}

// BenchmarkJSONCodec compares the codec with encoding/json alone, which is
// what it costs on top: the checks on Marshal, the strict decoder on
// Unmarshal. "walked" has a field of interface type, which the checks
// always walk.
func BenchmarkJSONCodec(b *testing.B) {
	type walked struct {
		benchResult
		Meta any `json:"meta"`
	}
	small := benchResult{ID: "inv_8d1f0c", Amount: 4200, Currency: "EUR", Paid: true, Tags: []string{"web"}}
	for _, c := range []struct {
		name string
		v    any
	}{
		{"small", small},
		{"walked", walked{small, map[string]any{"channel": "web", "attempt": 1.0}}},
	} {
		data, err := idemsql.JSON.Marshal(c.v)
		if err != nil {
			b.Fatal(err)
		}
		out := reflect.TypeOf(c.v)
		for _, m := range []struct {
			name      string
			marshal   func(any) ([]byte, error)
			unmarshal func([]byte, any) error
		}{
			{"encoding-json", json.Marshal, json.Unmarshal},
			{"JSON", idemsql.JSON.Marshal, idemsql.JSON.Unmarshal},
			{"LenientJSON", nil, idemsql.LenientJSON.Unmarshal},
		} {
			if m.marshal != nil {
				b.Run("Marshal/"+c.name+"/"+m.name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if _, err := m.marshal(c.v); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
			b.Run("Unmarshal/"+c.name+"/"+m.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := m.unmarshal(data, reflect.New(out).Interface()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkDeriveKey(b *testing.B) {
	req := payment{Amount: 4200, Currency: "EUR", Tags: []string{"web"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := idemsql.DeriveKey("charge", "order-42", req); err != nil {
			b.Fatal(err)
		}
	}
}

// anyField holds what a replay decodes as encoding/json decodes into an
// interface.
type anyField struct {
	V any `json:"v"`
}

type chain struct {
	S    string `json:"s"`
	Any  any    `json:"any,omitempty"`
	Next *chain `json:"next,omitempty"`
}

// Values deeper than encoding/json's cycle detection starts are walked
// to the end.
func TestJSONMarshalDeepValues(t *testing.T) {
	var head *chain
	for i := range 3000 {
		head = &chain{S: strconv.Itoa(i), Any: float64(i), Next: head}
	}
	if _, err := idemsql.JSON.Marshal(head); err != nil {
		t.Fatal(err)
	}
	last := head
	for last.Next != nil {
		last = last.Next
	}
	last.S = "\xff"
	_, err := idemsql.JSON.Marshal(head)
	if want := "result" + strings.Repeat(".Next", 2999) + ".S: string is not valid UTF-8"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("err = %.80v…; want %.20s…%s", err, want, want[len(want)-40:])
	}
}

// A string, alone or as a map key and value, either replays exactly or is
// refused, and refused exactly when it is not valid UTF-8.
func FuzzJSONStringRoundTrip(f *testing.F) {
	for _, s := range []string{"", "a", "\uFFFD", `\ufffd`, `\\ufffd`, "\\\xff", "\xef\xbf", "é\xe9", `"\ufffd"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, v := range []any{s, map[string]string{s: s}, []any{map[string]any{s: s}, []any{s}}} {
			data, err := idemsql.JSON.Marshal(v)
			if (err == nil) != utf8.ValidString(s) {
				t.Fatalf("Marshal(%#v) = %s, %v", v, data, err)
			}
			_, kerr := idemsql.DeriveKey("ns", v)
			if (kerr == nil) != (err == nil) {
				t.Fatalf("DeriveKey(%#v): %v, but Marshal: %v", v, kerr, err)
			}
			if err != nil {
				continue
			}
			back := reflect.New(reflect.TypeOf(v))
			if err := idemsql.JSON.Unmarshal(data, back.Interface()); err != nil {
				t.Fatalf("Unmarshal(%s): %v", data, err)
			}
			if !reflect.DeepEqual(back.Elem().Interface(), v) {
				t.Fatalf("%#v replays as %#v", v, back.Elem().Interface())
			}
		}
	})
}
