package idemslog_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemslog"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/internal/redacttest"
)

func TestRecords(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := idemslog.New(l, nil)
	ctx := context.Background()
	o.Observe(ctx, idemsql.Event{Kind: idemsql.EventClaimed, Mode: "atomic", Key: "k1", Dialect: "postgres", Attempt: 2, Duration: time.Millisecond})
	o.Observe(ctx, idemsql.Event{Kind: idemsql.EventLeaseLost, Mode: "lease", Key: "k2", Dialect: "mysql", Attempt: 3, Err: errors.New("taken over")})
	o.Observe(ctx, idemsql.Event{Kind: idemsql.EventPurged, Mode: "lease", Dialect: "sqlite", Count: 42})

	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, m)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	if r := recs[0]; r["msg"] != "idemsql claimed" || r["level"] != "DEBUG" || r["key"] != "k1" || r["attempt"] != 2.0 || r["dialect"] != "postgres" {
		t.Errorf("claimed: %v", r)
	}
	if r := recs[1]; r["level"] != "WARN" || r["error"] != "taken over" || r["mode"] != "lease" {
		t.Errorf("lease lost: %v", r)
	}
	if r := recs[2]; r["level"] != "INFO" || r["count"] != 42.0 || r["key"] != nil {
		t.Errorf("purged: %v", r)
	}
}

func TestOptionsAndDisabledLevels(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	o := idemslog.New(l, &idemslog.Options{Key: func(string) slog.Value { return slog.StringValue("redacted") }})
	ctx := context.Background()
	o.Observe(ctx, idemsql.Event{Kind: idemsql.EventReplayed, Key: "secret"}) // Debug: not logged
	o.Observe(ctx, idemsql.Event{Kind: idemsql.EventFingerprintMismatch, Key: "secret"})
	out := buf.String()
	if strings.Count(out, "\n") != 1 || strings.Contains(out, "secret") || !strings.Contains(out, "key=redacted") {
		t.Fatalf("output: %q", out)
	}
}

// With Options.Key set, no record holds a key: not as the key attribute,
// and not in the text of an error about the key, a nested call's included.
func TestKeyOptionKeepsKeysOutOfRecords(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hash := func(k string) slog.Value {
		sum := sha256.Sum256([]byte(k))
		return slog.StringValue(hex.EncodeToString(sum[:6]))
	}
	redacttest.Drive(t, idemslog.New(l, &idemslog.Options{Key: hash}))

	withErr := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(line, redacttest.Secret) {
			t.Errorf("record holds a key: %s", line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m["error"] != nil {
			withErr[m["msg"].(string)]++
		}
	}
	// So that the search above is not vacuous: records with errors about
	// keys of every kind were logged.
	for _, msg := range []string{"idemsql fingerprint_mismatch", "idemsql in_progress", "idemsql replayed",
		"idemsql failure_recorded", "idemsql retried", "idemsql lease_lost"} {
		if withErr[msg] == 0 {
			t.Errorf("no %q record with an error; records with errors: %v", msg, withErr)
		}
	}
}
