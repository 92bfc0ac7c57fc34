// Command bench measures idemsql side by side with the bare business
// transaction and a hand-written claim-first guard, on PostgreSQL (pgx
// native and database/sql), MariaDB/MySQL and SQLite, in one run.
//
//	cd bench && go run .            # or: make bench
//	cd bench && go run . -growth    # or: make bench-growth
//
// Variants run interleaved: every cell is split into rounds, and each round
// runs every variant once, so drift on a shared machine hits all alike.
// Beside ops/s and latency, each row says where an op's time went (see
// costs.go): client CPU, database server CPU, writes to the socket (round
// trips) and bytes each way. The table, the targets and a markdown summary
// (pasted into docs/performance.md) go to stdout and to -out.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
)

type config struct {
	paths       []string
	clients     []int
	cell        time.Duration
	rounds      int
	out         string
	interpolate bool
	xp          bool
	only        string
	growth      bool
	growthRows  int
	growthBatch int
	growthPaths []string
	writers     int
	sqliteConns int
	purge       string
	delays      []time.Duration
	docs        bool
}

func main() {
	var cfg config
	var paths, clients, gpaths, delays string
	var quick bool
	var proxyTarget string
	var proxyDelay time.Duration
	flag.StringVar(&paths, "paths", strings.Join(allPaths, ","), "database paths to run: pgx, pgsql, mariadb, sqlite")
	flag.StringVar(&clients, "clients", "1,8", "concurrency levels (clients = pool connections)")
	flag.DurationVar(&cfg.cell, "cell", 4*time.Second, "measured time per cell (path × clients × variant), split into -rounds")
	flag.IntVar(&cfg.rounds, "rounds", 8, "interleaved rounds per cell")
	flag.StringVar(&cfg.out, "out", "", "file for the table (default ../bench-results.txt, or ../bench-growth-results.txt with -growth)")
	flag.BoolVar(&cfg.interpolate, "mysql-interpolate", true, "append interpolateParams=true to the MySQL DSN (for every variant alike)")
	flag.BoolVar(&cfg.xp, "xp", false, "also run the xp-* experiments (hand-written sketches of alternatives, to measure before adopting them)")
	flag.StringVar(&cfg.only, "variants", "", "comma-separated variant names to run (default all)")
	flag.BoolVar(&cfg.growth, "growth", false, "run the growth benchmark instead: latency with -rows existing rows, and a purge under load")
	flag.IntVar(&cfg.growthRows, "rows", 1_000_000, "growth: existing (expired) rows")
	flag.IntVar(&cfg.growthBatch, "purge-batch", 5000, "growth: rows per purge DELETE")
	flag.StringVar(&gpaths, "growth-paths", "pgx,mariadb,sqlite", "growth: database paths")
	flag.IntVar(&cfg.writers, "writers", 4, "growth: concurrent writers during the purge")
	flag.IntVar(&cfg.sqliteConns, "sqlite-conns", 1, "SQLite pool size (0: as many as clients); one connection queues writers in database/sql instead of in SQLite's sleeping busy handler")
	flag.StringVar(&cfg.purge, "purge", "lib", "growth: lib (idemsql.Purge) or hand (the bench's own batched DELETE)")
	flag.StringVar(&delays, "delays", "0,250us,1ms", "one-way network delays to run the network paths at, through a delaying TCP proxy (0: loopback, no proxy); SQLite runs at 0 only")
	flag.BoolVar(&quick, "quick", false, "shorter cells (-cell 1s -rounds 2), for a whole run in under 10 minutes")
	flag.BoolVar(&cfg.docs, "docs", false, "write the figures into ../docs/performance.md and ../README.md (between their bench markers)")
	flag.StringVar(&proxyTarget, "proxy", "", "internal: serve the delaying proxy to this address")
	flag.DurationVar(&proxyDelay, "proxy-delay", 0, "internal: the proxy's one-way delay")
	flag.Parse()
	if proxyTarget != "" {
		fatal(runProxy(proxyTarget, proxyDelay))
	}
	if quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["cell"] {
			cfg.cell = time.Second
		}
		if !set["rounds"] {
			cfg.rounds = 2
		}
	}
	for _, d := range splitList(delays) {
		v, err := time.ParseDuration(d)
		if d == "0" {
			v, err = 0, nil
		}
		if err != nil || v < 0 {
			fatal(fmt.Errorf("-delays: bad value %q", d))
		}
		cfg.delays = append(cfg.delays, v)
	}
	if len(cfg.delays) == 0 {
		cfg.delays = []time.Duration{0}
	}
	if cfg.purge != "lib" && cfg.purge != "hand" {
		fatal(fmt.Errorf("-purge: want lib or hand, got %q", cfg.purge))
	}
	cfg.paths = splitList(paths)
	cfg.growthPaths = splitList(gpaths)
	for _, c := range splitList(clients) {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 {
			fatal(fmt.Errorf("-clients: bad value %q", c))
		}
		cfg.clients = append(cfg.clients, n)
	}
	if cfg.rounds < 1 {
		cfg.rounds = 1
	}
	if cfg.out == "" {
		cfg.out = "../bench-results.txt"
		if cfg.growth {
			cfg.out = "../bench-growth-results.txt"
		}
	}
	ctx := context.Background()
	var err error
	if cfg.growth {
		err = runGrowth(ctx, cfg)
	} else {
		err = runSideBySide(ctx, cfg)
	}
	if err != nil {
		fatal(err)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// sample is what one variant measured in one cell, over all its rounds.
type sample struct {
	ops              int64
	elapsed          time.Duration
	lat              []time.Duration
	retries, replays int64
	cost             costs // where the time went, summed over the rounds (costs.go)
}

// opCost is what one op cost on average.
type opCost struct {
	client, server                    time.Duration
	writes, sent, recv, allocs, bytes float64
}

func (s *sample) perOp() opCost {
	if s.ops == 0 {
		return opCost{}
	}
	n := float64(s.ops)
	return opCost{client: s.cost.client / time.Duration(s.ops), server: s.cost.server / time.Duration(s.ops),
		writes: float64(s.cost.writes) / n, sent: float64(s.cost.sent) / n, recv: float64(s.cost.recv) / n,
		allocs: float64(s.cost.allocs) / n, bytes: float64(s.cost.bytes) / n}
}

func (s *sample) opsPerSec() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ops) / s.elapsed.Seconds()
}

