package idemhttp

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemsql"
)

func principal(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil }

func TestConfigDefaults(t *testing.T) {
	s, err := (&Config{Principal: principal}).settings()
	if err != nil {
		t.Fatal(err)
	}
	if s.header != "Idempotency-Key" || s.replayedHeader != "Idempotent-Replayed" || s.namespace != "http" ||
		s.maxKeyLen != 255 || s.maxBody != 1<<20 || s.maxResponse != 1<<20 || s.problemBase != DefaultProblemBaseURL {
		t.Fatalf("defaults: %+v", s)
	}
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE", "PURGE"} {
		if !s.guards(m) {
			t.Errorf("%s is not guarded by default", m)
		}
	}
	for _, m := range []string{"GET", "HEAD", "OPTIONS", "TRACE"} {
		if s.guards(m) {
			t.Errorf("%s is guarded by default", m)
		}
	}
	for status, want := range map[int]bool{200: true, 201: true, 303: true, 400: true, 404: true, 409: true, 429: false, 499: true, 500: false, 503: false} {
		if s.store(status) != want {
			t.Errorf("store(%d) = %v", status, !want)
		}
	}
	s, err = (&Config{Unscoped: true, Header: "x-request-id", Methods: []string{"GET", "POST"}}).settings()
	if err != nil {
		t.Fatal(err)
	}
	if s.header != "X-Request-Id" || !s.guards("GET") || s.guards("PUT") {
		t.Fatalf("configured: header %q, GET %v, PUT %v", s.header, s.guards("GET"), s.guards("PUT"))
	}
}

func TestConfigInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no principal", Config{}, "Config.Principal is nil"},
		{"both", Config{Principal: principal, Unscoped: true}, "both set"},
		{"header", Config{Unscoped: true, Header: "Idempotency Key"}, "Config.Header"},
		{"header colon", Config{Unscoped: true, Header: "Key:"}, "Config.Header"},
		{"max key len", Config{Unscoped: true, MaxKeyLen: -1}, "Config.MaxKeyLen"},
		{"max key len high", Config{Unscoped: true, MaxKeyLen: 4096}, "Config.MaxKeyLen"},
		{"methods empty", Config{Unscoped: true, Methods: []string{}}, "Config.Methods is empty"},
		{"method", Config{Unscoped: true, Methods: []string{"PO ST"}}, "Config.Methods"},
		{"body", Config{Unscoped: true, MaxBodyBytes: -1}, "Config.MaxBodyBytes"},
		{"response", Config{Unscoped: true, MaxResponseBytes: -1}, "Config.MaxResponseBytes"},
		{"response high", Config{Unscoped: true, MaxResponseBytes: 9 << 20}, "Config.MaxResponseBytes"},
		{"replay headers", Config{Unscoped: true, ReplayHeaders: []string{"Content Type"}}, "Config.ReplayHeaders"},
		{"replayed header", Config{Unscoped: true, ReplayedHeader: "a b"}, "Config.ReplayedHeader"},
		{"namespace", Config{Unscoped: true, Namespace: "a:b"}, "Config.Namespace"},
		{"namespace long", Config{Unscoped: true, Namespace: strings.Repeat("n", 33)}, "Config.Namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.settings()
			if !errors.Is(err, idemsql.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalidOption mentioning %q", err, tc.want)
			}
		})
	}
}

func TestNewRejectsNilStore(t *testing.T) {
	if _, err := New[any](nil, Config{Unscoped: true}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("New with a nil store: %v", err)
	}
	if _, err := NewExternal[any](nil, Config{Unscoped: true}); !errors.Is(err, idemsql.ErrInvalidOption) {
		t.Fatalf("NewExternal with a nil store: %v", err)
	}
}
