package idemhttp

import (
	"errors"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemsql"
)

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		strict   bool
		err      error
	}{
		{in: `"8e03978e-40d5-43e8-bc93-6894a57f9324"`, want: "8e03978e-40d5-43e8-bc93-6894a57f9324"},
		{in: `"8e03978e"`, want: "8e03978e", strict: true},
		{in: `  "abc"	`, want: "abc"},
		{in: `"a b,c;d"`, want: "a b,c;d"}, // an sf-string may hold them
		{in: `"say \"hi\" \\ bye"`, want: `say "hi" \ bye`},
		{in: `"\\"`, want: `\`},
		{in: `8e03978e-40d5`, want: "8e03978e-40d5"},
		{in: `key_with:colons/and+signs`, want: "key_with:colons/and+signs"},
		{in: `8e03978e`, strict: true, err: errKeySyntax},
		{in: ``, err: errEmptyKey},
		{in: `   `, err: errEmptyKey},
		{in: `""`, err: errEmptyKey},
		{in: `"abc`, err: errKeySyntax},
		{in: `"abc";a=1`, err: errKeySyntax},
		{in: `"abc", "def"`, err: errKeySyntax},
		{in: `"a\nb"`, err: errKeySyntax},
		{in: `"a\`, err: errKeySyntax},
		{in: "\"a\tb\"", err: errBadKeyOctets},
		{in: "\"caf\xc3\xa9\"", err: errBadKeyOctets},
		{in: "caf\xc3\xa9", err: errBadKeyOctets},
		{in: "a b", err: errKeySyntax}, // space is printable: the bare form cannot hold it, the quoted one can
		{in: "a\x01b", err: errBadKeyOctets},
		{in: `a,b`, err: errKeySyntax},
		{in: `a;b`, err: errKeySyntax},
		{in: `a"b`, err: errKeySyntax},
		{in: `"` + strings.Repeat("k", 40) + `"`, want: strings.Repeat("k", 40)},
		{in: `"` + strings.Repeat("k", 41) + `"`, err: errKeyTooLong},
		{in: `"` + strings.Repeat(`\\\\`, 21) + `"`, err: errKeyTooLong},
		{in: strings.Repeat("k", 41), err: errKeyTooLong},
	} {
		got, err := ParseKey(tc.in, tc.strict, 40)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParseKey(%q): %q, %v; want error %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseKey(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// The messages say what is wrong with the key, and how to send it.
func TestParseKeyMessages(t *testing.T) {
	for in, want := range map[string]string{
		"a b":         "the key is not an sf-string: a bare key cannot contain a space (quote the key: a quoted key may hold spaces)",
		"caf\xc3\xa9": "the key has a character outside printable ASCII (0x20 to 0x7E)",
		"\"a\tb\"":    "the key has a character outside printable ASCII (0x20 to 0x7E)",
	} {
		_, err := ParseKey(in, false, 40)
		if err == nil || err.Error() != want {
			t.Errorf("ParseKey(%q): %v; want %q", in, err, want)
		}
	}
}

func TestStoredKey(t *testing.T) {
	a := StoredKey("http", "alice", "k1", false)
	b := StoredKey("http", "bob", "k1", false)
	if a == b {
		t.Fatalf("two principals share a key: %q", a)
	}
	if !strings.HasPrefix(a, "http:") || !strings.HasSuffix(a, ":k:k1") || len(a) != len("http:")+32+len(":k:k1") {
		t.Fatalf("readable form: %q", a)
	}
	if u := StoredKey("http", "", "k1", true); u != "http:*:k:k1" {
		t.Fatalf("unscoped: %q", u)
	}
	long := strings.Repeat("x", 255)
	h := StoredKey("http", "alice", long, false)
	if !strings.Contains(h, ":h:") || len(h) > idemsql.MaxKeyLen || idemsql.ValidateKey(h) != nil {
		t.Fatalf("hashed form: %q (%d bytes)", h, len(h))
	}
	// The longest readable key fits exactly; one byte more is hashed.
	room := idemsql.MaxKeyLen - len("http:") - 32 - len(":k:")
	if k := StoredKey("http", "alice", strings.Repeat("y", room), false); len(k) != idemsql.MaxKeyLen || !strings.Contains(k, ":k:") {
		t.Fatalf("a key of %d bytes: %q", room, k)
	}
	if k := StoredKey("http", "alice", strings.Repeat("y", room+1), false); !strings.Contains(k, ":h:") {
		t.Fatalf("a key of %d bytes is not hashed: %q", room+1, k)
	}
	// A client cannot forge the hashed form of another key with a readable one.
	forged := StoredKey("http", "alice", h[strings.Index(h, ":h:")+3:], false)
	if forged == h {
		t.Fatalf("forged %q", forged)
	}
}
