package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// The growth benchmark: does a large table slow the guard down, and what
// does deleting expired rows cost the writers? The purge is idemsql.Purge
// (-purge lib, the default) or the bench's own batched DELETE of rows past
// expires_at (-purge hand), written before the library had one:
//
//	PostgreSQL: DELETE ... WHERE ctid = ANY(ARRAY(SELECT ctid ... WHERE expires_at < clock_timestamp() LIMIT n))
//	MariaDB:    DELETE ... WHERE expires_at < UTC_TIMESTAMP(6) LIMIT n
//	SQLite:     DELETE ... WHERE idem_key IN (SELECT idem_key ... WHERE expires_at < now LIMIT n)
//
// each batch in its own autocommit transaction.

type growthRow struct {
	path, phase string
	s           *sample
}

func runGrowth(ctx context.Context, cfg config) error {
	started := time.Now()
	runID := strconv.FormatInt(started.UnixNano()%1e9, 36)
	var rows []growthRow
	var notes []string
	versions := map[string]string{}
	for _, path := range cfg.growthPaths {
		b, err := open(ctx, path, openOptions{maxConns: cfg.conns(path, cfg.writers+2), interpolate: cfg.interpolate, suffix: "_grow", batch: cfg.growthBatch})
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		versions[path] = b.version
		r, n, err := growPath(ctx, cfg, b, runID)
		rows = append(rows, r...)
		notes = append(notes, n...)
		if derr := b.dropTables(ctx); derr != nil && err == nil {
			err = derr
		}
		b.close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "idemsql growth benchmark, %s\n", started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&sb, "machine: %s, %d CPUs; databases on 127.0.0.1\n", cpuModel(), runtime.NumCPU())
	for _, p := range cfg.growthPaths {
		fmt.Fprintf(&sb, "  %-8s %s\n", pathTitle[p], versions[p])
	}
	fmt.Fprintf(&sb, "%d existing expired rows; latency cells %v at 1 client in %d interleaved rounds; %d writers (idemsql.Do, new keys) during the purge;\n",
		cfg.growthRows, cfg.cell, cfg.rounds, cfg.writers)
	if cfg.purge == "lib" {
		fmt.Fprintf(&sb, "purge: idemsql.Purge with Options{BatchSize: %d}\n\n", cfg.growthBatch)
	} else {
		fmt.Fprintf(&sb, "purge: the bench's own batched DELETE of expired rows, %d per batch\n\n", cfg.growthBatch)
	}
	writeGrowth(&sb, rows)
	for _, n := range notes {
		fmt.Fprintln(&sb, n)
	}
	fmt.Print(sb.String())
	return os.WriteFile(cfg.out, []byte(sb.String()), 0o644)
}

func growPath(ctx context.Context, cfg config, b *backend, runID string) ([]growthRow, []string, error) {
	var rows []growthRow
	var notes []string
	title := pathTitle[b.path]
	latency := func(label string) error {
		rid := runID + label
		first, err := firstOp("gf", idemG)(ctx, b, rid)
		if err != nil {
			return err
		}
		replay, err := replayOp("gr", idemG)(ctx, b, rid)
		if err != nil {
			return err
		}
		var seqF, seqR atomic.Uint64
		sf, sr := &sample{}, &sample{}
		_ = drive(ctx, first, &seqF, 1, 100*time.Millisecond, &sample{})
		_ = drive(ctx, replay, &seqR, 1, 100*time.Millisecond, &sample{})
		for r := 0; r < cfg.rounds; r++ {
			if err := drive(ctx, first, &seqF, 1, cfg.cell/time.Duration(cfg.rounds), sf); err != nil {
				return err
			}
			if err := drive(ctx, replay, &seqR, 1, cfg.cell/time.Duration(cfg.rounds), sr); err != nil {
				return err
			}
		}
		rows = append(rows, growthRow{title, "idem-first, " + label, sf}, growthRow{title, "idem-replay, " + label, sr})
		return nil
	}
	fmt.Fprintf(os.Stderr, "%-8s growth: fresh table\n", title)
	if err := latency("fresh table"); err != nil {
		return rows, notes, err
	}
	fmt.Fprintf(os.Stderr, "%-8s growth: filling %d rows\n", title, cfg.growthRows)
	t0 := time.Now()
	if err := fill(ctx, b, cfg.growthRows); err != nil {
		return rows, notes, fmt.Errorf("fill: %w", err)
	}
	notes = append(notes, fmt.Sprintf("%-8s fill: %d rows in %.1f s", title, cfg.growthRows, time.Since(t0).Seconds()))
	if err := latency(humanRows(cfg.growthRows) + " rows"); err != nil {
		return rows, notes, err
	}

	fmt.Fprintf(os.Stderr, "%-8s growth: writers without and with purge\n", title)
	writers, err := firstOp("gw", idemG)(ctx, b, runID)
	if err != nil {
		return rows, notes, err
	}
	var seq atomic.Uint64
	base := &sample{}
	if err := drive(ctx, writers, &seq, cfg.writers, 3*time.Second, base); err != nil {
		return rows, notes, err
	}
	rows = append(rows, growthRow{title, fmt.Sprintf("%d writers, no purge", cfg.writers), base})

	during := &sample{}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- driveUntil(ctx, writers, &seq, cfg.writers, stop, during) }()
	t0 = time.Now()
	var deleted int64
	var batches int
	var perr error
	if cfg.purge == "lib" {
		var st idemsql.PurgeStats
		if b.pool != nil {
			st, perr = idemsql.Purge(ctx, b.pgxStore, idemsql.Options{BatchSize: cfg.growthBatch})
		} else {
			st, perr = idemsql.Purge(ctx, b.store, idemsql.Options{BatchSize: cfg.growthBatch})
		}
		deleted, batches = st.Deleted, st.Batches
	} else {
		for {
			res, err := b.db.ExecContext(ctx, b.q.purge)
			if err != nil {
				if b.retryable(err) {
					continue
				}
				perr = err
				break
			}
			n, _ := res.RowsAffected()
			deleted += n
			batches++
			if n == 0 {
				break
			}
		}
	}
	took := time.Since(t0)
	close(stop)
	if err := <-done; err != nil {
		return rows, notes, err
	}
	if perr != nil {
		return rows, notes, fmt.Errorf("purge: %w", perr)
	}
	rows = append(rows, growthRow{title, fmt.Sprintf("%d writers, during purge", cfg.writers), during})
	notes = append(notes, fmt.Sprintf("%-8s purge: %d rows in %.1f s = %.0f rows/s (%d batches) while %d writers ran",
		title, deleted, took.Seconds(), float64(deleted)/took.Seconds(), batches, cfg.writers))
	return rows, notes, nil
}

