package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

const lsUsage = `Usage: idemsql ls [flags]

Lists keys, ordered by key (byte order), with their status, lease state,
attempt, age and expiry. Times are the database's. Filters combine.

Filters:
  --status S        in_progress, completed or failed
  --lease STATE     live, stale, released, abandoned or none:
                      live       a lease-mode holder is working on it
                      stale      its holder's lease ran out without an outcome
                      released   its holder gave it up (fn failed); the next
                                 call runs again with the same downstream key
                      abandoned  in progress without a lease: an atomic-mode
                                 claim committed without an outcome
                      none       completed or failed
  --stale           same as --lease stale
  --released        same as --lease released
  --sweepable       rows 'idemsql sweep' would resolve now
  --purgeable       rows 'idemsql purge' would delete now
  --older-than D    claimed at least D ago: 90s, 15m, 36h, 7d, 1d12h
  --prefix P        keys that start with P (bytes, no wildcards)

Paging:
  --limit N         at most N rows (default 100; 0 for all, read in pages)
  --after KEY       keys after KEY: the last key of the previous page

Output:
  --json            {"rows": [...], "next": "KEY or empty"}; times in RFC 3339
  --dsn, --dialect, --table, --schema  the connection (see idemsql --help)

When more rows match, the next page's --after is printed to stderr
(people) or given as "next" (JSON).
`

const showUsage = `Usage: idemsql show [flags] KEY

Shows one key's row: status, attempt, owner, lease state in words, times,
expiry, fingerprint, the downstream key of a lease-mode claim, a recorded
failure, and the stored result as indented JSON. Exit code 3 when the table
holds no row for KEY.

Flags:
  --json            the row as JSON (the result as stored)
  --dsn, --dialect, --table, --schema  the connection (see idemsql --help)
`

func init() {
	commands = append(commands,
		&command{name: "ls", usage: lsUsage, run: runLs},
		&command{name: "show", usage: showUsage, run: runShow})
}

// lsPage is how many rows ls --limit 0 reads at a time.
const lsPage = 1000

func runLs(c *cli, def connFlags, args []string) error {
	var cf connFlags
	fs := c.flags("ls", &cf, def)
	var f idemsql.ListFilter
	var lease string
	fs.StringVar(&f.Status, "status", "", "")
	fs.StringVar(&lease, "lease", "", "")
	stale := fs.Bool("stale", false, "")
	released := fs.Bool("released", false, "")
	fs.BoolVar(&f.Sweepable, "sweepable", false, "")
	fs.BoolVar(&f.Purgeable, "purgeable", false, "")
	fs.Var(durationFlag{&f.OlderThan}, "older-than", "")
	fs.StringVar(&f.Prefix, "prefix", "", "")
	fs.StringVar(&f.After, "after", "", "")
	limit := fs.Int("limit", idemsql.DefaultListLimit, "")
	asJSON := fs.Bool("json", false, "")
	args, err := c.parse(fs, &cf, lsUsage, args)
	if err != nil {
		return err
	}
	if err := wantArgs(fs, args); err != nil {
		return err
	}
	bad := func(format string, a ...any) error {
		return &usageError{cmd: "ls", msg: fmt.Sprintf(format, a...)}
	}
	for _, s := range []struct {
		set   bool
		state string
	}{{*stale, idemsql.LeaseStale}, {*released, idemsql.LeaseReleased}} {
		if !s.set {
			continue
		}
		if lease != "" && lease != string(s.state) {
			return bad("--lease %s, --stale and --released exclude each other", lease)
		}
		lease = string(s.state)
	}
	f.Lease = lease
	switch f.Status {
	case "", idemsql.StatusInProgress, idemsql.StatusCompleted, idemsql.StatusFailed:
	default:
		return bad("--status %q: want in_progress, completed or failed", f.Status)
	}
	switch f.Lease {
	case "", idemsql.LeaseLive, idemsql.LeaseStale, idemsql.LeaseReleased, idemsql.LeaseAbandoned, idemsql.LeaseNone:
	default:
		return bad("--lease %q: want live, stale, released, abandoned or none", lease)
	}
	if *limit < 0 {
		return bad("--limit %d: want 0 (all) or more", *limit)
	}
	for name, v := range map[string]string{"--prefix": f.Prefix, "--after": f.After} {
		if v != "" {
			if err := idemsql.ValidateKey(v); err != nil {
				return bad("%s %q: %v", name, v, err)
			}
		}
	}
	db, err := c.connect(cf, false)
	if err != nil {
		return err
	}
	defer db.Close()
	pool := db.store

	var out lsWriter = &lsTable{w: c.stdout}
	if *asJSON {
		out = &lsJSON{w: c.stdout}
	}
	left := *limit // 0: no limit
	for {
		f.Limit = lsPage
		if left > 0 {
			f.Limit = min(left, idemsql.MaxListLimit)
		}
		records, next, err := idemsql.List(c.ctx, pool, f)
		if err != nil {
			return db.explain(err)
		}
		if err := out.rows(records); err != nil {
			return err
		}
		if left > 0 {
			left -= len(records)
		}
		if next == "" || left == 0 && *limit > 0 {
			if err := out.end(next); err != nil {
				return err
			}
			if next != "" && !*asJSON {
				fmt.Fprintf(c.stderr, "more rows: continue with --after %s\n", shellQuote(next))
			}
			return nil
		}
		f.After = next
	}
}

// lsWriter prints ls's rows, a page at a time.
type lsWriter interface {
	rows([]idemsql.Record) error
	end(next string) error
}