func (s *sample) pct(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	slices.Sort(s.lat)
	i := int(p * float64(len(s.lat)-1))
	return s.lat[i]
}

// drive runs o with clients goroutines for d and adds what it measured to s.
func drive(ctx context.Context, o op, seq *atomic.Uint64, clients int, d time.Duration, s *sample) error {
	stop := make(chan struct{})
	t := time.AfterFunc(d, func() { close(stop) })
	defer t.Stop()
	return driveUntil(ctx, o, seq, clients, stop, s)
}

// driveUntil runs o with clients goroutines until stop is closed.
func driveUntil(ctx context.Context, o op, seq *atomic.Uint64, clients int, stop <-chan struct{}, s *sample) error {
	stats.retries.Store(0)
	stats.replays.Store(0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	lats := make([][]time.Duration, clients)
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			l := make([]time.Duration, 0, 1024)
			for {
				select {
				case <-stop:
					lats[c] = l
					return
				default:
				}
				t0 := time.Now()
				if err := o(ctx, seq.Add(1)-1); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					break
				}
				l = append(l, time.Since(t0))
			}
			lats[c] = l
		}(c)
	}
	wg.Wait()
	s.elapsed += time.Since(start)
	for _, l := range lats {
		s.ops += int64(len(l))
		s.lat = append(s.lat, l...)
	}
	s.retries += stats.retries.Load()
	s.replays += stats.replays.Load()
	return firstErr
}

type result struct {
	path    string
	clients int
	delay   time.Duration // one way
	name    string
	peer    string
	s       *sample
}

