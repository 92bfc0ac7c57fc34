package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

const purgeUsage = `Usage: idemsql purge [flags]

Deletes completed and failed rows whose retention (expires_at) has passed,
through idemsql.Purge: in batches, each its own short transaction, skipping
rows other transactions hold. Never an in-progress row. Expired rows are
treated as absent by every call anyway: purging only keeps the table small.

On a long run a progress line goes to stderr. Ctrl-C stops after the batch
in flight commits and says how many rows were deleted (exit code 130); a
second Ctrl-C aborts that batch too (rolled back: nothing half-done).

Flags:
  --batch N         rows per batch (default 100, at most 10000; on SQLite
                    writers wait for each batch: keep it small there)
  --dry-run         count the rows that would be deleted; delete nothing
                    ('idemsql ls --purgeable' lists them)
  --dsn, --dialect, --table, --schema  the connection (see idemsql --help)
`

const sweepUsage = `Usage: idemsql sweep [flags]

Resolves in-progress claims that no holder has, through idemsql.Sweep, in
batches, each its own short transaction, skipping rows other sweepers or
callers hold: lease-mode claims whose lease ran out without an outcome
(their holder died or hung), and claims committed without a lease (an
atomic-mode transaction that committed without an outcome).

By default each is recorded as failed, with class "abandoned": calls with
the key then get that failure until the key's retention runs out. With
--release each is released instead: the next call with the key runs again,
with the same downstream key. Which is right depends on the effect:
release when running it again is safe (the downstream system deduplicates
by the downstream key), abandon when a person must look.

A claim its holder released (its function failed) is its caller's to
retry: sweep leaves it alone until its retention has run out with no call
taking it over. Then sweep abandons it, or, with --release, hands it back
to callers for another retention, its attempt and reason kept. The claims
a sweep would take now are those 'idemsql ls --sweepable' lists and
'idemsql stats' counts as sweepable.

Ctrl-C stops after the batch in flight (exit code 130).

Flags:
  --release         release the claims instead of abandoning them
  --batch N         rows per batch (default 100, at most 10000)
  --dry-run         list the claims that would be swept; change nothing
  --dsn, --dialect, --table, --schema  the connection (see idemsql --help)
`

func init() {
	commands = append(commands,
		&command{name: "purge", usage: purgeUsage, run: runPurge},
		&command{name: "sweep", usage: sweepUsage, run: runSweep})
}

// batchJob parses the flags purge and sweep share (and those extra adds),
// and connects.
func (c *cli) batchJob(cmd, usage string, def connFlags, args []string, extra func(*flag.FlagSet)) (db *conn, opt idemsql.Options, dry bool, err error) {
	var cf connFlags
	fs := c.flags(cmd, &cf, def)
	batch := fs.Int("batch", idemsql.DefaultBatchSize, "")
	dryRun := fs.Bool("dry-run", false, "")
	if extra != nil {
		extra(fs)
	}
	args, err = c.parse(fs, &cf, usage, args)
	if err != nil {
		return nil, opt, false, err
	}
	if err := wantArgs(fs, args); err != nil {
		return nil, opt, false, err
	}
	if opt, err = batchOption(cmd, *batch); err != nil {
		return nil, opt, false, err
	}
	db, err = c.connect(cf, false)
	return db, opt, *dryRun, err
}

func runPurge(c *cli, def connFlags, args []string) error {
	db, opt, dry, err := c.batchJob("purge", purgeUsage, def, args, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	if dry {
		st, err := idemsql.Stats(c.ctx, db.store)
		if err != nil {
			return db.explain(err)
		}
		fmt.Fprintf(c.stdout, "dry run: would delete %s (completed or failed, past their retention) of %s in %s\n",
			plural(st.Purgeable, "row"), count(st.Total), db.table)
		return nil
	}
	var st idemsql.PurgeStats
	err = c.batched(db, "purge", "deleted", func(ctx context.Context) (err error) {
		st, err = idemsql.Purge(ctx, db.store, opt)
		return err
	})
	switch {
	case c.ctx.Err() != nil:
		fmt.Fprintf(c.stdout, "interrupted: deleted %s in %s; run purge again to go on\n", plural(st.Deleted, "row"), plural(int64(st.Batches), "batch"))
		return &exitError{code: exitInterrupted, err: errReported}
	case err != nil:
		fmt.Fprintf(c.stdout, "deleted %s in %s before the error\n", plural(st.Deleted, "row"), plural(int64(st.Batches), "batch"))
		return db.explain(err)
	}
	fmt.Fprintf(c.stdout, "deleted %s in %s from %s\n", plural(st.Deleted, "row"), plural(int64(st.Batches), "batch"), db.table)
	return nil
}

func runSweep(c *cli, def connFlags, args []string) error {
	var release *bool
	db, opt, dry, err := c.batchJob("sweep", sweepUsage, def, args, func(fs *flag.FlagSet) {
		release = fs.Bool("release", false, "")
	})
	if err != nil {
		return err
	}
	defer db.Close()
	how := "abandon (record as failed, class abandoned)"
	if *release {
		how = "release (the next call runs again)"
	}
	if dry {
		return sweepDryRun(c, db, how)
	}
	var h idemsql.SweepHandler
	if *release {
		h = func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
			return idemsql.Resolution{Outcome: idemsql.ResolveReleased}, nil
		}
	}
	var st idemsql.SweepStats
	err = c.batched(db, "sweep", "swept", func(ctx context.Context) (err error) {
		st, err = idemsql.Sweep(ctx, db.store, h, opt)
		return err
	})
	summary := fmt.Sprintf("%s: %s abandoned, %s released, %s lost to another holder, %s failed",
		plural(int64(st.Found), "stale claim"), count(int64(st.Abandoned)), count(int64(st.Released)), count(int64(st.Lost)), count(int64(st.Failed)))
	switch {
	case c.ctx.Err() != nil:
		fmt.Fprintf(c.stdout, "interrupted: swept %s; run sweep again to go on\n", summary)
		return &exitError{code: exitInterrupted, err: errReported}
	case err != nil:
		fmt.Fprintf(c.stdout, "swept %s before the error\n", summary)
		return db.explain(err)
	}
	fmt.Fprintf(c.stdout, "swept %s\n", summary)
	return nil
}

