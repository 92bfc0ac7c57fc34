package integration

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/dialects/mysql"
	"github.com/idemsql/idemsql/dialects/postgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/migrations"
)

// Private servers of this file, on ports no shared server uses.
const (
	restartPostgresPort = 5441
	restartMariaDBPort  = 3441
)

// outage is how long the server stays down: longer than the whole retry
// budget of the former default (10 attempts: waits of at most 3.3 s).
const outage = 4 * time.Second

// The database server goes down (every process of it killed at once) and
// comes back after a few seconds, while a Run is under way: BEGIN fails on
// the pool's dead connections, then with "connection refused". Run's
// default retries ride the restart out: the call succeeds, once.
func TestRunRidesOutServerRestart(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		srv := startPrivatePostgres(t, restartPostgresPort)
		dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", restartPostgresPort)
		pool, err := pgxpool.New(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		store, err := postgres.New()
		if err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		prepareRestart(t, db, store.Store, pgBizDDL)
		run := func(ctx context.Context, key string) error {
			_, err := idemsql.Run(ctx, store.Pool(pool, pgx.TxOptions{}), key, func(ctx context.Context, tx pgx.Tx) (int, error) {
				_, err := tx.Exec(ctx, "INSERT INTO biz (idem_key, amount) VALUES ($1, 1)", key)
				return 1, err
			})
			return err
		}
		rideOut(t, db, srv, run)
	})
	t.Run("mariadb", func(t *testing.T) {
		srv := startPrivateMariaDB(t, restartMariaDBPort)
		db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/restart?parseTime=true", restartMariaDBPort))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		store, err := mysql.New()
		if err != nil {
			t.Fatal(err)
		}
		prepareRestart(t, db, store, mysqlBizDDL)
		run := func(ctx context.Context, key string) error {
			_, err := idemsql.Run(ctx, store.DB(db, nil), key, func(ctx context.Context, tx *sql.Tx) (int, error) {
				_, err := tx.ExecContext(ctx, "INSERT INTO biz (idem_key, amount) VALUES (?, 1)", key)
				return 1, err
			})
			return err
		}
		rideOut(t, db, srv, run)
	})
}

func prepareRestart(t *testing.T, db *sql.DB, store *idemsql.Store, bizDDL string) {
	t.Helper()
	if err := migrations.Up(context.Background(), db, store); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf(bizDDL, "biz")); err != nil {
		t.Fatal(err)
	}
}

// privateServer is a database server of the test's own.
type privateServer interface {
	crash(t *testing.T)
	start(t *testing.T)
}

func rideOut(t *testing.T, db *sql.DB, srv privateServer, run func(ctx context.Context, key string) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, "before"); err != nil { // the pool holds live connections
		t.Fatalf("before the restart: %v", err)
	}
	srv.crash(t)
	done := make(chan error, 1)
	go func() { done <- run(ctx, "during") }()
	time.Sleep(outage)
	srv.start(t)
	if err := <-done; err != nil {
		t.Fatalf("Run across a restart of the server: %v", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM biz WHERE idem_key = 'during'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("business rows: %d, %v; want 1", n, err)
	}
}

// serverDir makes a directory for a server's files that the account the
// server runs as (name, when the test runs as root) may use.
func serverDir(t *testing.T, name string) (dir string, cred *syscall.Credential) {
	t.Helper()
	dir, err := os.MkdirTemp("", "idemsql-restart-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Getuid() != 0 {
		return dir, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Skipf("running as root, and no %s account to run the server as: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func command(cred *syscall.Credential, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return cmd
}

func mustRun(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
}

func lookPath(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("no %s on PATH: the test starts a server of its own", n)
		}
	}
}

// waitListening waits until something accepts connections on port.
func waitListening(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on port %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type privatePostgres struct {
	data, dir string
	port      int
	cred      *syscall.Credential
}

func startPrivatePostgres(t *testing.T, port int) *privatePostgres {
	lookPath(t, "initdb", "pg_ctl")
	dir, cred := serverDir(t, "postgres")
	p := &privatePostgres{data: filepath.Join(dir, "data"), dir: dir, port: port, cred: cred}
	mustRun(t, command(cred, "initdb", "-D", p.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"))
	p.start(t)
	t.Cleanup(func() { _ = command(cred, "pg_ctl", "-D", p.data, "-m", "immediate", "stop").Run() })
	return p
}

func (p *privatePostgres) start(t *testing.T) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", p.port, p.dir)
	mustRun(t, command(p.cred, "pg_ctl", "-D", p.data, "-l", filepath.Join(p.dir, "log"), "-o", opts, "-w", "start"))
}

// crash stops the server as a crash would: the postmaster and every
// backend end at once, with no shutdown checkpoint (recovery runs at the
// next start).
func (p *privatePostgres) crash(t *testing.T) {
	t.Helper()
	mustRun(t, command(p.cred, "pg_ctl", "-D", p.data, "-m", "immediate", "-w", "stop"))
}

type privateMariaDB struct {
	data, dir string
	port      int
	cred      *syscall.Credential
	cmd       *exec.Cmd
	user      string
}

func startPrivateMariaDB(t *testing.T, port int) *privateMariaDB {
	lookPath(t, "mariadb-install-db", "mariadbd")
	dir, cred := serverDir(t, "mysql")
	m := &privateMariaDB{data: filepath.Join(dir, "data"), dir: dir, port: port, cred: cred}
	if cred != nil {
		m.user = "--user=mysql"
	} else {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		m.user = "--user=" + u.Username
	}
	mustRun(t, exec.Command("mariadb-install-db", "--no-defaults", m.user, "--datadir="+m.data,
		"--auth-root-authentication-method=normal", "--skip-test-db"))
	m.start(t)
	t.Cleanup(func() {
		if m.cmd != nil {
			_ = m.cmd.Process.Kill()
			_ = m.cmd.Wait()
		}
	})
	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE restart"); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *privateMariaDB) start(t *testing.T) {
	t.Helper()
	// mariadbd starts as root and takes the account of --user itself.
	m.cmd = exec.Command("mariadbd", "--no-defaults", m.user, "--datadir="+m.data,
		"--port="+strconv.Itoa(m.port), "--bind-address=127.0.0.1", "--socket="+filepath.Join(m.dir, "sock"),
		"--pid-file="+filepath.Join(m.dir, "pid"), "--skip-grant-tables", "--skip-log-bin",
		"--innodb-buffer-pool-size=32M", "--log-error="+filepath.Join(m.dir, "err.log"))
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitListening(t, m.port)
}

// crash kills the server (one process) with SIGKILL.
func (m *privateMariaDB) crash(t *testing.T) {
	t.Helper()
	if err := m.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = m.cmd.Wait()
	m.cmd = nil
}