func runSideBySide(ctx context.Context, cfg config) error {
	started := time.Now()
	runID := strconv.FormatInt(started.UnixNano()%1e9, 36)
	var results []result
	versions := map[string]string{}
	maxClients := slices.Max(cfg.clients)
	defer setDelay(0)
	for di, delay := range cfg.delays {
		setDelay(delay)
		for _, path := range cfg.paths {
			if delay > 0 && path == "sqlite" {
				continue // no network
			}
			b, err := open(ctx, path, openOptions{maxConns: cfg.conns(path, maxClients), interpolate: cfg.interpolate, batch: cfg.growthBatch})
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			versions[path] = b.version
			res, err := benchPath(ctx, cfg, b, runID+"d"+strconv.Itoa(di), delay)
			results = append(results, res...)
			if derr := b.dropTables(ctx); derr != nil && err == nil {
				err = derr
			}
			b.close()
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	var sb strings.Builder
	writeHeader(&sb, cfg, versions, started)
	writeTable(&sb, results)
	writeTargets(&sb, results)
	md := markdown(cfg, versions, started, results)
	sb.WriteString("\nmarkdown (docs/performance.md, between its bench markers):\n\n" + md)
	fmt.Print(sb.String())
	if cfg.docs {
		if err := writeDocs(md, readmeTable(results)); err != nil {
			return err
		}
	}
	return os.WriteFile(cfg.out, []byte(sb.String()), 0o644)
}

// conns is the pool size of a path.
func (cfg config) conns(path string, clients int) int {
	if path == "sqlite" && cfg.sqliteConns > 0 {
		return cfg.sqliteConns
	}
	return clients
}

func (cfg config) selected(v variant, path string) bool {
	if v.paths != nil && !slices.Contains(v.paths, path) {
		return false
	}
	if !cfg.xp && strings.HasPrefix(v.name, "xp-") {
		return false
	}
	if cfg.only != "" {
		return slices.Contains(splitList(cfg.only), v.name)
	}
	return true
}

func benchPath(ctx context.Context, cfg config, b *backend, runID string, delay time.Duration) ([]result, error) {
	var vs []variant
	for _, v := range variants {
		if cfg.selected(v, b.path) {
			vs = append(vs, v)
		}
	}
	var out []result
	for _, clients := range cfg.clients {
		rid := runID + "c" + strconv.Itoa(clients)
		ops := make([]op, len(vs))
		seqs := make([]atomic.Uint64, len(vs))
		samples := make([]*sample, len(vs))
		for i, v := range vs {
			o, err := v.make(ctx, b, rid)
			if err != nil {
				return out, fmt.Errorf("%s setup: %w", v.name, err)
			}
			ops[i], samples[i] = o, &sample{}
			// Warm up: connections, statement caches, pages.
			if err := drive(ctx, o, &seqs[i], clients, 150*time.Millisecond, &sample{}); err != nil {
				return out, fmt.Errorf("%s warm-up: %w", v.name, err)
			}
		}
		fmt.Fprintf(os.Stderr, "%-8s %2d clients, %v one way: %d variants × %d rounds × %v\n", pathTitle[b.path], clients, delay, len(vs), cfg.rounds, cfg.cell/time.Duration(cfg.rounds))
		comm := serverComm(b.dialect)
		for r := 0; r < cfg.rounds; r++ {
			for i, v := range vs {
				before := snapshot(comm)
				if err := drive(ctx, ops[i], &seqs[i], clients, cfg.cell/time.Duration(cfg.rounds), samples[i]); err != nil {
					return out, fmt.Errorf("%s: %w", v.name, err)
				}
				samples[i].cost = samples[i].cost.add(snapshot(comm).sub(before))
			}
		}
		for i, v := range vs {
			out = append(out, result{path: b.path, clients: clients, delay: delay, name: v.name, peer: v.peer, s: samples[i]})
		}
	}
	return out, nil
}

func writeHeader(w io.Writer, cfg config, versions map[string]string, started time.Time) {
	fmt.Fprintf(w, "idemsql side-by-side benchmark, %s\n", started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "machine: %s, %d CPUs, %s %s/%s; databases on 127.0.0.1, at one-way delays %v through a delaying TCP proxy (0: loopback, no proxy)\n",
		cpuModel(), runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, cfg.delays)
	for _, p := range cfg.paths {
		if v, ok := versions[p]; ok {
			fmt.Fprintf(w, "  %-8s %s\n", pathTitle[p], v)
		}
	}
	sqlitePool := "pool size = clients"
	if cfg.sqliteConns > 0 {
		sqlitePool = fmt.Sprintf("pool of %d connection(s) shared by the clients", cfg.sqliteConns)
	}
	fmt.Fprintf(w, "each cell: %v in %d interleaved rounds; pool size = clients, except sqlite: %s\n", cfg.cell, cfg.rounds, sqlitePool)
	fmt.Fprintf(w, "mysql DSN with interpolateParams=%v (every variant alike); sqlite via idemsqlite.DSN: WAL, synchronous FULL, _txlock=immediate\n", cfg.interpolate)
	fmt.Fprintf(w, "×bare: ops/s over bare's; ×hand: ops/s over the hand-written guard doing the same kind of call (first, replay, storm)\n")
	fmt.Fprintf(w, "per op: cli µs = this process's CPU, db µs = the database server's CPU, wr = socket writes (round trips), B out/in = bytes sent/received, allocs and KB allocated by this process\n")
	fmt.Fprintf(w, "variants:\n")
	for _, v := range variants {
		if slices.ContainsFunc(cfg.paths, func(p string) bool { return cfg.selected(v, p) }) {
			fmt.Fprintf(w, "  %-17s %s\n", v.name, v.desc)
		}
	}
	fmt.Fprintln(w)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64)
}

// cell is one path at one concurrency and one delay.
type cell struct {
	path    string
	clients int
	delay   time.Duration
}

func (r result) cell() cell { return cell{r.path, r.clients, r.delay} }

func cells(results []result) []cell {
	var out []cell
	for _, r := range results {
		if !slices.Contains(out, r.cell()) {
			out = append(out, r.cell())
		}
	}
	return out
}

func find(results []result, c cell, name string) *sample {
	for _, r := range results {
		if r.cell() == c && r.name == name {
			return r.s
		}
	}
	return nil
}

func ratio(a, b *sample) string {
	if a == nil || b == nil || b.opsPerSec() == 0 {
		return "-"
	}
	return strconv.FormatFloat(a.opsPerSec()/b.opsPerSec(), 'f', 2, 64)
}

// delayName is a one-way delay as the tables show it.
func delayName(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64) + " ms"
}

