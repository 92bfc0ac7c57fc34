package main

import (
	"bytes"
	"database/sql"
	"errors"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsqlite"
)

func TestDetectDialect(t *testing.T) {
	for _, c := range []struct {
		dsn, want string
	}{
		{"postgres://u:p@host:5432/db?sslmode=disable", "postgres"},
		{"postgresql://host/db", "postgres"},
		{"POSTGRES://host/db", "postgres"},
		{"host=localhost dbname=app user=app", "postgres"},
		{"user:pass@tcp(localhost:3306)/db?parseTime=true", "mysql"},
		{"user@unix(/run/mysqld/mysqld.sock)/db", "mysql"},
		{"tcp(localhost)/db", "mysql"},
		{"user@/db", "mysql"},
		{"u:p@w@tcp(h)/db", "mysql"},
		{"app.db", "sqlite"},
		{"./data/app.db", "sqlite"},
		{"/var/lib/app/app.db", "sqlite"},
		{"/db", "sqlite"}, // go-sql-driver would take it; a path reads it better
		{`C:\data\app.db`, "sqlite"},
		{"file:app.db?_pragma=busy_timeout(5000)", "sqlite"},
		{"file:///var/lib/app.db", "sqlite"},
	} {
		got, err := detectDialect(c.dsn)
		if err != nil || got != c.want {
			t.Errorf("detectDialect(%q) = %q, %v; want %q", c.dsn, got, err, c.want)
		}
	}
	for _, dsn := range []string{"", "  ", "mysql://u:p@h/db", "sqlite:///app.db", "redis://h:6379", "u:secret@host/db"} {
		_, err := detectDialect(dsn)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("detectDialect(%q): %v, want a usage error", dsn, err)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("detectDialect(%q) quotes the password: %v", dsn, err)
		}
	}
}