func humanRows(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// fill inserts n completed rows that expired a day ago, with random keys,
// in chunks, in the database itself.
func fill(ctx context.Context, b *backend, n int) error {
	t := b.store.Table().Name
	const chunk = 100_000
	for lo := 1; lo <= n; lo += chunk {
		hi := min(lo+chunk-1, n)
		var q string
		switch b.dialect {
		case "postgres":
			q = fmt.Sprintf(`INSERT INTO %s (idem_key, status, result, attempt, owner, created_at, updated_at, completed_at, expires_at)
SELECT md5(g::text || 'old'), 'completed', '{"ref":"old","amount":1}', 1, 'bench',
  now() - interval '2 days', now() - interval '2 days', now() - interval '2 days', now() - interval '1 day'
FROM generate_series(%d, %d) g`, t, lo, hi)
		case "mysql":
			q = fmt.Sprintf("INSERT INTO `%s` (idem_key, status, result, attempt, owner, created_at, updated_at, completed_at, expires_at)\n"+
				"SELECT MD5(CONCAT(seq, 'old')), 'completed', '{\"ref\":\"old\",\"amount\":1}', 1, 'bench',\n"+
				"  UTC_TIMESTAMP(6) - INTERVAL 2 DAY, UTC_TIMESTAMP(6) - INTERVAL 2 DAY, UTC_TIMESTAMP(6) - INTERVAL 2 DAY, UTC_TIMESTAMP(6) - INTERVAL 1 DAY\n"+
				"FROM seq_%d_to_%d", t, lo, hi)
		default:
			q = fmt.Sprintf(`WITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x + 1 FROM c WHERE x < %d)
INSERT INTO %s (idem_key, status, result, attempt, owner, created_at, updated_at, completed_at, expires_at)
SELECT lower(hex(randomblob(16))), 'completed', '{"ref":"old","amount":1}', 1, 'bench',
  (unixepoch() - 172800) * 1000, (unixepoch() - 172800) * 1000, (unixepoch() - 172800) * 1000, (unixepoch() - 86400) * 1000
FROM c`, lo, hi, t)
		}
		if _, err := b.db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	var q string
	switch b.dialect {
	case "postgres":
		q = `VACUUM ANALYZE ` + t
	case "mysql":
		q = "ANALYZE TABLE `" + t + "`"
	default:
		q = `ANALYZE`
	}
	if _, err := b.db.ExecContext(ctx, q); err != nil {
		return err
	}
	var expired int64
	if err := b.db.QueryRowContext(ctx, b.q.countExpired).Scan(&expired); err != nil {
		return err
	}
	if expired < int64(n) {
		return fmt.Errorf("expected %d expired rows, found %d", n, expired)
	}
	return nil
}

func writeGrowth(w io.Writer, rows []growthRow) {
	fmt.Fprintf(w, "%-8s  %-28s %9s %8s %8s\n", "path", "phase", "ops/s", "p50 ms", "p99 ms")
	prev := ""
	for _, r := range rows {
		if prev != "" && r.path != prev {
			fmt.Fprintln(w)
		}
		prev = r.path
		fmt.Fprintf(w, "%-8s  %-28s %9.0f %8s %8s\n", r.path, r.phase, r.s.opsPerSec(), ms(r.s.pct(0.50)), ms(r.s.pct(0.99)))
	}
	fmt.Fprintln(w)
}