func writeTable(w io.Writer, results []result) {
	fmt.Fprintf(w, "%-8s %7s %3s  %-16s %9s %8s %8s %6s %6s %7s %7s %5s %6s %6s %7s %6s  %s\n", "path", "delay", "cl", "variant", "ops/s", "p50 ms", "p99 ms", "×bare", "×hand",
		"cli µs", "db µs", "wr", "B out", "B in", "allocs", "KB", "notes")
	var prev cell
	for i, r := range results {
		if i > 0 && r.cell() != prev {
			fmt.Fprintln(w)
		}
		prev = r.cell()
		bare := find(results, r.cell(), "bare")
		peer := find(results, r.cell(), r.peer)
		var notes []string
		if r.s.retries > 0 {
			notes = append(notes, fmt.Sprintf("%d retries", r.s.retries))
		}
		if strings.HasSuffix(r.name, "-storm") && r.s.ops > 0 {
			notes = append(notes, fmt.Sprintf("%.0f%% replayed", 100*float64(r.s.replays)/float64(r.s.ops)))
		}
		o := r.s.perOp()
		fmt.Fprintf(w, "%-8s %7s %3d  %-16s %9.0f %8s %8s %6s %6s %7.0f %7.0f %5.1f %6.0f %6.0f %7.0f %6.1f  %s\n", pathTitle[r.path], delayName(r.delay), r.clients, r.name,
			r.s.opsPerSec(), ms(r.s.pct(0.50)), ms(r.s.pct(0.99)), ratio(r.s, bare), ratio(r.s, peer),
			float64(o.client)/1e3, float64(o.server)/1e3, o.writes, o.sent, o.recv, o.allocs, o.bytes/1024, strings.Join(notes, ", "))
	}
	fmt.Fprintln(w)
}