func TestResolveTarget(t *testing.T) {
	red := &redactor{}
	tg, err := resolveTarget("/tmp/app.db", "", red)
	if err != nil || tg.dialect != "sqlite" || tg.path != "/tmp/app.db" || tg.dsn != idemsqlite.DSN("/tmp/app.db") {
		t.Fatalf("a SQLite path: %+v %v", tg, err)
	}
	tg, err = resolveTarget("file:/tmp/a%20b.db?_pragma=busy_timeout(100)", "", red)
	if err != nil || tg.path != "/tmp/a b.db" || tg.dsn != "file:/tmp/a%20b.db?_pragma=busy_timeout(100)" {
		t.Fatalf("a file: URI is used as given: %+v %v", tg, err)
	}
	if tg, err = resolveTarget("file:///tmp/x.db", "", red); err != nil || tg.path != "/tmp/x.db" {
		t.Fatalf("file:///: %+v %v", tg, err)
	}
	tg, err = resolveTarget("u:pw@tcp(db:3306)/app", "", red)
	if err != nil || tg.dialect != "mysql" || !tg.conn.ParseTime || tg.shown != "u:xxxxx@tcp(db:3306)/app" {
		t.Fatalf("MySQL: %+v %v", tg, err)
	}
	if tg, err = resolveTarget("/data/a@b/app.db", "sqlite", red); err != nil || tg.path != "/data/a@b/app.db" {
		t.Fatalf("--dialect sqlite: %+v %v", tg, err)
	}
	for _, c := range []struct{ dsn, dialect string }{
		{":memory:", ""},
		{"file::memory:?cache=shared", ""},
		{"file:x.db?mode=memory", ""},
		{"u:p@tcp(h:3306)", ""},               // no database
		{"postgres://h:99999/db", ""},         // bad port
		{"app.db", "oracle"},                  // unknown dialect
		{"host=h dbname=x", "mysql"},          // not a MySQL DSN
		{"postgres://u:p@h:5432/db", "mysql"}, // the dialect decides
	} {
		_, err := resolveTarget(c.dsn, c.dialect, &redactor{})
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("resolveTarget(%q, %q): %v, want a usage error", c.dsn, c.dialect, err)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, c := range []struct {
		dsn, secret, shown string
	}{
		{"postgres://app:s3cr%2Ft@db:5432/app?sslmode=require", "s3cr/t", "postgres://app:xxxxx@db:5432/app?sslmode=require"},
		{"postgres://app:s3cret@db:5432/app", "s3cret", "postgres://app:xxxxx@db:5432/app"},
		{"postgres://db:5432/app?user=app&password=s3cret", "s3cret", "postgres://db:5432/app?user=app&password=xxxxx"},
		{"postgres://app:s3cret@db:99999/app", "s3cret", "postgres://app:xxxxx@db:99999/app"}, // not a valid URL
		{"host=db dbname=app password=s3cret", "s3cret", "host=db dbname=app password=xxxxx"},
		{"host=db password='s3cret' dbname=app", "s3cret", "host=db password='xxxxx' dbname=app"},
		{"app:s3cret@tcp(db:3306)/app", "s3cret", "app:xxxxx@tcp(db:3306)/app"},
		{"app:p@ss@tcp(db:3306)/app", "p@ss", "app:xxxxx@tcp(db:3306)/app"},
		{"postgres://app@db/app", "", "postgres://app@db/app"},
	} {
		red := &redactor{}
		red.add(c.dsn)
		if got := red.redactDSN(c.dsn); got != c.shown {
			t.Errorf("redactDSN(%q) = %q, want %q", c.dsn, got, c.shown)
		}
		msg := "connect to " + c.dsn + ": password authentication failed (" + c.secret + ")"
		got := red.String(msg)
		if c.secret != "" && strings.Contains(got, c.secret) {
			t.Errorf("String(%q) = %q: the password shows", msg, got)
		}
		if !strings.Contains(got, c.shown) {
			t.Errorf("String(%q) = %q: the DSN is not shown masked", msg, got)
		}
	}
	// A short password is masked in the DSN but not everywhere, so that
	// messages stay readable.
	red := &redactor{}
	red.add("postgres://u:ab@h/db")
	if got := red.String("table about does not exist in postgres://u:ab@h/db"); got != "table about does not exist in postgres://u:xxxxx@h/db" {
		t.Errorf("short password: %q", got)
	}
}

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90s": 90 * time.Second, "15m": 15 * time.Minute, "36h": 36 * time.Hour,
		"7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "0s": 0,
	} {
		if got, err := parseAge(in); err != nil || got != want {
			t.Errorf("parseAge(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "7", "-1h", "1d-1h", "1w"} {
		if _, err := parseAge(in); err == nil {
			t.Errorf("parseAge(%q): no error", in)
		}
	}
}

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		1500 * time.Microsecond: "2ms", 3*time.Minute + 12*time.Second + 400*time.Millisecond: "3m12s",
		23*time.Hour + 59*time.Minute + 10*time.Second: "23h59m", 50 * time.Hour: "2d2h", 72 * time.Hour: "3d",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
	if got := showKey("plain:key-1"); got != "plain:key-1" {
		t.Errorf("showKey: %q", got)
	}
	if got := showKey("a b\tc"); got != `"a b\tc"` {
		t.Errorf("showKey: %q", got)
	}
	if got := count(1234567); got != "1,234,567" {
		t.Errorf("count: %q", got)
	}
	if got := shellQuote("it's"); got != `'it'\''s'` {
		t.Errorf("shellQuote: %q", got)
	}
}