func batchOption(cmd string, n int) (idemsql.Options, error) {
	if n < 1 || n > 10000 {
		return idemsql.Options{}, &usageError{cmd: cmd, msg: fmt.Sprintf("--batch %d: want 1 to 10000", n)}
	}
	return idemsql.Options{BatchSize: n}, nil
}

// sweepDryRun lists the claims a sweep would resolve now: the rows
// ListFilter.Sweepable keeps, which Stats counts as sweepable.
func sweepDryRun(c *cli, db *conn, how string) error {
	f := idemsql.ListFilter{Sweepable: true, Limit: 1000}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	n := 0
	for {
		records, next, err := idemsql.List(c.ctx, db.store, f)
		if err != nil {
			return db.explain(err)
		}
		for _, r := range records {
			if n == 0 {
				fmt.Fprintln(tw, "KEY\tATTEMPT\tLEASE\tLEASE RAN OUT\tCLAIMED\tOWNER")
			}
			n++
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", showKey(r.Key), r.Attempt, r.Lease,
				fmtAge(r.LeaseUntil, r.ReadAt), fmtAge(r.CreatedAt, r.ReadAt), orDash(r.Owner))
		}
		if next == "" {
			break
		}
		f.After = next
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "dry run: would %s %s in %s\n", how, plural(int64(n), "stale claim"), db.table)
	return nil
}

// batched runs a purge or sweep pass, with a progress line on stderr, and
// stops it between batches after an interrupt: the pass's context, which
// only a second interrupt (c.hard) ends during a batch, ends when the store
// reports a batch done (EventPurged, EventSwept) after the first (c.ctx).
// A batch that has begun runs to its commit; a second interrupt aborts it.
func (c *cli) batched(db *conn, job, verb string, pass func(ctx context.Context) error) error {
	ctx, stop := context.WithCancel(c.hard)
	defer stop()
	p := &progress{c: c, job: job, verb: verb, stop: stop, start: time.Now(), tty: isTerminal(c.stderr)}
	p.last = p.start
	db.watch.set(p.batch)
	defer db.watch.set(nil)
	defer p.endLine()
	return pass(ctx)
}

// batchWatch hands the batch events of the store's purges and sweeps to the
// command that runs them.
type batchWatch struct {
	mu sync.Mutex
	on func(idemsql.Event)
}

func (w *batchWatch) set(on func(idemsql.Event)) {
	w.mu.Lock()
	w.on = on
	w.mu.Unlock()
}

func (w *batchWatch) Observe(_ context.Context, e idemsql.Event) {
	if e.Kind != idemsql.EventPurged && e.Kind != idemsql.EventSwept {
		return
	}
	w.mu.Lock()
	on := w.on
	w.mu.Unlock()
	if on != nil {
		on(e)
	}
}

// progress reports a long purge or sweep on stderr, and stops it after an
// interrupt, once the batch in flight has committed.
type progress struct {
	c           *cli
	job, verb   string
	stop        func() // ends the pass before its next batch
	start, last time.Time
	tty         bool
	printed     bool
	stopping    bool
	batches     int64
	rows        int64
}

// progressEvery is how often a long run reports on stderr.
const progressEvery = 2 * time.Second

// batch takes the event of a batch the pass committed.
func (p *progress) batch(e idemsql.Event) {
	p.batches++
	p.rows += e.Count
	if p.c.ctx.Err() != nil {
		if !p.stopping {
			p.stopping = true
			p.endLine()
			fmt.Fprintf(p.c.stderr, "%s: interrupted; stopping after the batch in flight (Ctrl-C again to abort it)\n", p.job)
		}
		p.stop()
		return
	}
	if time.Since(p.last) >= progressEvery {
		p.last = time.Now()
		line := fmt.Sprintf("%s: %s %s in %s (%.0f rows/s)", p.job, plural(p.rows, "row"), p.verb,
			plural(p.batches, "batch"), float64(p.rows)/time.Since(p.start).Seconds())
		if p.tty {
			fmt.Fprintf(p.c.stderr, "\r%s\033[K", line)
		} else {
			fmt.Fprintln(p.c.stderr, line)
		}
		p.printed = true
	}
}

func (p *progress) endLine() {
	if p.printed && p.tty {
		fmt.Fprintln(p.c.stderr)
	}
	p.printed = false
}

// isTerminal reports whether w is a terminal, where the progress line
// rewrites itself.
func isTerminal(w io.Writer) bool {
	if r, ok := w.(redacting); ok {
		w = r.w
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