// goal is one of the targets the figures are checked against.
type goal struct {
	what      string
	name, vs  string
	min       float64
	delay     time.Duration // -1: every delay
	clients   int           // 0: every concurrency
	paths     []string      // nil: every path
	atNetwork bool          // network paths only
}

var goals = []goal{
	{what: "`Run` first ≥ 1.4× hand-written guard (pgx, 1 ms, 8 clients)", name: "run-first", vs: "hand-first", min: 1.4, delay: time.Millisecond, clients: 8, paths: []string{"pgx"}},
	{what: "`Do` first ≥ 1.0× hand-written guard (network databases, 1 ms, 8 clients)", name: "idem-first", vs: "hand-first", min: 1.0, delay: time.Millisecond, clients: 8, atNetwork: true},
	{what: "`Do` replay ≥ 1.25× hand-written replay (network databases, 1 ms, 8 clients)", name: "idem-replay", vs: "hand-replay", min: 1.25, delay: time.Millisecond, clients: 8, atNetwork: true},
	{what: "`Do` first ≥ 0.95× hand-written guard (loopback, every database)", name: "idem-first", vs: "hand-first", min: 0.95, delay: 0},
}

// check lists, for each cell g applies to, the ratio and whether it met g.
func (g goal) check(results []result) []string {
	var out []string
	for _, c := range cells(results) {
		if (g.delay >= 0 && c.delay != g.delay) || (g.clients != 0 && c.clients != g.clients) ||
			(g.paths != nil && !slices.Contains(g.paths, c.path)) || (g.atNetwork && c.path == "sqlite") {
			continue
		}
		a, b := find(results, c, g.name), find(results, c, g.vs)
		if a == nil || b == nil || b.opsPerSec() == 0 {
			continue
		}
		x := a.opsPerSec() / b.opsPerSec()
		out = append(out, fmt.Sprintf("%s %d cl %.2f %s", pathTitle[c.path], c.clients, x, verdict(x >= g.min)))
	}
	return out
}

func writeTargets(w io.Writer, results []result) {
	fmt.Fprintln(w, "targets:")
	for _, g := range goals {
		if got := g.check(results); len(got) > 0 {
			fmt.Fprintf(w, "  %s: %s\n", g.what, strings.Join(got, "; "))
		}
	}
}

func verdict(ok bool) string {
	if ok {
		return "(met)"
	}
	return "(MISSED)"
}

