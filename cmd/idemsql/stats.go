package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

const statsUsage = `Usage: idemsql stats [flags]

Counts the table's rows by status and lease state, the rows taken over or
claimed anew (attempt > 1), what sweep and purge would do now, and the
oldest row in progress. One read-only statement that scans the table; it
takes no locks.

Flags:
  --json            print JSON
  --dsn, --dialect, --table, --schema  the connection (see idemsql --help)
`

func init() {
	commands = append(commands, &command{name: "stats", usage: statsUsage, run: runStats})
}

func runStats(c *cli, def connFlags, args []string) error {
	var cf connFlags
	fs := c.flags("stats", &cf, def)
	asJSON := fs.Bool("json", false, "")
	args, err := c.parse(fs, &cf, statsUsage, args)
	if err != nil {
		return err
	}
	if err := wantArgs(fs, args); err != nil {
		return err
	}
	db, err := c.connect(cf, false)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := idemsql.Stats(c.ctx, db.store)
	if err != nil {
		return db.explain(err)
	}
	if *asJSON {
		type jsonStats struct {
			Table              string     `json:"table"`
			Total              int64      `json:"total"`
			InProgress         int64      `json:"in_progress"`
			Completed          int64      `json:"completed"`
			Failed             int64      `json:"failed"`
			LiveLeases         int64      `json:"live_leases"`
			StaleLeases        int64      `json:"stale_leases"`
			Released           int64      `json:"released"`
			Abandoned          int64      `json:"abandoned"`
			Retried            int64      `json:"retried"`
			Sweepable          int64      `json:"sweepable"`
			Purgeable          int64      `json:"purgeable"`
			OldestInProgress   string     `json:"oldest_in_progress,omitempty"`
			OldestInProgressAt *time.Time `json:"oldest_in_progress_at"`
			ReadAt             time.Time  `json:"read_at"`
		}
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(jsonStats{Table: db.table, Total: st.Total, InProgress: st.InProgress, Completed: st.Completed,
			Failed: st.Failed, LiveLeases: st.LiveLeases, StaleLeases: st.StaleLeases, Released: st.Released,
			Abandoned: st.Abandoned, Retried: st.Retried, Sweepable: st.Sweepable, Purgeable: st.Purgeable,
			OldestInProgress: st.OldestInProgress, OldestInProgressAt: optTime(st.OldestInProgressAt), ReadAt: st.ReadAt})
	}
	rows := []struct {
		name string
		n    int64
		note string
	}{
		{"rows", st.Total, ""},
		{"  in progress", st.InProgress, ""},
		{"    live leases", st.LiveLeases, "a lease-mode holder is working"},
		{"    stale leases", st.StaleLeases, "the holder's lease ran out without an outcome"},
		{"    released", st.Released, "given up by the holder; the next call runs again"},
		{"    abandoned", st.Abandoned, "atomic-mode claims committed without an outcome"},
		{"  completed", st.Completed, ""},
		{"  failed", st.Failed, ""},
		{"re-claimed", st.Retried, "attempt > 1: taken over, or claimed anew after retention"},
		{"sweepable", st.Sweepable, "`idemsql sweep` would resolve these now"},
		{"purgeable", st.Purgeable, "past retention; `idemsql purge` would delete these now"},
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(count(r.n)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table %s (%s), read at %s\n", db.table, db.dialect, fmtTime(st.ReadAt))
	for _, r := range rows {
		b.WriteString(strings.TrimRight(fmt.Sprintf("%-18s %*s  %s", r.name, width, count(r.n), r.note), " ") + "\n")
	}
	if st.OldestInProgress != "" {
		fmt.Fprintf(&b, "oldest in progress: %s, claimed %s (%s)\n", showKey(st.OldestInProgress),
			fmtTime(st.OldestInProgressAt), fmtAge(st.OldestInProgressAt, st.ReadAt))
	}
	_, err = io.WriteString(c.stdout, b.String())
	return err
}
