package idemsql

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct {
		p, end string
		ok     bool
	}{
		{"a", "b", true},
		{"pay:", "pay;", true},
		{"w%", "w&", true},
		{"\x7f", "\u0080", true},             // one byte to two: still above every "\x7f..."
		{"é", "ê", true},                     // C3 A9 -> C3 AA
		{"\u07ff", "\u0800", true},           // two bytes to three
		{"\ud7ff", "\ue000", true},           // skips the surrogates
		{"\uffff", "\U00010000", true},       // three bytes to four
		{"a\U0010FFFF", "b", true},           // the last character cannot grow
		{"\U0010FFFF\U0010FFFF", "", false},  // nothing is above it but longer strings of it
		{"x\U0010FFFF\U0010FFFF", "y", true}, // carries past several
		{"ab\U0010FFFFc", "ab\U0010FFFFd", true},
	} {
		end, ok := prefixEnd(c.p)
		if end != c.end || ok != c.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", c.p, end, ok, c.end, c.ok)
		}
		if ok && (!utf8.ValidString(end) || end <= c.p) {
			t.Errorf("prefixEnd(%q) = %q: not valid UTF-8 above the prefix", c.p, end)
		}
		// Every string that starts with the prefix is below the end.
		for _, tail := range []string{"", "\x01", "z", "\U0010FFFF", strings.Repeat("\U0010FFFF", 10)} {
			if s := c.p + tail; ok && s >= end {
				t.Errorf("%q >= prefixEnd(%q) = %q", s, c.p, end)
			}
		}
	}
}

func TestKeysEnd(t *testing.T) {
	if !utf8.ValidString(keysEnd) || len(keysEnd) <= MaxKeyLen {
		t.Fatalf("keysEnd is %d bytes, valid UTF-8 %v", len(keysEnd), utf8.ValidString(keysEnd))
	}
	// The greatest keys there are: every longest run of U+10FFFF that fits,
	// followed by the greatest characters of each width.
	run := strings.Repeat("\U0010FFFF", MaxKeyLen/4)
	for _, k := range []string{run, run + "\uffff", run + "\u07ff", run + "\x7f", "\U0010FFFF", "\U0010FFFE", "\xf4\x8f\xbf\xbf\U0010FFFF"} {
		if len(k) > MaxKeyLen || ValidateKey(k) != nil {
			continue
		}
		if k >= keysEnd {
			t.Errorf("key %q is not below keysEnd", k)
		}
	}
}

func TestListFilterArgs(t *testing.T) {
	a, limit, err := ListFilter{}.args()
	if err != nil || limit != DefaultListLimit || a.to != keysEnd || a.from != "" || a.after != "" {
		t.Fatalf("zero filter: %+v %d %v", a, limit, err)
	}
	a, limit, err = ListFilter{Status: StatusFailed, Lease: LeaseStale, OlderThan: 90 * time.Second, Prefix: "pay:", After: "pay:1", Limit: 7}.args()
	if err != nil || limit != 7 || a.status != StatusFailed || a.lease != "stale" || a.older != 90_000_000 || a.from != "pay:" || a.to != "pay;" || a.after != "pay:1" {
		t.Fatalf("filter: %+v %d %v", a, limit, err)
	}
	if a, _, _ := (ListFilter{Prefix: "\U0010FFFF"}).args(); a.to != keysEnd {
		t.Fatalf("a prefix without an end: to = %q", a.to)
	}
	for _, c := range []struct {
		f    ListFilter
		want error
	}{
		{ListFilter{Status: "COMPLETED"}, ErrInvalidOption},
		{ListFilter{Lease: "gone"}, ErrInvalidOption},
		{ListFilter{OlderThan: -1}, ErrInvalidOption},
		{ListFilter{Limit: -1}, ErrInvalidOption},
		{ListFilter{Limit: MaxListLimit + 1}, ErrInvalidOption},
		{ListFilter{Prefix: "a\x00b"}, ErrInvalidKey},
		{ListFilter{Prefix: "\xff"}, ErrInvalidKey},
		{ListFilter{After: strings.Repeat("k", MaxKeyLen+1)}, ErrInvalidKey},
	} {
		if _, _, err := c.f.args(); !errors.Is(err, c.want) {
			t.Errorf("%+v: %v, want %v", c.f, err, c.want)
		}
	}
}

func TestRecordDecode(t *testing.T) {
	r := Record{Key: "k", Status: StatusCompleted, Result: []byte(`{"id":7}`)}
	var v struct{ ID int }
	if err := r.Decode(&v); err != nil || v.ID != 7 {
		t.Fatalf("Decode: %+v %v", v, err)
	}
	var wrong []int
	if err := r.Decode(&wrong); !errors.Is(err, ErrDecode) {
		t.Fatalf("wrong type: %v", err)
	}
	r = Record{Key: "k", Status: StatusFailed}
	if err := r.Decode(&v); !errors.Is(err, ErrDecode) || !strings.Contains(err.Error(), "no stored result") {
		t.Fatalf("no result: %v", err)
	}
}

func TestReadAPIUnbound(t *testing.T) {
	var s *Store[any]
	if _, _, err := Lookup(t.Context(), s, "k"); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Lookup on a nil store: %v", err)
	}
	if _, _, err := List(t.Context(), s, ListFilter{}); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("List on a nil store: %v", err)
	}
	if _, err := Stats(t.Context(), s); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Stats on a nil store: %v", err)
	}
}