type lsTable struct {
	w      io.Writer
	header bool
	n      int
}

func (t *lsTable) rows(recs []idemsql.Record) error {
	if len(recs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(t.w, 0, 4, 2, ' ', 0)
	if !t.header {
		fmt.Fprintln(tw, "KEY\tSTATUS\tLEASE\tATTEMPT\tCREATED\tEXPIRES\tERROR")
		t.header = true
	}
	for _, r := range recs {
		errClass := r.ErrorClass
		if errClass == "" {
			errClass = "-"
		}
		expires := fmtAge(r.ExpiresAt, r.ReadAt)
		if r.Expired && r.Status != idemsql.StatusInProgress {
			expires = "expired " + expires
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", showKey(r.Key), r.Status, r.Lease, r.Attempt,
			fmtAge(r.CreatedAt, r.ReadAt), expires, errClass)
	}
	t.n += len(recs)
	return tw.Flush()
}

func (t *lsTable) end(string) error {
	if t.n == 0 {
		_, err := fmt.Fprintln(t.w, "no rows")
		return err
	}
	return nil
}

// lsJSON streams {"rows": [...], "next": ...}, a row at a time.
type lsJSON struct {
	w     io.Writer
	begun bool
}

func (j *lsJSON) rows(recs []idemsql.Record) error {
	for _, r := range recs {
		b, err := json.Marshal(toJSON(r))
		if err != nil {
			return err
		}
		sep := ",\n  "
		if !j.begun {
			sep, j.begun = "{\"rows\": [\n  ", true
		}
		if _, err := fmt.Fprintf(j.w, "%s%s", sep, b); err != nil {
			return err
		}
	}
	return nil
}

func (j *lsJSON) end(next string) error {
	n, _ := json.Marshal(next)
	if !j.begun {
		_, err := fmt.Fprintf(j.w, "{\"rows\": [], \"next\": %s}\n", n)
		return err
	}
	_, err := fmt.Fprintf(j.w, "\n], \"next\": %s}\n", n)
	return err
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func runShow(c *cli, def connFlags, args []string) error {
	var cf connFlags
	fs := c.flags("show", &cf, def)
	asJSON := fs.Bool("json", false, "")
	args, err := c.parse(fs, &cf, showUsage, args)
	if err != nil {
		return err
	}
	if err := wantArgs(fs, args, "KEY"); err != nil {
		return err
	}
	key := args[0]
	if err := idemsql.ValidateKey(key); err != nil {
		return &usageError{cmd: "show", msg: fmt.Sprintf("key %s: %v", showKey(key), err)}
	}
	db, err := c.connect(cf, false)
	if err != nil {
		return err
	}
	defer db.Close()
	r, found, err := idemsql.Lookup(c.ctx, db.store, key)
	if err != nil {
		return db.explain(err)
	}
	if !found {
		return &exitError{code: exitNotFound, err: fmt.Errorf("no key %s in %s", showKey(key), db.table)}
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(toJSON(r))
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	line := func(name, value string) { fmt.Fprintf(tw, "%s\t%s\n", name, value) }
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmtTime(t) + " (" + fmtAge(t, r.ReadAt) + ")"
	}
	line("key", showKey(r.Key))
	line("status", r.Status)
	line("attempt", fmt.Sprint(r.Attempt))
	line("lease", leaseWords(r))
	if !r.LeaseUntil.IsZero() && r.Status == idemsql.StatusInProgress {
		line("lease until", at(r.LeaseUntil))
	}
	line("owner", orDash(r.Owner))
	line("created", at(r.CreatedAt))
	line("updated", at(r.UpdatedAt))
	line("completed", at(r.CompletedAt))
	expires := at(r.ExpiresAt)
	switch {
	case r.Expired && r.Status != idemsql.StatusInProgress:
		expires += ": expired; the next call with the key runs again, and purge deletes the row"
	case r.Expired:
		expires += ": past retention, but an in-progress row is never free by age"
	}
	line("expires", expires)
	fp := "-"
	if len(r.Fingerprint) > 0 {
		fp = fmt.Sprintf("%x", r.Fingerprint)
	}
	line("fingerprint", fp)
	if ds := downstreamKey(r); ds != "" {
		line("downstream key", showKey(ds))
	}
	switch {
	case r.Status == idemsql.StatusFailed:
		line("failure", r.ErrorClass+": "+r.ErrorMessage)
	case r.ErrorClass != "":
		line("released because", r.ErrorMessage)
	}
	for i, st := range r.Steps {
		line(fmt.Sprintf("step %d", i+1), stepLine(st))
	}
	if r.Result == nil {
		line("result", "-")
		return tw.Flush()
	}
	line("result", fmt.Sprintf("%d bytes", len(r.Result)))
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.stdout, prettyJSON(r.Result))
	return err
}

// stepLine is one step of a RunSteps key's progress: name, state, runs,
// timing, and its result or failure.
func stepLine(st idemsql.StepRecord) string {
	out := fmt.Sprintf("%s  %s  runs %d  started %s", st.Name, st.State, st.Runs, fmtTime(st.Started))
	if !st.Finished.IsZero() {
		out += fmt.Sprintf("  took %v", st.Finished.Sub(st.Started).Round(time.Millisecond))
	}
	switch {
	case st.State == "failed":
		out += "  " + st.Class + ": " + st.Message
	case st.Result != nil:
		out += "  " + string(st.Result)
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
