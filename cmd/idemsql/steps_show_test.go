package main

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// show prints a RunSteps key's steps: name, state, runs, timing, and the
// result or failure.
func TestShowSteps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	t.Setenv(dsnEnv, path)
	ctx := context.Background()
	db, err := sql.Open("sqlite", idemsqlite.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, db, store); err != nil {
		t.Fatal(err)
	}
	_, err = idemsql.RunSteps(ctx, store, "order:7", 7, func(ctx context.Context, s *idemsql.Steps[*sql.Tx], n int) (int, error) {
		if _, err := idemsql.Step(ctx, s, "charge", func(ctx context.Context, c idemsql.Claim) (map[string]string, error) {
			return map[string]string{"id": "ch_1"}, nil
		}); err != nil {
			return 0, err
		}
		_, err := idemsql.Step(ctx, s, "email", func(ctx context.Context, c idemsql.Claim) (int, error) {
			return 0, idemsql.Permanent("bounced", errors.New("no such mailbox"))
		})
		return 0, err
	})
	if !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "show", "order:7")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	t.Log(stdout)
	for _, want := range []string{`charge  done  runs 1  started `, `{"id":"ch_1"}`, "email  failed  runs 1", "bounced: no such mailbox"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("show lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = runCLI(t, "show", "--json", "order:7")
	if code != exitOK || !strings.Contains(stdout, `"steps": [`) || !strings.Contains(stdout, `"state": "failed"`) {
		t.Errorf("show --json: exit %d\n%s", code, stdout)
	}
}
