package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/idemsql/idemsql/migrations"
)

const migrateUsage = `Usage: idemsql migrate up|down|status [flags]

Applies idemsql's migrations (the package migrations, embedded in this
binary) to the table, with a goose version table of its own,
<table>_goose_version, in the table's schema: it never mixes with the
application's goose_db_version.

  up      create the table, or apply what is pending; safe to run again and
          from many processes at once, under a lock of the database's own
          (on Galera, local to a node: run it through one node).
          Creates a SQLite database file that does not exist, but not a
          --schema that does not exist (exit 1).
  down    drop the table and every key in it; needs --yes. Where no
          migration is applied (no such table, or one made another way) it
          changes nothing and fails (exit 1): nothing to migrate down.
  status  list the migrations and whether each is applied; changes nothing

Flags:
  --yes             down: yes, drop the table
  --json            status: print JSON
  --dsn, --dialect, --table, --schema  the connection (see idemsql --help)
`

func init() {
	commands = append(commands, &command{name: "migrate", usage: migrateUsage, run: runMigrate})
}

func runMigrate(c *cli, def connFlags, args []string) error {
	var cf connFlags
	fs := c.flags("migrate", &cf, def)
	yes := fs.Bool("yes", false, "")
	asJSON := fs.Bool("json", false, "")
	args, err := c.parse(fs, &cf, migrateUsage, args)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return &usageError{cmd: "migrate", msg: fmt.Sprintf("want up, down or status, got %q", args)}
	}
	action := args[0]
	switch action {
	case "up", "status":
	case "down":
		if !*yes {
			return &usageError{cmd: "migrate", msg: "down drops the table and every key in it: pass --yes"}
		}
	default:
		return &usageError{cmd: "migrate", msg: fmt.Sprintf("unknown action %q (want up, down or status)", action)}
	}
	db, err := c.connect(cf, action == "up")
	if err != nil {
		return err
	}
	defer db.Close()
	if db.store.Table().Schema != "" && !db.schemaExists() {
		// Else up reports goose's raw error, and status and down report
		// the migrations pending or nothing applied, as if only the table
		// were missing.
		switch action {
		case "down":
			return fmt.Errorf("nothing to migrate down: schema %s does not exist in %s", db.store.Table().Schema, db.shown)
		case "up":
			return db.errNoSchema("run `idemsql migrate up` again")
		}
		return db.errNoSchema("run `idemsql migrate up`")
	}
	switch action {
	case "up":
		before, err := migrations.Status(c.ctx, db.db, db.store)
		if err != nil {
			return err
		}
		if err := migrations.Up(c.ctx, db.db, db.store); err != nil {
			if missing(db.dialect, err) == "schema" { // dropped since, or schemaExists could not tell
				return db.errNoSchema("run `idemsql migrate up` again")
			}
			return err
		}
		st, err := migrations.Status(c.ctx, db.db, db.store)
		if err != nil {
			return err
		}
		// What this run applied: pending before, applied now (by it, or by
		// a process that migrated at the same moment: Up waits for it).
		pending := map[int64]bool{}
		for _, s := range before {
			pending[s.Version] = !s.Applied
		}
		var applied []string
		for _, s := range st {
			if s.Applied && pending[s.Version] {
				applied = append(applied, fmt.Sprintf("version %d (%s)", s.Version, s.Source))
			}
		}
		if len(applied) == 0 {
			fmt.Fprintf(c.stdout, "%s is up to date in %s: version %d\n", db.table, db.shown, latest(st))
			return nil
		}
		fmt.Fprintf(c.stdout, "applied %s to %s in %s; it is at version %d\n", strings.Join(applied, ", "), db.table, db.shown, latest(st))
	case "down":
		// goose would create the version table to find nothing applied,
		// and down would report a drop that did not happen.
		st, err := migrations.Status(c.ctx, db.db, db.store)
		if err != nil {
			return err
		}
		if latest(st) == 0 {
			exists, err := db.tableExists(c.ctx)
			if err != nil {
				return err
			}
			if exists {
				return fmt.Errorf("nothing to migrate down: table %s in %s has no migration recorded in %s_goose_version: it was not made by `idemsql migrate up`; drop it by hand if it is not needed", db.table, db.shown, db.table)
			}
			return fmt.Errorf("nothing to migrate down: table %s does not exist in %s", db.table, db.shown)
		}
		if err := migrations.Down(c.ctx, db.db, db.store); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s dropped from %s\n", db.table, db.shown)
	case "status":
		st, err := migrations.Status(c.ctx, db.db, db.store)
		if err != nil {
			return err
		}
		if *asJSON {
			type jsonStatus struct {
				Version   int64      `json:"version"`
				Source    string     `json:"source"`
				Applied   bool       `json:"applied"`
				AppliedAt *time.Time `json:"applied_at"`
			}
			out := []jsonStatus{}
			for _, s := range st {
				out = append(out, jsonStatus{Version: s.Version, Source: s.Source, Applied: s.Applied, AppliedAt: optTime(s.AppliedAt)})
			}
			enc := json.NewEncoder(c.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(map[string]any{"table": db.table, "migrations": out})
		}
		fmt.Fprintf(c.stdout, "table %s, version table %s_goose_version\n", db.table, db.table)
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tSTATE\tAPPLIED AT\tSOURCE")
		for _, s := range st {
			state := "pending"
			if s.Applied {
				state = "applied"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.Version, state, fmtTime(s.AppliedAt), s.Source)
		}
		return tw.Flush()
	}
	return nil
}

func latest(st []migrations.MigrationStatus) int64 {
	var v int64
	for _, s := range st {
		if s.Applied && s.Version > v {
			v = s.Version
		}
	}
	return v
}
