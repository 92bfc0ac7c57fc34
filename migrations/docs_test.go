package migrations_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/idemsql/idemsql/migrations"
)

// Every stock goose command the docs give names idemsql's own version
// table, the one Up keeps: without -table, goose shares the application's
// goose_db_version, skips or refuses the files, and disagrees with Up.
func TestDocumentedGooseCommandsUseTheVersionTable(t *testing.T) {
	want := "-table " + migrations.VersionTable("idempotency_keys") + " "
	goose := regexp.MustCompile(`(?m)^(?://\s*)?\s*goose .*$`)
	for path, atLeast := range map[string]int{"../README.md": 1, "migrations.go": 3, "../docs/guide.md": 0, "../docs/cli.md": 0} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := goose.FindAllString(string(b), -1)
		if len(lines) < atLeast {
			t.Errorf("%s: %d goose commands, want at least %d", path, len(lines), atLeast)
		}
		for _, line := range lines {
			if !strings.Contains(line, want) {
				t.Errorf("%s: %q does not name the version table (%q)", path, line, want)
			}
		}
	}
}
