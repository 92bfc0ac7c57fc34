package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/migrations"
)

// buildCLI builds cmd/idemsql into dir once, as a user's go install would.
func buildCLI(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "idemsql")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/idemsql/idemsql/cmd/idemsql")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/idemsql: %v\n%s", err, out)
	}
	return bin
}

// cliEnv runs the built command against one backend's database.
type cliEnv struct {
	*env
	t   *testing.T
	bin string
	dsn string // what the command gets in IDEMSQL_DSN
}

type cliResult struct {
	code           int
	stdout, stderr string
}

// run runs the command with the DSN in the environment, as an operator
// would, and the table named before the command (a --table after it
// wins).
func (c *cliEnv) run(args ...string) cliResult {
	c.t.Helper()
	return c.runWith([]string{"IDEMSQL_DSN=" + c.dsn}, append([]string{"--table", c.table}, args...)...)
}

func (c *cliEnv) runWith(env []string, args ...string) cliResult {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		c.t.Fatalf("idemsql %q: %v", args, err)
	}
	return r
}

// want checks the exit code and that stdout and stderr hold the parts
// given ("" for anything).
func (r cliResult) want(t *testing.T, what string, code int, stdout, stderr string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stdout, stdout) || !strings.Contains(r.stderr, stderr) {
		t.Fatalf("%s: exit %d, want %d (stdout with %q, stderr with %q)\nstdout:\n%s\nstderr:\n%s",
			what, r.code, code, stdout, stderr, r.stdout, r.stderr)
	}
}

