package idemsql_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

type payment struct {
	Amount   int64    `json:"amount"`
	Currency string   `json:"currency"`
	Tags     []string `json:"tags,omitempty"`
}

// Golden vectors: a derived key must never change across releases,
// platforms or Go versions, or every stored key would stop matching. If
// one of these fails, the change broke every user's existing keys.
var goldenKeys = []struct {
	namespace string
	args      []any
	canonical string
	key       string
}{
	{"create_invoice", []any{42, 1999}, `[42,1999]`,
		"create_invoice:271eabe0f31d812d3db7b66479e281118c31a1bb9c0e4d62bee664f0801a4247"},
	{"create_invoice", []any{"user-7", 12.5}, `["user-7",12.5]`,
		"create_invoice:bad9d07455e40b8530523e5a3f3b4574460b1bb6b6a837f163d40deff964c4d9"},
	{"charge", []any{map[string]any{"currency": "EUR", "amount": 100}}, `[{"amount":100,"currency":"EUR"}]`,
		"charge:dfcd3688017b850d47a67f51c365d3e12e15d12e323f00ceb123c4794157562b"},
	// A struct with the same fields derives the same key as the map.
	{"charge", []any{payment{Amount: 100, Currency: "EUR"}}, `[{"amount":100,"currency":"EUR"}]`,
		"charge:dfcd3688017b850d47a67f51c365d3e12e15d12e323f00ceb123c4794157562b"},
	// Integers beyond 2^53 keep every digit.
	{"big", []any{int64(9007199254740993), uint64(18446744073709551615)}, `[9007199254740993,18446744073709551615]`,
		"big:de986273ed98bad45207e6a379fc163eac09efee1edecaa58de0d39f2fbcf68d"},
	{"unicode", []any{"é<&>\u2028", nil, true, []int{}}, `["é<&>\u2028",null,true,[]]`,
		"unicode:83a7245509feeda5284c0c0755b93ee924f6166139ae53d1b57346dde86a9f28"},
	{"empty", []any{}, `[]`,
		"empty:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"},
}

func TestDeriveKeyGolden(t *testing.T) {
	for _, g := range goldenKeys {
		canon, err := idemsql.Canonical(g.args)
		if err != nil || string(canon) != g.canonical {
			t.Fatalf("Canonical(%v) = %s, %v; want %s", g.args, canon, err, g.canonical)
		}
		sum := sha256.Sum256([]byte(g.canonical))
		if want := g.namespace + ":" + hex.EncodeToString(sum[:]); want != g.key {
			t.Fatalf("golden vector for %s is inconsistent: %s vs %s", g.canonical, want, g.key)
		}
		key, err := idemsql.DeriveKey(g.namespace, g.args...)
		if err != nil || key != g.key {
			t.Fatalf("DeriveKey(%q, %v) = %q, %v; want %q", g.namespace, g.args, key, err, g.key)
		}
		if err := idemsql.ValidateKey(key); err != nil {
			t.Fatalf("derived key is not a valid key: %v", err)
		}
	}
}

