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
	"testing"
	"time"
)

// privateMariaDBDSN starts a MariaDB server of the test's own, for a test that
// changes the server's global state (which would fail the tests of others
// that share a server), and stops it when the test ends. It listens on the
// first free port of 3400-3409 and returns a DSN of a database on it. It
// needs mariadb-install-db and mariadbd (the MariaDB server package); run
// as root, the server runs as the user mysql.
func privateMariaDBDSN(t *testing.T) string {
	t.Helper()
	const env = "mariadb-install-db and mariadbd"
	install, err := exec.LookPath("mariadb-install-db")
	if err != nil {
		missingDB(t, env, "a private MariaDB server needs mariadb-install-db on PATH")
	}
	server, err := exec.LookPath("mariadbd")
	if err != nil {
		server = "/usr/sbin/mariadbd"
		if _, err := os.Stat(server); err != nil {
			missingDB(t, env, "a private MariaDB server needs mariadbd")
		}
	}
	dir, err := os.MkdirTemp("", "idemsql-mariadb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var asUser []string
	if os.Geteuid() == 0 {
		// mariadbd refuses to run as root.
		u, err := user.Lookup("mysql")
		if err != nil {
			t.Fatalf("a private MariaDB server run by root needs the user mysql: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		asUser = []string{"--user=mysql"}
	}
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(install, append([]string{"--no-defaults", "--datadir=" + data,
		"--auth-root-authentication-method=normal", "--skip-test-db"}, asUser...)...).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	port := 0
	for p := 3400; p <= 3409; p++ {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			port = p
			break
		}
	}
	if port == 0 {
		t.Fatal("no free port in 3400-3409 for a private MariaDB server")
	}
	cmd := exec.Command(server, append([]string{"--no-defaults", "--datadir=" + data, "--port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1", "--socket=" + filepath.Join(dir, "sock"), "--pid-file=" + filepath.Join(dir, "pid"),
		"--skip-log-bin", "--innodb-buffer-pool-size=32M", "--log-error=" + filepath.Join(dir, "error.log")}, asUser...)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mariadbd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	root := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port)
	db, err := sql.Open("mysql", root)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := db.PingContext(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("the private MariaDB server did not answer: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := db.Exec("CREATE DATABASE idemsql_private"); err != nil {
		t.Fatal(err)
	}
	return root + "idemsql_private?parseTime=true"
}