// runCLI runs the command line in-process.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsage(t *testing.T) {
	t.Setenv(dsnEnv, "")
	for _, c := range []struct {
		args      []string
		code      int
		stdout    string // a part of it
		stderr    string
		notStderr string
	}{
		{args: nil, code: exitUsage, stderr: "Usage:"},
		{args: []string{"--help"}, code: exitOK, stdout: "Exit codes:"},
		{args: []string{"-h"}, code: exitOK, stdout: "Commands:"},
		{args: []string{"help"}, code: exitOK, stdout: "Commands:"},
		{args: []string{"help", "purge"}, code: exitOK, stdout: "Usage: idemsql purge"},
		{args: []string{"help", "nope"}, code: exitUsage, stderr: `unknown command "nope"`},
		{args: []string{"help", "ls", "show"}, code: exitUsage, stderr: "at most one COMMAND"},
		{args: []string{"frobnicate"}, code: exitUsage, stderr: `unknown command "frobnicate"`},
		{args: []string{"--bogus", "ls"}, code: exitUsage, stderr: "unknown flag --bogus"},
		{args: []string{"ls", "--bogus"}, code: exitUsage, stderr: "idemsql ls: unknown flag --bogus\nRun 'idemsql ls --help'"},
		{args: []string{"ls", "extra"}, code: exitUsage, stderr: `unexpected argument "extra"`},
		{args: []string{"ls", "--limit", "x"}, code: exitUsage, stderr: "invalid value"},
		{args: []string{"ls", "--older-than", "soon"}, code: exitUsage, stderr: "bad duration"},
		{args: []string{"ls", "--lease", "dead", "--dsn", "x.db"}, code: exitUsage, stderr: `--lease "dead"`},
		{args: []string{"ls", "--stale", "--released", "--dsn", "x.db"}, code: exitUsage, stderr: "exclude each other"},
		{args: []string{"ls", "--status", "done", "--dsn", "x.db"}, code: exitUsage, stderr: `--status "done"`},
		{args: []string{"show"}, code: exitUsage, stderr: "want KEY"},
		{args: []string{"show", "a", "b"}, code: exitUsage, stderr: "want KEY"},
		{args: []string{"show", "--dsn", "x.db", "bad\x00key"}, code: exitUsage, stderr: "invalid key"},
		{args: []string{"migrate"}, code: exitUsage, stderr: "want up, down or status"},
		{args: []string{"migrate", "sideways"}, code: exitUsage, stderr: `unknown action "sideways"`},
		{args: []string{"migrate", "down", "--dsn", "x.db"}, code: exitUsage, stderr: "pass --yes"},
		{args: []string{"purge", "--batch", "0"}, code: exitUsage, stderr: "--batch 0"},
		{args: []string{"ls", "--help"}, code: exitOK, stdout: "Usage: idemsql ls"},
		{args: []string{"show", "--help"}, code: exitOK, stdout: "Exit code 3"},
		{args: []string{"stats", "-h"}, code: exitOK, stdout: "Usage: idemsql stats"},
		{args: []string{"sweep", "--help"}, code: exitOK, stdout: "--release"},
		{args: []string{"migrate", "--help"}, code: exitOK, stdout: "_goose_version"},
		{args: []string{"stats"}, code: exitUsage, stderr: "pass --dsn or set IDEMSQL_DSN"},
		{args: []string{"stats", "--dsn", "mysql://root:hunter22@db/app"}, code: exitUsage, stderr: "go-sql-driver's form", notStderr: "hunter22"},
		{args: []string{"stats", "--dsn", "root:hunter22@db/app"}, code: exitUsage, stderr: "pass --dialect", notStderr: "hunter22"},
		{args: []string{"stats", "--dsn", "postgres://u:hunter22@db:99999/app"}, code: exitUsage, stderr: "xxxxx", notStderr: "hunter22"},
		{args: []string{"stats", "--dsn", "root:hunter22@tcp(db:3306)"}, code: exitUsage, stderr: "bad MySQL DSN", notStderr: "hunter22"},
		{args: []string{"stats", "--dsn", ":memory:"}, code: exitUsage, stderr: "in-memory"},
		{args: []string{"stats", "--dsn", "x.db", "--table", "Bad-Name"}, code: exitUsage, stderr: "not a lowercase identifier"},
		{args: []string{"stats", "--dsn", "x.db", "--schema", "billing"}, code: exitUsage, stderr: "no schemas"},
		{args: []string{"stats", "--dsn", filepath.Join(t.TempDir(), "none.db")}, code: exitFailure, stderr: "no SQLite database at"},
	} {
		code, stdout, stderr := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(stdout, c.stdout) || !strings.Contains(stderr, c.stderr) ||
			c.notStderr != "" && strings.Contains(stderr+stdout, c.notStderr) {
			t.Errorf("idemsql %q: exit %d, want %d\nstdout: %s\nstderr: %s", c.args, code, c.code, stdout, stderr)
		}
	}
	t.Run("EveryCommand", testEveryCommand)
}