func TestCanonicalSortsNestedKeys(t *testing.T) {
	a, err := idemsql.Canonical(map[string]any{"b": map[string]any{"y": 1, "x": []any{map[string]any{"d": 1, "c": 2}}}, "a": "s"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"s","b":{"x":[{"c":2,"d":1}],"y":1}}`; string(a) != want {
		t.Fatalf("got %s, want %s", a, want)
	}
}

func TestDeriveKeyErrors(t *testing.T) {
	for name, f := range map[string]func() (string, error){
		"empty namespace":    func() (string, error) { return idemsql.DeriveKey("") },
		"long namespace":     func() (string, error) { return idemsql.DeriveKey(strings.Repeat("n", 200)) },
		"unencodable arg":    func() (string, error) { return idemsql.DeriveKey("ns", make(chan int)) },
		"nul in namespace":   func() (string, error) { return idemsql.DeriveKey("a\x00b") },
		"invalid utf8 in ns": func() (string, error) { return idemsql.DeriveKey("\xff") },
	} {
		if _, err := f(); !errors.Is(err, idemsql.ErrInvalidKey) {
			t.Errorf("%s: err = %v, want ErrInvalidKey", name, err)
		}
	}
}

func TestValidateKey(t *testing.T) {
	valid := []string{"a", "order:42", strings.Repeat("k", idemsql.MaxKeyLen), "ключ", "a b"}
	for _, k := range valid {
		if err := idemsql.ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	invalid := []string{"", strings.Repeat("k", idemsql.MaxKeyLen+1), "\xff", "a\x00"}
	for _, k := range invalid {
		if err := idemsql.ValidateKey(k); !errors.Is(err, idemsql.ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
}

func TestFingerprint(t *testing.T) {
	raw, _ := idemsql.Fingerprint([]byte(`{"a":1}`))
	str, _ := idemsql.Fingerprint(`{"a":1}`)
	if hex.EncodeToString(raw) != "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862" || string(raw) != string(str) {
		t.Fatalf("bytes and strings must hash as given: %x %x", raw, str)
	}
	m1, _ := idemsql.Fingerprint(map[string]int{"a": 1, "b": 2})
	m2, _ := idemsql.Fingerprint(struct {
		B int `json:"b"`
		A int `json:"a"`
	}{2, 1})
	if string(m1) != string(m2) {
		t.Fatal("a map and a struct with the same fields must fingerprint alike")
	}
	if _, err := idemsql.Fingerprint(func() {}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("unencodable request: %v", err)
	}
}

func FuzzCanonicalIsStable(f *testing.F) {
	f.Add(`{"b":1,"a":[1,2,{"d":null,"c":"x"}]}`)
	f.Add(`[1e400, -0, 0.1]`)
	f.Fuzz(func(t *testing.T, doc string) {
		var v any
		if err := jsonUnmarshalNumber([]byte(doc), &v); err != nil {
			return
		}
		once, err := idemsql.Canonical(v)
		if err != nil {
			return
		}
		var again any
		if err := jsonUnmarshalNumber(once, &again); err != nil {
			t.Fatalf("canonical output is not JSON: %s", once)
		}
		twice, err := idemsql.Canonical(again)
		if err != nil || string(once) != string(twice) {
			t.Fatalf("not a fixed point: %s then %s (%v)", once, twice, err)
		}
	})
}

// Types whose encoding by encoding/json loses information.
type (
	priv     struct{ n int }
	halfPriv struct {
		Amount int64 `json:"amount"`
		note   string
	}
	Inner struct {
		X int
		y int
	}
	withInner struct{ Inner }
	inner     struct{ y int }
	withinner struct{ inner }
	myInt     int
	withMyInt struct{ myInt }
	sideA     struct{ X int }
	sideB     struct{ X int }
	collides  struct {
		sideA
		sideB
	}
	shadows struct {
		sideA
		X int
	}
	//lint:ignore U1000 the field exists to be hidden from encoding/json
	priv2 struct{ n int }
	//lint:ignore U1000 the field exists to be hidden from encoding/json
	ptrMarshal struct{ n int }
	skipped    struct {
		Amount int64  `json:"amount"`
		Cache  []int  `json:"-"`
		note   string `json:"-"`
	}
	markers struct {
		_ [0]func()
		//lint:ignore U1000 a zero-size marker, as sync's noCopy is
		noCopy struct{}
		Amount int64 `json:"amount"`
	}
	zeroable struct {
		Amount int64 `json:"amount"`
		P      priv  `json:",omitzero"`
	}
	linked struct {
		V    int
		Next *linked
	}
	// encoding/json writes the fields of an embedded struct type only at
	// the outermost level it meets the type: an inner one is lost.
	loop struct {
		*loop
		N int
	}
	// A tag's name and a field's name collide: encoding/json writes the
	// tagged field only.
	tagVsName struct {
		A int `json:"B"`
		B int
	}
	// An invalid tag name is ignored: A is written as "A", and collides.
	badTagName struct {
		A int `json:"§"`
		B int `json:"A"`
	}
	// An embedded struct with a name in its tag is one field, not
	// promoted fields: no collision.
	taggedEmbed struct {
		sideA `json:"a"`
		X     int
	}
	// encoding/json leaves Next out when its IsZero says so, cycle or not;
	// V makes the check walk the value.
	hiddenLoop struct {
		V    any
		Next *hiddenLoop `json:",omitzero"`
	}
)

func (*hiddenLoop) IsZero() bool { return true }

func (p *ptrMarshal) MarshalJSON() ([]byte, error) { return []byte(strconv.Itoa(p.n)), nil }

func TestDeriveKeyRefusesLossyArgs(t *testing.T) {
	// The defect: both used to derive one key, so the second request got
	// the first one's result.
	k1, err1 := idemsql.DeriveKey("ns", priv{1})
	k2, err2 := idemsql.DeriveKey("ns", priv{2})
	if err1 == nil || err2 == nil {
		t.Fatalf("priv{1} and priv{2} gave keys %q and %q; want errors", k1, k2)
	}

	cycle := &linked{V: 1}
	cycle.Next = cycle
	hidden := &hiddenLoop{}
	hidden.Next = hidden
	for name, c := range map[string]struct {
		args []any
		want []string // in the message, in order
	}{
		"unexported field":          {[]any{priv{1}}, []string{"args[0].n", "idemsql_test.priv", "unexported"}},
		"no exported fields":        {[]any{"x", priv2{}}, []string{"args[1].n", "idemsql_test.priv2"}},
		"one unexported field":      {[]any{halfPriv{Amount: 1, note: "a"}}, []string{"args[0].note", "idemsql_test.halfPriv"}},
		"through a pointer":         {[]any{&priv{1}}, []string{"args[0].n"}},
		"in a slice":                {[]any{[]priv{{1}}}, []string{"args[0][0].n"}},
		"in an interface in a map":  {[]any{map[string]any{"p": priv{1}}}, []string{`args[0]["p"].n`}},
		"in an embedded struct":     {[]any{withInner{Inner{X: 1, y: 2}}}, []string{"args[0].Inner.y", "idemsql_test.Inner"}},
		"in an unexported embedded": {[]any{withinner{inner{1}}}, []string{"args[0].inner.y", "idemsql_test.inner"}},
		"embedded non-struct":       {[]any{withMyInt{1}}, []string{"args[0].myInt", "embedded field myInt"}},
		"colliding fields":          {[]any{collides{}}, []string{"args[0]", "sideA.X and sideB.X", `"X"`}},
		"shadowed field":            {[]any{shadows{}}, []string{"args[0]", "sideA.X and X", "idemsql_test.shadows"}},
		// encoding/json calls a pointer receiver's MarshalJSON only on a
		// value it can take the address of.
		"value of a pointer marshaler": {[]any{ptrMarshal{1}}, []string{"args[0].n", "idemsql_test.ptrMarshal", "pass a pointer"}},
		"pointer marshaler in a map":   {[]any{map[string]ptrMarshal{"a": {1}}}, []string{`args[0]["a"].n`}},
		"pointer marshaler field":      {[]any{struct{ P ptrMarshal }{}}, []string{"args[0].P.n"}},
		"non-zero omitzero field":      {[]any{zeroable{P: priv{1}}}, []string{"args[0].P.n"}},
		"invalid UTF-8 string":         {[]any{"ok", "a\xffb"}, []string{"args[1]", "not valid UTF-8 (byte 1)"}},
		"invalid UTF-8 in a field":     {[]any{payment{Currency: "E\xe2R"}}, []string{"args[0].Currency", "UTF-8"}},
		"invalid UTF-8 in a slice":     {[]any{payment{Tags: []string{"a", "\xc0"}}}, []string{"args[0].Tags[1]", "UTF-8"}},
		"invalid beside escape text":   {[]any{[]string{`\ufffd`, "\xff"}}, []string{"args[0][1]", "UTF-8"}},
		"escape text beside a field":   {[]any{`\ufffd`, "\uFFFD", priv{1}}, []string{"args[2].n"}},
		"invalid UTF-8 map key":        {[]any{map[string]int{"\xff": 1}}, []string{`args[0]["\xff"]`, "map key"}},
		"function":                     {[]any{func() {}}, []string{"func"}},
		"NaN":                          {[]any{math.NaN()}, []string{"NaN"}},
		"infinity":                     {[]any{math.Inf(1)}, []string{"+Inf"}},
		"cycle":                        {[]any{cycle}, []string{"cycle"}},
		// The check goes where encoding/json did not, and must stop.
		"cycle left out by omitzero": {[]any{hiddenLoop{Next: hidden}}, []string{"args[0]", "cycle"}},
		"embeds itself":              {[]any{loop{loop: &loop{N: 2}, N: 1}}, []string{"args[0].loop", "idemsql_test.loop embeds itself"}},
		"tag and name collide":       {[]any{tagVsName{}}, []string{"args[0]", "A and B", `"B"`}},
		"invalid tag name":           {[]any{badTagName{}}, []string{"args[0]", "A and B", `"A"`}},
		"invalid UTF-8 in an array":  {[]any{[2]string{"a", "\xff"}}, []string{"args[0][1]", "UTF-8"}},
		"under a non-string map key": {[]any{map[int]priv{7: {1}}}, []string{"args[0][7].n"}},
	} {
		key, err := idemsql.DeriveKey("ns", c.args...)
		if !errors.Is(err, idemsql.ErrInvalidKey) {
			t.Errorf("%s: DeriveKey = %q, %v; want ErrInvalidKey", name, key, err)
			continue
		}
		msg := err.Error()
		for _, w := range c.want {
			i := strings.Index(msg, w)
			if i < 0 {
				t.Errorf("%s: %q does not say %q", name, msg, w)
				break
			}
			msg = msg[i+len(w):]
		}
	}
}

func TestDeriveKeyAcceptsLosslessArgs(t *testing.T) {
	for name, args := range map[string][]any{
		// A genuine U+FFFD is valid UTF-8, and so is the text \ufffd.
		"replacement character":    {"\uFFFD", map[string]string{"\uFFFD": "x"}},
		"escape-like text":         {`\ufffd`, `a\\ufffd`, `\\\ufffd`},
		"empty struct":             {struct{}{}},
		"fields that hold nothing": {markers{Amount: 1}},
		"nil pointer":              {(*priv)(nil)},
		"empty slice":              {[]priv{}},
		"json:\"-\" fields":        {skipped{Amount: 1, Cache: []int{1}, note: "n"}},
		"zero omitzero field":      {zeroable{Amount: 1}},
		"json.Marshaler":           {time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)},
		"pointer marshaler":        {&ptrMarshal{1}, []ptrMarshal{{2}}, &struct{ P ptrMarshal }{}, map[string]*ptrMarshal{"a": {3}}},
		"bytes":                    {[]byte("\xff\xfe")},
		"tagged embedded struct":   {taggedEmbed{sideA{1}, 2}},
	} {
		if _, err := idemsql.DeriveKey("ns", args...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// Fields tagged json:"-" are the caller's choice to leave out.
	a, _ := idemsql.DeriveKey("ns", skipped{Amount: 1, Cache: []int{1}, note: "n"})
	b, _ := idemsql.DeriveKey("ns", skipped{Amount: 1})
	if c, _ := idemsql.DeriveKey("ns", map[string]int{"amount": 1}); a != b || a != c {
		t.Fatalf("json:\"-\" fields must not count: %s %s %s", a, b, c)
	}
}

func TestFingerprintRefusesLossyRequests(t *testing.T) {
	for name, req := range map[string]any{
		"unexported field": halfPriv{Amount: 1, note: "a"},
		"invalid UTF-8":    map[string]any{"customer": "\xff"},
	} {
		fp, err := idemsql.Fingerprint(req)
		if !errors.Is(err, idemsql.ErrInvalidOption) || !strings.Contains(err.Error(), "request") {
			t.Errorf("%s: Fingerprint = %x, %v; want ErrInvalidOption naming the request", name, fp, err)
		}
	}
	// A string or []byte is hashed as given, whatever its bytes.
	raw, err := idemsql.Fingerprint([]byte("\xff"))
	str, err2 := idemsql.Fingerprint("\xff")
	if want := sha256.Sum256([]byte("\xff")); err != nil || err2 != nil || string(raw) != string(want[:]) || string(str) != string(want[:]) {
		t.Fatalf("bytes and strings must hash as given: %x %x %v %v", raw, str, err, err2)
	}
}

func TestCanonicalNamesTheValue(t *testing.T) {
	_, err := idemsql.Canonical(struct{ P *priv }{&priv{1}})
	if err == nil || !strings.HasPrefix(err.Error(), "value.P.n: field n of idemsql_test.priv is unexported") {
		t.Fatalf("err = %v", err)
	}
}
