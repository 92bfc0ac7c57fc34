package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
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

Resolves in-progress lease-mode claims whose lease ran out without an
outcome (their holder died or hung), through idemsql.Sweep, in batches,
each its own short transaction, skipping rows other sweepers or callers
hold. A claim released by its holder is left to callers until its
retention has run out.

By default each stale claim is recorded as failed, with class "abandoned":
calls with the key then get that failure until the key's retention runs
out. With --release each is released instead: the next call with the key
runs again, with the same downstream key. Which is right depends on the
effect: release when running it again is safe (the downstream system
deduplicates by the downstream key), abandon when a person must look.

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

// errStopped ends a batch job at the next batch after an interrupt.
var errStopped = errors.New("stopped by an interrupt")

func runPurge(c *cli, def connFlags, args []string) error {
	var cf connFlags
	fs := c.flags("purge", &cf, def)
	batch := fs.Int("batch", idemsql.DefaultBatchSize, "")
	dry := fs.Bool("dry-run", false, "")
	args, err := c.parse(fs, &cf, purgeUsage, args)
	if err != nil {
		return err
	}
	if err := wantArgs(fs, args); err != nil {
		return err
	}
	opt, err := batchOption("purge", *batch)
	if err != nil {
		return err
	}
	db, err := c.connect(cf, false)
	if err != nil {
		return err
	}
	defer db.Close()
	if *dry {
		st, err := idemsql.Stats(c.ctx, db.store.DB(db.db, nil))
		if err != nil {
			return db.explain(err)
		}
		fmt.Fprintf(c.stdout, "dry run: would delete %s (completed or failed, past their retention) of %s in %s\n",
			plural(st.Purgeable, "row"), count(st.Total), db.table)
		return nil
	}
	p := newStopPool(c, db.db, "purge", "")
	defer p.done()
	st, err := idemsql.Purge(c.hard, idemsql.BindPool[*sql.Tx](db.store, p), opt)
	p.done()
	switch {
	case errors.Is(err, errStopped) || err != nil && c.ctx.Err() != nil:
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
	var cf connFlags
	fs := c.flags("sweep", &cf, def)
	batch := fs.Int("batch", idemsql.DefaultBatchSize, "")
	dry := fs.Bool("dry-run", false, "")
	release := fs.Bool("release", false, "")
	args, err := c.parse(fs, &cf, sweepUsage, args)
	if err != nil {
		return err
	}
	if err := wantArgs(fs, args); err != nil {
		return err
	}
	opt, err := batchOption("sweep", *batch)
	if err != nil {
		return err
	}
	db, err := c.connect(cf, false)
	if err != nil {
		return err
	}
	defer db.Close()
	how := "abandon (record as failed, class abandoned)"
	if *release {
		how = "release (the next call runs again)"
	}
	if *dry {
		return sweepDryRun(c, db, how)
	}
	var h idemsql.SweepHandler
	if *release {
		h = func(context.Context, idemsql.Stale) (idemsql.Resolution, error) {
			return idemsql.ResolveReleased(), nil
		}
	}
	ld, ok := db.store.Dialect().(idemsql.LeaseDialect)
	if !ok {
		return fmt.Errorf("dialect %s has no lease mode", db.dialect)
	}
	sweepNext := ld.LeaseStatements(idemsql.Table{Schema: db.store.Schema(), Name: db.store.Table()}).SweepNext
	p := newStopPool(c, db.db, "sweep", sweepNext)
	defer p.done()
	st, err := idemsql.Sweep(c.hard, idemsql.BindPool[*sql.Tx](db.store, p), h, opt)
	p.done()
	summary := fmt.Sprintf("%s: %s abandoned, %s released, %s lost to another holder, %s failed",
		plural(int64(st.Found), "stale claim"), count(int64(st.Abandoned)), count(int64(st.Released)), count(int64(st.Lost)), count(int64(st.Failed)))
	switch {
	case errors.Is(err, errStopped) || err != nil && c.ctx.Err() != nil:
		fmt.Fprintf(c.stdout, "interrupted: swept %s; run sweep again to go on\n", summary)
		return &exitError{code: exitInterrupted, err: errReported}
	case err != nil:
		fmt.Fprintf(c.stdout, "swept %s before the error\n", summary)
		return db.explain(err)
	}
	fmt.Fprintf(c.stdout, "swept %s\n", summary)
	return nil
}

func batchOption(cmd string, n int) (idemsql.Option, error) {
	if n < 1 || n > 10000 {
		return idemsql.Option{}, &usageError{cmd: cmd, msg: fmt.Sprintf("--batch %d: want 1 to 10000", n)}
	}
	return idemsql.WithBatchSize(n), nil
}

// sweepDryRun lists the claims a sweep would resolve now.
func sweepDryRun(c *cli, db *conn, how string) error {
	pool := db.store.DB(db.db, nil)
	f := idemsql.ListFilter{Sweepable: true, Limit: 1000}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	n := 0
	for {
		page, err := idemsql.List(c.ctx, pool, f)
		if err != nil {
			return db.explain(err)
		}
		for _, r := range page.Records {
			if n == 0 {
				fmt.Fprintln(tw, "KEY\tATTEMPT\tLEASE\tLEASE RAN OUT\tCLAIMED\tOWNER")
			}
			n++
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", showKey(r.Key), r.Attempt, r.Lease,
				fmtAge(r.LeaseUntil, r.ReadAt), fmtAge(r.CreatedAt, r.ReadAt), orDash(r.Owner))
		}
		if page.Next == "" {
			break
		}
		f.After = page.Next
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "dry run: would %s %s in %s\n", how, plural(int64(n), "stale claim"), db.table)
	return nil
}