// A usage error names the program and the command once, and flags the way
// the help and the docs write them, with two dashes.
func TestUsageMessages(t *testing.T) {
	t.Setenv(dsnEnv, "")
	for _, c := range []struct {
		args []string
		line string // stderr's first line
	}{
		{[]string{"ls", "--limit", "abc"}, `idemsql ls: invalid value "abc" for --limit: parse error`},
		{[]string{"ls", "--limit"}, `idemsql ls: flag needs an argument: --limit`},
		{[]string{"ls", "--older-than", "soon"}, `idemsql ls: invalid value "soon" for --older-than: bad duration "soon" (want 90s, 15m, 36h, 7d, 1d12h)`},
		{[]string{"ls", "--bogus"}, `idemsql ls: unknown flag --bogus`},
		{[]string{"ls", "-bogus"}, `idemsql ls: unknown flag --bogus`},
		{[]string{"stats", "--json=maybe"}, `idemsql stats: invalid boolean value "maybe" for --json: parse error`},
		{[]string{"--bogus"}, `idemsql: unknown flag --bogus`},
		{[]string{"ls", "extra"}, `idemsql ls: unexpected argument "extra"`},
		{[]string{"show", "a", "b"}, `idemsql show: want KEY, got ["a" "b"]`},
		{[]string{"help", "--bogus"}, `idemsql help: unknown flag --bogus`},
		{[]string{"help", "ls", "show"}, `idemsql help: at most one COMMAND, got ["ls" "show"]`},
		{[]string{"migrate"}, `idemsql migrate: want up, down or status, got []`},
		{[]string{"migrate", "down", "--dsn", "x.db"}, `idemsql migrate: down drops the table and every key in it: pass --yes`},
		{[]string{"purge", "--batch", "0"}, `idemsql purge: --batch 0: want 1 to 10000`},
		{[]string{"stats"}, `idemsql: no database: pass --dsn or set IDEMSQL_DSN`},
	} {
		code, _, stderr := runCLI(t, c.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != exitUsage || first != c.line {
			t.Errorf("idemsql %q: exit %d, stderr:\n%s\nwant exit %d, first line:\n%s", c.args, code, stderr, exitUsage, c.line)
		}
	}
}

// --version says which build this is: "(devel)" from a checkout, the
// module's version from go install.
func TestVersion(t *testing.T) {
	code, stdout, stderr := runCLI(t, "--version")
	if code != exitOK || stderr != "" || !regexp.MustCompile(`^idemsql \S+`).MatchString(stdout) || !strings.Contains(stdout, runtime.Version()) {
		t.Fatalf("idemsql --version: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if _, help, _ := runCLI(t, "--help"); !strings.Contains(help, "--version") {
		t.Fatalf("idemsql --help does not mention --version:\n%s", help)
	}
}

// testEveryCommand: the top-level usage lists exactly the commands main
// dispatches (the table, so that the two cannot drift apart), and each of
// them answers --help and help COMMAND with its own usage.
func testEveryCommand(t *testing.T) {
	code, stdout, stderr := runCLI(t, "--help")
	if code != exitOK {
		t.Fatalf("idemsql --help: exit %d\n%s", code, stderr)
	}
	_, section, ok := strings.Cut(stdout, "\nCommands:\n")
	if !ok {
		t.Fatalf("idemsql --help has no Commands section:\n%s", stdout)
	}
	section, _, _ = strings.Cut(section, "\n\n")
	listed := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			listed[f[0]] = true
		}
	}
	if len(commands) == 0 {
		t.Fatal("no commands in the dispatch table")
	}
	dispatched := map[string]bool{}
	for _, cmd := range commands {
		dispatched[cmd.name] = true
		if !listed[cmd.name] {
			t.Errorf("idemsql --help does not list the command %q:\n%s", cmd.name, section)
		}
		want := "Usage: idemsql " + cmd.name
		if !strings.HasPrefix(cmd.usage, want) {
			t.Errorf("%s's usage does not begin with %q:\n%s", cmd.name, want, cmd.usage)
		}
		for _, args := range [][]string{{cmd.name, "--help"}, {cmd.name, "-h"}, {"help", cmd.name}} {
			code, stdout, stderr := runCLI(t, args...)
			if code != exitOK || stdout != cmd.usage || stderr != "" {
				t.Errorf("idemsql %q: exit %d, want 0 and %s's usage\nstdout: %s\nstderr: %s", args, code, cmd.name, stdout, stderr)
			}
		}
	}
	for name := range listed {
		if !dispatched[name] {
			t.Errorf("idemsql --help lists %q, which is not a command", name)
		}
	}
}

