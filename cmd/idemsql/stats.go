package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
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
	st, err := idemsql.Stats(c.ctx, db.store.DB(db.db, nil))
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
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	line := func(name string, n int64, note string) {
		if note == "" {
			fmt.Fprintf(tw, "%s\t%s\n", name, count(n))
			return
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, count(n), note)
	}
	fmt.Fprintf(tw, "table\t%s\t(%s, read at %s)\n", db.table, db.dialect, fmtTime(st.ReadAt))
	line("rows", st.Total, "")
	line("  in progress", st.InProgress, "")
	line("    live leases", st.LiveLeases, "a lease-mode holder is working")
	line("    stale leases", st.StaleLeases, "the holder's lease ran out without an outcome")
	line("    released", st.Released, "given up by the holder; the next call runs again")
	line("    abandoned", st.Abandoned, "atomic-mode claims committed without an outcome")
	line("  completed", st.Completed, "")
	line("  failed", st.Failed, "")
	line("re-claimed", st.Retried, "attempt > 1: taken over, or claimed anew after retention")
	line("sweepable", st.Sweepable, "`idemsql sweep` would resolve these now")
	line("purgeable", st.Purgeable, "past retention; `idemsql purge` would delete these now")
	if st.OldestInProgress != "" {
		fmt.Fprintf(tw, "oldest in progress\t%s\tclaimed %s (%s)\n", showKey(st.OldestInProgress),
			fmtTime(st.OldestInProgressAt), fmtAge(st.OldestInProgressAt, st.ReadAt))
	}
	return tw.Flush()
}
