package idemsql_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

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
