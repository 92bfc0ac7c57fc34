//go:build linux

package integration

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

// Tests that crash a database server, restart it, or change its global
// settings start a server of their own, in a temporary directory, on a port
// of their own (a free one unless an environment variable names it), and
// kill it when they end. Linux only: the processes of a server are found
// through /proc.
const (
	envPrivatePostgresPort = "IDEMSQL_PRIVATE_POSTGRES_PORT" // a private PostgreSQL's port; a free one if unset
	envPrivateMariaDBPort  = "IDEMSQL_PRIVATE_MARIADB_PORT"  // a private MariaDB's port; a free one if unset
)

// privateServer is a database server that a crash test started and may
// kill: every process of it at once, with SIGKILL.
type privateServer struct {
	t    *testing.T
	name string
	cred *syscall.Credential // the server's user when this process is root; nil: this process's user
	argv []string
	ping func(ctx context.Context) error
	log  string // the server's output, shown when it fails to start
	// recovered is what the server logs when it starts after a crash: a
	// kill that was no crash would not make it recover.
	recovered string

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// privateServerMissing skips a test that needs a server of its own that
// cannot be started here, and says so at the end of the run, or fails it
// under IDEMSQL_REQUIRE_DB=1, as CI runs.
func privateServerMissing(t *testing.T, msg string) {
	t.Helper()
	missingDB(t, "a private server", "cannot start a database server of the test's own: "+msg)
}

// serverUser is the credential to run a server as: name's when this process
// is root (neither server runs as root), none otherwise.
func serverUser(t *testing.T, name string) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		privateServerMissing(t, fmt.Sprintf("running as root, the server needs the user %q: %v", name, err))
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// serverDir makes a directory the server's user owns, removed at the end.
func serverDir(t *testing.T, cred *syscall.Credential, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// serverPort is the port named by env, or a free one.
func serverPort(t *testing.T, env string) int {
	t.Helper()
	if v := os.Getenv(env); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		return p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// findBinary returns the first of the paths that exists, then looks names
// up in PATH.
func findBinary(paths []string, names ...string) string {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// runAs runs a set-up command as cred, failing the test with its output.
func runAs(t *testing.T, cred *syscall.Credential, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

// newPrivatePostgres initialises a PostgreSQL cluster with the settings
// that make a commit durable before it is visible (fsync, synchronous_commit
// on: the defaults, set here so that no configuration file changes them).
// It returns the server, not yet started, and its DSN.
func newPrivatePostgres(t *testing.T) (*privateServer, string) {
	t.Helper()
	var bins []string
	if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
		sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
		bins = dirs
	}
	var initdb, postgresBin string
	for _, d := range bins {
		if initdb == "" {
			initdb = findBinary([]string{filepath.Join(d, "initdb")})
			postgresBin = findBinary([]string{filepath.Join(d, "postgres")})
		}
	}
	if initdb == "" {
		initdb, postgresBin = findBinary(nil, "initdb"), findBinary(nil, "postgres")
	}
	if initdb == "" || postgresBin == "" {
		privateServerMissing(t, "no PostgreSQL server binaries (initdb, postgres) in /usr/lib/postgresql/*/bin or PATH")
	}
	cred := serverUser(t, "postgres")
	dir := serverDir(t, cred, "idemsql-postgres-")
	data := filepath.Join(dir, "data")
	runAs(t, cred, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	port := serverPort(t, envPrivatePostgresPort)
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", port)
	s := &privateServer{t: t, name: "PostgreSQL", cred: cred, log: filepath.Join(dir, "server.log"),
		recovered: "automatic recovery in progress",
		argv: []string{postgresBin, "-D", data, "-p", strconv.Itoa(port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "synchronous_commit=on",
			"-c", "full_page_writes=on", "-c", "max_connections=200", "-c", "shared_buffers=64MB"},
		ping: func(ctx context.Context) error {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			var recovering bool
			if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&recovering); err != nil {
				return err
			}
			if recovering {
				return errors.New("in recovery")
			}
			return nil
		}}
	t.Cleanup(s.stop)
	return s, dsn
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// newPrivateMariaDB initialises a MariaDB data directory for a server with
// innodb_flush_log_at_trx_commit=1 and no binary log: every COMMIT that
// wrote waits for its redo log flush, and no two-phase commit with a binary
// log orders visibility after durability. It returns the server, not yet
// started, and its DSN.
func newPrivateMariaDB(t *testing.T) (*privateServer, string) {
	t.Helper()
	installDB := findBinary([]string{"/usr/bin/mariadb-install-db", "/usr/scripts/mariadb-install-db"}, "mariadb-install-db")
	mariadbd := findBinary([]string{"/usr/sbin/mariadbd", "/usr/libexec/mariadbd"}, "mariadbd")
	if installDB == "" || mariadbd == "" {
		privateServerMissing(t, "no MariaDB server binaries (mariadb-install-db, mariadbd) in /usr/bin, /usr/sbin or PATH")
	}
	cred := serverUser(t, "mysql")
	dir := serverDir(t, cred, "idemsql-mariadb-")
	data := filepath.Join(dir, "data")
	runAs(t, cred, installDB, "--no-defaults", "--datadir="+data, "--auth-root-authentication-method=normal",
		"--skip-test-db")
	port := serverPort(t, envPrivateMariaDBPort)
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "tcp"
	cfg.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.ParseTime = true
	cfg.Timeout = 5 * time.Second
	root := cfg.FormatDSN()
	cfg.DBName = "crash"
	dsn := cfg.FormatDSN()
	s := &privateServer{t: t, name: "MariaDB", cred: cred, log: filepath.Join(dir, "server.log"),
		recovered: "Starting crash recovery",
		argv: []string{mariadbd, "--no-defaults", "--datadir=" + data, "--port=" + strconv.Itoa(port),
			"--bind-address=127.0.0.1", "--socket=" + filepath.Join(dir, "mysqld.sock"),
			"--pid-file=" + filepath.Join(dir, "mysqld.pid"), "--skip-name-resolve",
			"--skip-log-bin", "--innodb-flush-log-at-trx-commit=1", "--innodb-buffer-pool-size=64M",
			"--max-connections=300"},
		ping: func(ctx context.Context) error {
			db, err := sql.Open("mysql", root)
			if err != nil {
				return err
			}
			defer db.Close()
			_, err = db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS crash")
			return err
		}}
	t.Cleanup(s.stop)
	return s, dsn
}

// start starts the server and waits until it answers.
func (s *privateServer) start() {
	s.t.Helper()
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: a test binary that dies takes its server with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", s.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.ping(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-done:
			s.t.Fatalf("%s exited while starting: %v\n%s", s.name, err, s.logTail())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s did not answer within 90s: %v\n%s", s.name, err, s.logTail())
		}
	}
}

// kill crashes the server: every process of it is stopped, then killed, so
// that none can act on the death of another (a PostgreSQL backend that sees
// its postmaster gone closes its connection cleanly, which is no crash; a
// postmaster that sees a backend die stops the others by signal). A
// PostgreSQL backend runs in a session of its own, so the processes are
// found by parentage, not by process group.
func (s *privateServer) kill() {
	s.t.Helper()
	root := s.cmd.Process.Pid
	// Stopped, the root forks nothing new while its children are listed.
	_ = syscall.Kill(root, syscall.SIGSTOP)
	procs := map[int]bool{root: true}
	for grew := true; grew; {
		grew = false
		for _, pid := range childrenOf(procs) {
			if !procs[pid] {
				_ = syscall.Kill(pid, syscall.SIGSTOP)
				procs[pid] = true
				grew = true
			}
		}
	}
	for pid := range procs {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("%s did not exit after SIGKILL", s.name)
	}
	// The others were reparented when the root died. Bounded: a number
	// that is alive again after that may be a new process's.
	gone := time.Now().Add(10 * time.Second)
	for pid := range procs {
		for alive(pid) && time.Now().Before(gone) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// stop kills the server if it runs, at the end of the test.
func (s *privateServer) stop() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.done:
	default:
		s.kill()
	}
}

// recoveries counts the server's starts after a crash.
func (s *privateServer) recoveries() int {
	b, _ := os.ReadFile(s.log)
	return bytes.Count(b, []byte(s.recovered))
}

func (s *privateServer) logTail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// logErrors gives the last 60 lines of the server's log that report an
// error, a failed assertion or a warning of the storage engine.
func (s *privateServer) logErrors() string {
	b, _ := os.ReadFile(s.log)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		low := strings.ToLower(l)
		if strings.Contains(l, "ERROR") || strings.Contains(l, "PANIC") || strings.Contains(l, "FATAL") ||
			strings.Contains(l, "[Warning] InnoDB") || strings.Contains(low, "assert") ||
			strings.Contains(low, "corrupt") || strings.Contains(low, "signal") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-60):], "\n")
}

// ownFailureOr tells whether err, of a read after the load, comes from
// the server failing by itself: an index it reports corrupt, or its log
// shows it stopped on a failed assertion or a signal of its own (the test
// sends only SIGSTOP and SIGKILL, which log nothing). It returns how; for
// any other error it ends the test.
func (s *privateServer) ownFailureOr(t *testing.T, err error) string {
	t.Helper()
	if strings.Contains(err.Error(), "is corrupt") {
		return err.Error()
	}
	b, _ := os.ReadFile(s.log)
	for _, l := range strings.Split(string(b), "\n") {
		low := strings.ToLower(l)
		if strings.Contains(low, "assertion") || strings.Contains(low, "got signal") {
			return fmt.Sprintf("%v; in its log: %s", err, strings.TrimSpace(l))
		}
	}
	t.Fatal(err)
	return ""
}

// childrenOf lists the processes whose parent is in parents.
func childrenOf(parents map[int]bool) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := procStat(pid); ok && parents[ppid] {
			kids = append(kids, pid)
		}
	}
	return kids
}

// alive reports whether pid runs: neither gone nor a zombie (whose memory,
// shared memory included, the kernel has already freed).
func alive(pid int) bool {
	_, state, ok := procStat(pid)
	return ok && state != 'Z' && state != 'X'
}

// procStat reads a process's parent and state from /proc/PID/stat.
func procStat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0][0], err == nil
}