// markdown is the generated part of docs/performance.md: the ratios of one
// run per path, delay and concurrency, what each call cost, and the goals.
func markdown(cfg config, versions map[string]string, started time.Time, results []result) string {
	var w strings.Builder
	fmt.Fprintf(&w, "Run of %s: %s, %d CPUs shared with other work (figures are noisy: a ratio moves by ±6%% or more from run to run);", started.UTC().Format("2006-01-02"), cpuModel(), runtime.NumCPU())
	var vs []string
	for _, p := range cfg.paths {
		if v, ok := versions[p]; ok {
			vs = append(vs, pathTitle[p]+" "+v)
		}
	}
	fmt.Fprintf(&w, " %s; %v per cell in %d interleaved rounds.\n\n", strings.Join(vs, ", "), cfg.cell, cfg.rounds)
	fmt.Fprintln(&w, "The round trip is as measured: a third of the `bare` call's p50 latency at 1 client (three round trips, the server's work included).")
	fmt.Fprintln(&w)
	fmt.Fprintln(&w, "| path | one-way delay | round trip ms | clients | bare ops/s | hand-written ×bare | `Do` first ×hand | `Do` replay ×hand replay | `Run` first ×hand | `Run` replay ×hand replay | `struct{}` first ×hand | HTTP middleware ×plain handler |")
	fmt.Fprintln(&w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range cells(results) {
		get := func(name string) *sample { return find(results, c, name) }
		bareOps := "-"
		if bare := get("bare"); bare != nil {
			bareOps = strconv.FormatFloat(bare.opsPerSec(), 'f', 0, 64)
		}
		rtt := "-"
		if one := find(results, cell{c.path, 1, c.delay}, "bare"); one != nil && c.path != "sqlite" {
			rtt = ms(one.pct(0.5) / 3)
		}
		fmt.Fprintf(&w, "| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", pathTitle[c.path], delayName(c.delay), rtt, c.clients, bareOps,
			ratio(get("hand-first"), get("bare")), ratio(get("idem-first"), get("hand-first")), ratio(get("idem-replay"), get("hand-replay")),
			ratio(get("run-first"), get("hand-first")), ratio(get("run-replay"), get("hand-replay")),
			ratio(get("idem-first-void"), get("hand-first")), ratio(get("http-idem"), get("http-plain")))
	}
	fmt.Fprintln(&w)
	fmt.Fprintln(&w, "Per call, at the highest concurrency of the run: latency (p50 / p99, ms), round trips (socket writes), and this process's allocations and bytes allocated.")
	fmt.Fprintln(&w)
	fmt.Fprintln(&w, "| path | one-way delay | variant | ops/s | p50 ms | p99 ms | round trips | allocs | bytes |")
	fmt.Fprintln(&w, "|---|---|---|---|---|---|---|---|---|")
	maxClients := slices.Max(cfg.clients)
	for _, r := range results {
		if r.clients != maxClients || strings.HasPrefix(r.name, "xp-") {
			continue
		}
		o := r.s.perOp()
		fmt.Fprintf(&w, "| %s | %s | %s | %.0f | %s | %s | %.1f | %.0f | %.0f |\n", pathTitle[r.path], delayName(r.delay), r.name,
			r.s.opsPerSec(), ms(r.s.pct(0.50)), ms(r.s.pct(0.99)), o.writes, o.allocs, o.bytes)
	}
	fmt.Fprintln(&w)
	fmt.Fprintln(&w, "Goals, met or missed in this run:")
	fmt.Fprintln(&w)
	for _, g := range goals {
		if got := g.check(results); len(got) > 0 {
			fmt.Fprintf(&w, "* %s: %s\n", g.what, strings.Join(got, "; "))
		}
	}
	return w.String()
}

// readmeTable is the README's table: per path, the ratios at each delay,
// at the highest concurrency.
func readmeTable(results []result) string {
	var w strings.Builder
	fmt.Fprintln(&w, "| path | one-way delay | `Do` first ×hand-written | `Do` replay ×hand-written replay | `Run` first ×hand-written |")
	fmt.Fprintln(&w, "|---|---|---|---|---|")
	cs := cells(results)
	maxClients := 0
	for _, c := range cs {
		maxClients = max(maxClients, c.clients)
	}
	for _, c := range cs {
		if c.clients != maxClients {
			continue
		}
		get := func(name string) *sample { return find(results, c, name) }
		fmt.Fprintf(&w, "| %s | %s | %s | %s | %s |\n", pathTitle[c.path], delayName(c.delay),
			ratio(get("idem-first"), get("hand-first")), ratio(get("idem-replay"), get("hand-replay")), ratio(get("run-first"), get("hand-first")))
	}
	return w.String()
}

// writeDocs replaces what stands between the bench markers of
// docs/performance.md and of the README.
func writeDocs(perf, readme string) error {
	for _, f := range []struct{ path, text string }{{"../docs/performance.md", perf}, {"../README.md", readme}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return err
		}
		const begin, end = "<!-- bench:begin -->\n", "<!-- bench:end -->"
		s := string(b)
		i, j := strings.Index(s, begin), strings.Index(s, end)
		if i < 0 || j < i {
			return fmt.Errorf("%s: no %q ... %q markers", f.path, strings.TrimSpace(begin), end)
		}
		s = s[:i+len(begin)] + f.text + s[j:]
		if err := os.WriteFile(f.path, []byte(s), 0o644); err != nil {
			return err
		}
	}
	return nil
}