// stopPool is the pool Purge and Sweep run on here. It lets them stop
// between batches after an interrupt: a batch that has begun runs to its
// commit, the next one fails at its first statement with errStopped. And
// it counts what the committed batches changed, for the progress line.
//
// A purge batch is every transaction of a purge. A sweep batch is a
// transaction that begins with the dialect's SweepNext (the handler's
// writes between batches are transactions too, and must go through).
type stopPool struct {
	c         *cli
	db        *sql.DB
	job       string
	sweepNext string // "" for purge

	rows, batches atomic.Int64
	start         time.Time
	stopProgress  chan struct{}
	once          sync.Once
	wg            sync.WaitGroup
}

// progressEvery is how often a long run reports on stderr.
const progressEvery = 2 * time.Second

func newStopPool(c *cli, db *sql.DB, job, sweepNext string) *stopPool {
	p := &stopPool{c: c, db: db, job: job, sweepNext: sweepNext, start: time.Now(), stopProgress: make(chan struct{})}
	tty := isTerminal(c.stderr)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		printed := false
		stopping := false
		for {
			select {
			case <-p.stopProgress:
				if printed && tty {
					fmt.Fprintln(c.stderr)
				}
				return
			case <-c.ctx.Done():
				if !stopping {
					stopping = true
					if printed && tty {
						fmt.Fprintln(c.stderr)
					}
					fmt.Fprintf(c.stderr, "%s: interrupted; stopping after the batch in flight (Ctrl-C again to abort it)\n", job)
					printed = false
				}
				continue
			case <-t.C:
			}
			line := p.progress()
			if tty {
				fmt.Fprintf(c.stderr, "\r%s\033[K", line)
			} else {
				fmt.Fprintln(c.stderr, line)
			}
			printed = true
		}
	}()
	return p
}

func (p *stopPool) progress() string {
	secs := time.Since(p.start).Seconds()
	verb := "deleted"
	if p.job == "sweep" {
		verb = "swept"
	}
	return fmt.Sprintf("%s: %s %s in %s (%.0f rows/s)", p.job, plural(p.rows.Load(), "row"), verb, plural(p.batches.Load(), "batch"), float64(p.rows.Load())/secs)
}

// done stops the progress line.
func (p *stopPool) done() {
	p.once.Do(func() { close(p.stopProgress); p.wg.Wait() })
}

func (p *stopPool) Begin(ctx context.Context) (idemsql.PoolTx[*sql.Tx], error) {
	if p.sweepNext == "" && p.c.ctx.Err() != nil {
		return nil, errStopped
	}
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &stopTx{p: p, tx: tx, batch: p.sweepNext == ""}, nil
}

type stopTx struct {
	p       *stopPool
	tx      *sql.Tx
	started bool
	batch   bool
	rows    int64
}

func (t *stopTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	t.started = true
	res, err := t.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	t.rows += n
	return n, err
}

func (t *stopTx) QueryRow(ctx context.Context, query string, args ...any) idemsql.Row {
	if !t.started && t.p.sweepNext != "" && query == t.p.sweepNext {
		t.batch = true
		if t.p.c.ctx.Err() != nil {
			t.started = true
			return errRow{errStopped}
		}
	}
	t.started = true
	return t.tx.QueryRowContext(ctx, query, args...)
}

func (t *stopTx) Tx() *sql.Tx { return t.tx }

func (t *stopTx) Commit(context.Context) error {
	if err := t.tx.Commit(); err != nil {
		return err
	}
	if t.batch {
		t.p.rows.Add(t.rows)
		t.p.batches.Add(1)
	}
	return nil
}

func (t *stopTx) Rollback(context.Context) error { return t.tx.Rollback() }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

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