// cliDSN is the DSN an operator would hand the command for the backend's
// database. The MySQL one lacks parseTime: the command must not need it.
func cliDSN(t *testing.T, b backend, e *env) string {
	switch b.dialect {
	case "postgres":
		return postgresDSN(t)
	case "mysql":
		cfg, err := mysql.ParseDSN(mysqlDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg.ParseTime = false
		return cfg.FormatDSN()
	}
	var path string
	if err := e.db.QueryRow("SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCLI runs every command of cmd/idemsql, built once, on PostgreSQL,
// MySQL/MariaDB and SQLite: output, exit codes, bad input.
func TestCLI(t *testing.T) {
	bin := buildCLI(t, t.TempDir())
	for _, b := range backends {
		if b.name == "postgres-pgx" || b.name == "galera" {
			continue // the command reaches PostgreSQL through pgx's stdlib, and MariaDB as a server
		}
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := b.setup(t)
			c := &cliEnv{env: e, t: t, bin: bin, dsn: cliDSN(t, b, e)}
			t.Run("Migrate", func(t *testing.T) { testCLIMigrate(t, c) })
			fx := makeInspectFixture(t, e)
			t.Run("Ls", func(t *testing.T) { testCLILs(t, c.at(t)) })
			t.Run("Show", func(t *testing.T) { testCLIShow(t, c.at(t), fx) })
			t.Run("Stats", func(t *testing.T) { testCLIStats(t, c.at(t)) })
			t.Run("SweepableCounts", func(t *testing.T) { testCLISweepableCounts(t, c.at(t)) })
			t.Run("Sweep", func(t *testing.T) { testCLISweep(t, c.at(t)) })
			t.Run("SweepLeavesReleased", func(t *testing.T) { testCLISweepLeavesReleased(t, c.at(t)) })
			t.Run("Purge", func(t *testing.T) { testCLIPurge(t, c.at(t)) })
			t.Run("Errors", func(t *testing.T) { testCLIErrors(t, c.at(t), b) })
			t.Run("InterruptedPurge", func(t *testing.T) { testCLIInterrupt(t, c.at(t)) })
		})
	}
}

// at is c for a subtest.
func (c *cliEnv) at(t *testing.T) *cliEnv {
	cc := *c
	cc.t = t
	return &cc
}

func testCLIMigrate(t *testing.T, c *cliEnv) {
	cc := c.at(t)
	cc.env = &env{t: t, dialect: c.dialect, db: c.db, store: c.store, table: "idem_cli_" + uniqueSuffix(t)}
	versions := migrations.VersionTable(cc.table)
	t.Cleanup(func() {
		_, _ = c.db.Exec("DROP TABLE IF EXISTS " + cc.table)
		_, _ = c.db.Exec("DROP TABLE IF EXISTS " + versions)
	})
	exists := func(table string) bool {
		var n int64
		return c.db.QueryRow("SELECT COUNT(*) FROM "+table).Scan(&n) == nil
	}
	type status struct {
		Table      string `json:"table"`
		Migrations []struct {
			Version   int64      `json:"version"`
			Source    string     `json:"source"`
			Applied   bool       `json:"applied"`
			AppliedAt *time.Time `json:"applied_at"`
		} `json:"migrations"`
	}
	statusJSON := func(applied bool) {
		t.Helper()
		r := cc.run("migrate", "status", "--json")
		r.want(t, "migrate status --json", 0, "", "")
		var st status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("migrate status --json: %v\n%s", err, r.stdout)
		}
		if st.Table != cc.table || len(st.Migrations) == 0 || st.Migrations[0].Version != 1 {
			t.Fatalf("migrate status --json: %+v, want the migrations from version 1", st)
		}
		for _, m := range st.Migrations {
			if m.Applied != applied || (m.AppliedAt != nil) != applied {
				t.Fatalf("migrate status --json: %+v, want every migration applied=%v", st, applied)
			}
		}
	}
	cc.run("migrate", "status").want(t, "migrate status of a new table", 0, "1        pending", "")
	statusJSON(false)
	if exists(versions) {
		t.Fatal("migrate status created the version table")
	}
	cc.run("migrate", "down", "--yes").want(t, "migrate down --yes of a new table", 1, "", "nothing to migrate down: table "+cc.table+" does not exist in ")
	if exists(versions) {
		t.Fatal("migrate down of a table that does not exist created the version table")
	}
	if r := cc.run("migrate", "up"); !regexp.MustCompile(`^applied version 1 \(00001_create_idempotency_keys.sql\)(, version \d+ \(\S+\))* to ` + cc.table + ` in `).MatchString(r.stdout) {
		r.want(t, "migrate up says what it applied", 0, "applied version 1 (00001_create_idempotency_keys.sql)", "")
	}
	if !exists(cc.table) || !exists(versions) {
		t.Fatal("migrate up did not create the table and its version table")
	}
	cc.run("migrate", "up").want(t, "migrate up again", 0, "is up to date", "")
	cc.run("migrate", "status").want(t, "migrate status", 0, "applied", "")
	statusJSON(true)
	cc.run("stats").want(t, "stats on the new table", 0, "rows", "")
	cc.run("migrate", "down").want(t, "migrate down without --yes", 2, "", "pass --yes")
	if !exists(cc.table) {
		t.Fatal("migrate down without --yes dropped the table")
	}
	cc.run("migrate", "down", "--yes").want(t, "migrate down --yes", 0, cc.table+" dropped", "")
	if exists(cc.table) {
		t.Fatal("migrate down --yes left the table")
	}
	statusJSON(false)
	r := cc.run("migrate", "down", "--yes")
	r.want(t, "migrate down --yes again", 1, "", "nothing to migrate down")
	if strings.Contains(r.stdout, "dropped") {
		t.Fatalf("migrate down --yes again says it dropped the table:\n%s", r.stdout)
	}
	cc.run("stats").want(t, "stats after down", 1, "", "run `idemsql migrate up`")
}

type lsJSON struct {
	Rows []struct {
		Key           string     `json:"key"`
		Status        string     `json:"status"`
		Lease         string     `json:"lease"`
		Attempt       int64      `json:"attempt"`
		LeaseUntil    *time.Time `json:"lease_until"`
		CreatedAt     time.Time  `json:"created_at"`
		ExpiresAt     time.Time  `json:"expires_at"`
		Expired       bool       `json:"expired"`
		ErrorClass    string     `json:"error_class"`
		DownstreamKey string     `json:"downstream_key"`
		Result        any        `json:"result"`
	} `json:"rows"`
	Next string `json:"next"`
}