// The commands on a SQLite file, in-process: the integration suite runs
// them as a binary on every database.
func TestCommandsOnSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	t.Setenv(dsnEnv, path)
	steps := []struct {
		args   []string
		code   int
		stdout string
	}{
		{[]string{"migrate", "status"}, exitFailure, ""}, // no file yet
		{[]string{"migrate", "up"}, exitOK, "applied version 1 (00001_create_idempotency_keys.sql) to idempotency_keys in " + path + "; it is at version 1"},
		{[]string{"migrate", "up"}, exitOK, "idempotency_keys is up to date in " + path + ": version 1"},
		{[]string{"migrate", "status"}, exitOK, "applied"},
		{[]string{"ls"}, exitOK, "no rows"},
		{[]string{"ls", "--json"}, exitOK, `{"rows": [], "next": ""}`},
		{[]string{"show", "nope"}, exitNotFound, ""},
		{[]string{"stats"}, exitOK, "rows"},
		{[]string{"purge", "--dry-run"}, exitOK, "would delete 0 rows"},
		{[]string{"purge"}, exitOK, "deleted 0 rows in 1 batch from"},
		{[]string{"sweep", "--dry-run"}, exitOK, "would abandon"},
		{[]string{"sweep", "--release"}, exitOK, "swept 0 stale claims:"},
		{[]string{"--table", "other", "stats"}, exitFailure, ""},
		{[]string{"migrate", "down", "--yes"}, exitOK, "dropped"},
		{[]string{"stats"}, exitFailure, ""},
	}
	for _, s := range steps {
		code, stdout, stderr := runCLI(t, s.args...)
		if code != s.code || !strings.Contains(stdout, s.stdout) {
			t.Fatalf("idemsql %q: exit %d, want %d\nstdout: %s\nstderr: %s", s.args, code, s.code, stdout, stderr)
		}
		if code == exitFailure && strings.Contains(stderr, "does not exist") && !strings.Contains(stderr, "run `idemsql migrate up`") {
			t.Fatalf("a missing table does not say what to do: %s", stderr)
		}
	}
}

// migrate down where no migration is applied changes nothing, not even the
// version table goose would create, and says there is nothing to do.
func TestMigrateDownNothingApplied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	t.Setenv(dsnEnv, path)
	db, err := sql.Open("sqlite", idemsqlite.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tables := func() []string {
		t.Helper()
		rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		return names
	}
	down := func(what, stderrWant string, tablesWant ...string) {
		t.Helper()
		code, stdout, stderr := runCLI(t, "migrate", "down", "--yes")
		if code != exitFailure || stdout != "" || !strings.Contains(stderr, stderrWant) {
			t.Fatalf("migrate down --yes, %s: exit %d, want %d with %q\nstdout: %s\nstderr: %s", what, code, exitFailure, stderrWant, stdout, stderr)
		}
		if got := tables(); !slices.Equal(got, tablesWant) {
			t.Fatalf("migrate down --yes, %s: tables %q, want %q", what, got, tablesWant)
		}
	}
	if _, err := db.Exec(`CREATE TABLE other (id INTEGER)`); err != nil {
		t.Fatal(err)
	}
	down("no table", "nothing to migrate down: table idempotency_keys does not exist in "+path, "other")

	if code, _, stderr := runCLI(t, "migrate", "up"); code != exitOK {
		t.Fatalf("migrate up: exit %d\n%s", code, stderr)
	}
	if code, stdout, stderr := runCLI(t, "migrate", "down", "--yes"); code != exitOK || !strings.Contains(stdout, "idempotency_keys dropped") {
		t.Fatalf("migrate down --yes: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	// goose keeps its version table, with nothing applied.
	down("again", "nothing to migrate down: table idempotency_keys does not exist", "idempotency_keys_goose_version", "other")

	if _, err := db.Exec(`CREATE TABLE idempotency_keys (idem_key TEXT)`); err != nil {
		t.Fatal(err)
	}
	down("a table made by hand", "has no migration recorded in idempotency_keys_goose_version", "idempotency_keys", "idempotency_keys_goose_version", "other")
}