func (c *cliEnv) ls(args ...string) lsJSON {
	c.t.Helper()
	r := c.run(append([]string{"ls", "--json"}, args...)...)
	r.want(c.t, "ls --json "+strings.Join(args, " "), 0, "", "")
	var out lsJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		c.t.Fatalf("ls --json: %v\n%s", err, r.stdout)
	}
	return out
}

func (l lsJSON) keys() []string {
	var keys []string
	for _, r := range l.Rows {
		keys = append(keys, r.Key)
	}
	return keys
}

// tableKeys reads the first column of a table the command printed.
func tableKeys(out string) []string {
	var keys []string
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines[1:] {
		keys = append(keys, strings.Fields(l)[0])
	}
	return keys
}

func testCLILs(t *testing.T, c *cliEnv) {
	r := c.run("ls")
	r.want(t, "ls", 0, "KEY", "")
	if got := tableKeys(r.stdout); !slices.Equal(got, fixtureKeys) {
		t.Fatalf("ls: %q, want %q\n%s", got, fixtureKeys, r.stdout)
	}
	if !regexp.MustCompile(`(?m)^pay:stale\s+in_progress\s+stale\s+1\s+\S+ ago\s+in \S+\s+-$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^old:expired\s+completed\s+none\s+1\s+.* ago\s+expired \S+ ago\s+-$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^acct:failed\s+failed\s+none\s+1\s+.*\s+card_declined$`).MatchString(r.stdout) {
		t.Fatalf("ls rows:\n%s", r.stdout)
	}
	all := c.ls()
	if !slices.Equal(all.keys(), fixtureKeys) || all.Next != "" {
		t.Fatalf("ls --json: %q next %q", all.keys(), all.Next)
	}
	for _, row := range all.Rows {
		// A downstream key for lease-mode claims, none for atomic-mode rows.
		if row.Result != nil || row.CreatedAt.IsZero() || (row.DownstreamKey == "") != (row.LeaseUntil == nil) {
			t.Fatalf("ls --json row: %+v", row)
		}
	}
	for _, f := range []struct {
		args []string
		want []string
	}{
		{[]string{"--stale"}, []string{"pay:stale"}},
		{[]string{"--released"}, []string{"pay:released"}},
		{[]string{"--lease", "live"}, []string{"pay:live"}},
		{[]string{"--lease", "abandoned"}, []string{"atomic:abandoned"}},
		{[]string{"--status", "failed"}, []string{"acct:failed"}},
		{[]string{"--status", "in_progress", "--prefix", "pay:"}, []string{"pay:live", "pay:released", "pay:stale"}},
		{[]string{"--older-than", "1h"}, []string{"atomic:abandoned"}},
		{[]string{"--older-than", "1d"}, nil},
		{[]string{"--sweepable"}, []string{"atomic:abandoned", "pay:stale"}},
		{[]string{"--purgeable"}, []string{"old:expired"}},
		{[]string{"--prefix", "acct:"}, []string{"acct:done", "acct:failed"}},
		{[]string{"--prefix", "acct_"}, nil},
		{[]string{"--after", "old:expired", "--limit", "2"}, []string{"pay:done", "pay:live"}},
		{[]string{"--limit", "0"}, fixtureKeys},
	} {
		if got := c.ls(f.args...).keys(); !slices.Equal(got, f.want) {
			t.Errorf("ls %q: %q, want %q", f.args, got, f.want)
		}
	}
	// A page that is not the last says where to go on.
	page := c.ls("--prefix", "pay:", "--limit", "2")
	if !slices.Equal(page.keys(), []string{"pay:done", "pay:live"}) || page.Next != "pay:live" {
		t.Fatalf("a first page: %q next %q", page.keys(), page.Next)
	}
	c.run("ls", "--prefix", "pay:", "--limit", "2").want(t, "ls with more rows", 0, "pay:live", "more rows: continue with --after 'pay:live'")
	// Flags after the command's arguments, and before the command.
	c.runWith([]string{"IDEMSQL_DSN=" + c.dsn}, "--table", c.table, "ls", "--stale").want(t, "connection flags before the command", 0, "pay:stale", "")
	c.run("ls", "--prefix", "none:").want(t, "ls with no rows", 0, "no rows", "")
}

func testCLIShow(t *testing.T, c *cliEnv, fx inspectFixture) {
	r := c.run("show", "acct:done")
	r.want(t, "show a completed key", 0, "completed", "")
	for _, want := range []string{`(?m)^attempt +1$`, `(?m)^lease +none: the outcome is recorded$`,
		`(?m)^result +\d+ bytes$`, `"amount": 7`, `"key": "acct:done"`, `(?m)^expires +`} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Fatalf("show acct:done does not match %s:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "downstream key") {
		t.Fatalf("show prints a downstream key for an atomic-mode row:\n%s", r.stdout)
	}
	r = c.run("show", "pay:stale")
	r.want(t, "show a stale claim", 0, "stale: the lease ran out", "")
	if !strings.Contains(r.stdout, "downstream key  "+fx.stale.DownstreamKey) || !strings.Contains(r.stdout, "owner           "+fx.stale.Owner) {
		t.Fatalf("show pay:stale:\n%s", r.stdout)
	}
	c.run("show", "pay:live").want(t, "show a live claim", 0, "live: held until", "")
	r = c.run("show", "pay:released")
	r.want(t, "show a released claim", 0, "released because", "")
	if !regexp.MustCompile(`lease +released \d+(\.\d+)?(ms|s) ago by its holder`).MatchString(r.stdout) {
		t.Fatalf("show pay:released does not say how long ago it was released:\n%s", r.stdout)
	}
	c.run("show", "atomic:abandoned").want(t, "show an abandoned claim", 0, "abandoned: in progress without a lease", "")
	c.run("show", "acct:failed").want(t, "show a failure", 0, "failure      card_declined: the card was declined", "")
	c.run("show", "old:expired").want(t, "show an expired key", 0, "expired; the next call with the key runs again", "")

	r = c.run("show", "--json", "pay:done")
	r.want(t, "show --json", 0, "", "")
	var row struct {
		Status        string          `json:"status"`
		Lease         string          `json:"lease"`
		DownstreamKey string          `json:"downstream_key"`
		Result        json.RawMessage `json:"result"`
		LeaseUntil    *time.Time      `json:"lease_until"`
		CompletedAt   *time.Time      `json:"completed_at"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &row); err != nil {
		t.Fatalf("show --json: %v\n%s", err, r.stdout)
	}
	var rc receipt
	if err := json.Unmarshal(row.Result, &rc); err != nil || row.Status != "completed" || row.Lease != "none" ||
		row.DownstreamKey != fx.externalKey || rc.Downstream != fx.externalKey || row.LeaseUntil == nil || row.CompletedAt == nil {
		t.Fatalf("show --json pay:done: %+v %+v %v", row, rc, err)
	}
	// A key after its flags' end, even one that looks like a flag.
	c.run("show", "--", "-not-a-flag").want(t, "show after --", 3, "", "no key -not-a-flag in")
	c.run("show", "no:such-key").want(t, "show an unknown key", 3, "", "no key no:such-key in "+c.table)
}

func testCLIStats(t *testing.T, c *cliEnv) {
	r := c.run("stats")
	r.want(t, "stats", 0, "table "+c.table+" ("+c.dialect+"), read at ", "")
	for _, re := range []string{`(?m)^rows\s+9$`, `(?m)^  in progress\s+4$`, `(?m)^    stale leases\s+1\s`, `(?m)^    released\s+1\s`,
		`(?m)^re-claimed\s+1\s`, `(?m)^purgeable\s+1\s`, `(?m)^oldest in progress: atomic:abandoned, claimed .*\(2h0m ago\)$`} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Fatalf("stats does not match %s:\n%s", re, r.stdout)
		}
	}
	r = c.run("stats", "--json")
	r.want(t, "stats --json", 0, "", "")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"total": 9.0, "in_progress": 4.0, "completed": 4.0, "failed": 1.0, "live_leases": 1.0,
		"stale_leases": 1.0, "released": 1.0, "abandoned": 1.0, "retried": 1.0, "sweepable": 2.0, "purgeable": 1.0,
		"oldest_in_progress": "atomic:abandoned", "table": c.table} {
		if st[k] != want {
			t.Errorf("stats --json %s = %v, want %v", k, st[k], want)
		}
	}
}

func testCLISweep(t *testing.T, c *cliEnv) {
	r := c.run("sweep", "--dry-run")
	r.want(t, "sweep --dry-run", 0, "would abandon (record as failed, class abandoned) 2 stale claims in", "")
	if got := tableKeys(strings.SplitN(r.stdout, "\ndry run", 2)[0]); !slices.Equal(got, []string{"atomic:abandoned", "pay:stale"}) {
		t.Fatalf("sweep --dry-run lists %q:\n%s", got, r.stdout)
	}
	if c.ls("--stale").keys() == nil {
		t.Fatal("the dry run swept")
	}
	c.run("sweep").want(t, "sweep", 0, "swept 2 stale claims: 2 abandoned, 0 released", "")
	r = c.run("show", "pay:stale")
	r.want(t, "a swept claim", 0, "failure         abandoned: the lease of", "")
	if c.ls("--stale").keys() != nil {
		t.Fatal("a stale claim is left after the sweep")
	}

	// --release: the next call runs again.
	ops := opsFor(c.store)
	if cl, err := ops.claim(context.Background(), "pay:stale2", idemsql.Options{Lease: time.Hour}); err != nil || !cl.Held {
		t.Fatalf("claim: %+v %v", cl, err)
	}
	c.exec(t, "UPDATE "+c.table+" SET lease_until = "+c.secondsAgo(5)+" WHERE idem_key = ?", "pay:stale2")
	// The claim its holder released (pay:released) is left to callers.
	c.run("sweep", "--release", "--dry-run").want(t, "sweep --release --dry-run", 0, "would release (the next call runs again) 1 stale claim in", "")
	c.run("sweep", "--release", "--batch", "1").want(t, "sweep --release", 0, "swept 1 stale claim: 0 abandoned, 1 released", "")
	c.run("sweep", "--release", "--dry-run").want(t, "sweep --release --dry-run again", 0, "would release (the next call runs again) 0 stale claims", "")
	released := c.ls("--released")
	if !slices.Equal(released.keys(), []string{"pay:released", "pay:stale2"}) || released.Rows[0].Attempt != 1 || released.Rows[1].Attempt != 2 {
		t.Fatalf("released after sweep --release: %+v", released.Rows)
	}
	c.run("sweep").want(t, "sweep with nothing stale", 0, "swept 0 stale claims", "")
}

// sweepDryRunCount reads the count a sweep's dry run announces.
func sweepDryRunCount(t *testing.T, c *cliEnv, args ...string) int {
	t.Helper()
	r := c.run(append([]string{"sweep", "--dry-run"}, args...)...)
	r.want(t, "sweep --dry-run "+strings.Join(args, " "), 0, "dry run: would ", "")
	m := regexp.MustCompile(`dry run: would .* (\d+) stale claims? in `).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("sweep --dry-run %q:\n%s", args, r.stdout)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// On a table with live, stale, released, abandoned, completed and expired
// rows, ls --sweepable, stats and sweep --dry-run (with or without
// --release) count the same rows, and sweep then takes exactly those.
func testCLISweepableCounts(t *testing.T, c *cliEnv) {
	listed := c.ls("--sweepable").keys()
	r := c.run("stats", "--json")
	r.want(t, "stats --json", 0, "", "")
	var st struct {
		Sweepable int `json:"sweepable"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	abandon, release := sweepDryRunCount(t, c), sweepDryRunCount(t, c, "--release")
	if len(listed) != st.Sweepable || abandon != st.Sweepable || release != st.Sweepable {
		t.Fatalf("ls --sweepable lists %d %q, stats counts %d, sweep --dry-run %d, sweep --release --dry-run %d: want one count",
			len(listed), listed, st.Sweepable, abandon, release)
	}
}

// A claim whose holder released it (fn failed) is the caller's to retry
// until its retention runs out: sweep --release, run a moment later, leaves
// it as it is, its reason and attempt included.
func testCLISweepLeavesReleased(t *testing.T, c *cliEnv) {
	ctx := context.Background()
	ops := opsFor(c.store)
	timeout := errors.New("psp timeout")
	if _, err := ops.do(ctx, "psp:charge-1", func(context.Context, idemsql.Claim) (receipt, error) {
		return receipt{}, timeout
	}); err != timeout {
		t.Fatalf("RunExternal: %v, want fn's error", err)
	}
	before := c.ls("--prefix", "psp:charge-1")
	if len(before.Rows) != 1 || before.Rows[0].Lease != idemsql.LeaseReleased {
		t.Fatalf("after fn failed: %+v", before)
	}
	time.Sleep(2 * time.Second)
	c.run("sweep", "--release").want(t, "sweep --release", 0, "swept ", "")
	r := c.run("show", "--json", "psp:charge-1")
	r.want(t, "show the released claim", 0, "", "")
	var row struct {
		Attempt      int64  `json:"attempt"`
		Lease        string `json:"lease"`
		ErrorClass   string `json:"error_class"`
		ErrorMessage string `json:"error_message"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &row); err != nil {
		t.Fatal(err)
	}
	if row.Attempt != 1 || row.Lease != idemsql.LeaseReleased || row.ErrorClass != idemsql.ReleasedClass || row.ErrorMessage != "fn failed: psp timeout" {
		t.Fatalf("after sweep --release: %+v; want it as its holder left it (attempt 1, \"fn failed: psp timeout\")", row)
	}
	// The caller's retry takes it over, with the same downstream key.
	var calls atomic.Int64
	res, err := ops.do(ctx, "psp:charge-1", external("retry", &calls))
	if err != nil || res.Value.Attempt != 2 || calls.Load() != 1 {
		t.Fatalf("the caller's retry: %+v, %v", res, err)
	}
}

func testCLIPurge(t *testing.T, c *cliEnv) {
	c.run("purge", "--dry-run").want(t, "purge --dry-run", 0, "would delete 1 row (completed or failed, past their retention)", "")
	if got := c.ls("--purgeable").keys(); !slices.Equal(got, []string{"old:expired"}) {
		t.Fatalf("the dry run purged: %q", got)
	}
	c.run("purge").want(t, "purge", 0, "deleted 1 row in 1 batch from "+c.table, "")
	if got := c.ls("--purgeable").keys(); got != nil {
		t.Fatalf("left after purge: %q", got)
	}
	c.run("show", "old:expired").want(t, "show a purged key", 3, "", "no key")
	c.run("purge", "--batch", "2").want(t, "purge with nothing to do", 0, "deleted 0 rows in 1 batch", "")
}

func testCLIErrors(t *testing.T, c *cliEnv, b backend) {
	c.run("stats", "--table", "idem_missing").want(t, "a missing table", 1, "",
		"table idem_missing does not exist in ")
	c.run("ls", "--table", "idem_missing").want(t, "ls on a missing table", 1, "", "run `idemsql migrate up` (with the same --table and --schema)")
	c.run("ls", "--bogus").want(t, "an unknown flag", 2, "", "idemsql ls: unknown flag --bogus\n")
	c.run("bogus").want(t, "an unknown command", 2, "", `unknown command "bogus"`)
	c.run("ls", "--status", "weird").want(t, "a bad status", 2, "", `--status "weird"`)
	c.runWith([]string{"IDEMSQL_DSN="}, "stats").want(t, "no DSN", 2, "", "pass --dsn or set IDEMSQL_DSN")
	c.run("stats", "--dsn", "mysql://root:pw@localhost/x").want(t, "a MySQL URL", 2, "", "go-sql-driver's form")
	if b.dialect == "sqlite" {
		c.run("stats", "--schema", "billing").want(t, "a schema on SQLite", 2, "", "no schemas")
		c.run("stats", "--dsn", filepath.Join(t.TempDir(), "none.db")).want(t, "no database file", 1, "", "no SQLite database at")
		return
	}
	c.run("stats", "--schema", "idem_no_such_schema").want(t, "a missing schema", 1, "", "schema idem_no_such_schema does not exist")

	// A password in the DSN is never printed, whether the server takes it
	// (PostgreSQL trusts local connections here) or refuses it.
	const secret = "Sup3rSecr3t-pw"
	var dsn string
	switch b.dialect {
	case "postgres":
		dsn = strings.Replace(c.dsn, "postgres://postgres@", "postgres://postgres:"+secret+"@", 1)
		if dsn == c.dsn {
			t.Skip("the PostgreSQL DSN has a password or user of its own")
		}
	case "mysql":
		cfg, err := mysql.ParseDSN(c.dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Passwd = secret
		dsn = cfg.FormatDSN()
	}
	for _, args := range [][]string{
		{"stats", "--table", "idem_missing"},
		{"show", "no:such-key"},
		{"ls", "--dsn", strings.Replace(dsn, "127.0.0.1", "127.0.0.1:1", 1)}, // no server there
		{"stats", "--dialect", "mysql"},
	} {
		r := c.runWith([]string{"IDEMSQL_DSN=" + dsn}, append([]string{"--table", c.table}, args...)...)
		if r.code == 0 && args[0] != "show" {
			t.Fatalf("idemsql %q succeeded", args)
		}
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Fatalf("idemsql %q printed the password:\n%s%s", args, r.stdout, r.stderr)
		}
		if args[1] == "--table" && !strings.Contains(r.stderr, ":xxxxx@") {
			t.Fatalf("idemsql %q does not show the DSN with its password masked:\n%s", args, r.stderr)
		}
	}
}

// testCLIInterrupt: Ctrl-C stops purge between batches; every row it says
// it deleted is gone, and no other.
func testCLIInterrupt(t *testing.T, c *cliEnv) {
	const n = 50000
	le := &leaseEnv{env: c.env}
	if c.dialect == "sqlite" {
		// One statement: row by row, modernc's SQLite is slow under the
		// race detector.
		c.exec(t, `INSERT INTO `+c.table+` (idem_key, status, attempt, created_at, updated_at, expires_at)
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1)
SELECT printf('bulk-%05d', i), 'completed', 1, 0, 0, 0 FROM n`, n)
	} else {
		le.insertCompleted(t, "bulk-", n)
		le.expirePrefix(t, "bulk-")
	}
	before := c.queryInt("SELECT COUNT(*) FROM " + c.table)
	cmd := exec.Command(c.bin, "purge", "--batch", "1", "--table", c.table)
	cmd.Env = append(os.Environ(), "IDEMSQL_DSN="+c.dsn)
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	progress := make(chan string, 1)
	var errText strings.Builder
	read := make(chan struct{}) // stderr is read to its end: then Wait may close it
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errText.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "purge: ") {
				select {
				case progress <- sc.Text():
				default:
				}
			}
		}
		close(progress)
	}()
	select {
	case line, ok := <-progress:
		if !ok {
			<-read
			_ = cmd.Wait()
			t.Fatalf("purge ended before a progress line; stdout:\n%s", out.String())
		}
		if !regexp.MustCompile(`^purge: [\d,]+ rows deleted in [\d,]+ batches \(\d+ rows/s\)$`).MatchString(line) {
			t.Fatalf("progress line %q", line)
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-read
		_ = cmd.Wait()
		t.Fatal("no progress line")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	<-read
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit: %v; stdout:\n%s\nstderr:\n%s", err, out.String(), errText.String())
	}
	m := regexp.MustCompile(`^interrupted: deleted ([\d,]+) rows in ([\d,]+) batches; run purge again to go on\n$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("stdout:\n%s", out.String())
	}
	if !strings.Contains(errText.String(), "purge: interrupted; stopping after the batch in flight") {
		t.Fatalf("stderr:\n%s", errText.String())
	}
	deleted, _ := strconv.ParseInt(strings.ReplaceAll(m[1], ",", ""), 10, 64)
	batches, _ := strconv.ParseInt(strings.ReplaceAll(m[2], ",", ""), 10, 64)
	after := c.queryInt("SELECT COUNT(*) FROM " + c.table)
	if deleted == 0 || deleted != batches || after != before-deleted || deleted >= n {
		t.Fatalf("said %d rows in %d batches; %d of %d rows left", deleted, batches, after, before)
	}
}
