package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/mariadb"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
)

// Environment variables that choose the databases the integration tests use.
const (
	envPostgresDSN = "IDEMSQL_POSTGRES_DSN" // pgx URL, e.g. postgres://postgres@127.0.0.1:5432/idemsql_test?sslmode=disable
	envMySQLDSN    = "IDEMSQL_MYSQL_DSN"    // go-sql-driver DSN, e.g. root@tcp(127.0.0.1:3306)/idemsql_test?parseTime=true
	envGaleraDSNs  = "IDEMSQL_GALERA_DSNS"  // go-sql-driver DSNs of the three nodes of a MariaDB Galera cluster, comma-separated
	envRequireDB   = "IDEMSQL_REQUIRE_DB"   // "1": a missing database fails the run instead of skipping it
)

const (
	testDatabase     = "idemsql_test"
	dockerProbeLimit = 5 * time.Second
	containerLimit   = 3 * time.Minute
)

// sharedDB is one database per test binary: resolved once, reused by every
// test, and, if it had to be started, terminated by TestMain.
type sharedDB struct {
	once sync.Once
	dsn  string
	err  error
	stop func() error
}

var (
	sharedPostgres, sharedMySQL sharedDB

	dockerOnce sync.Once
	dockerErr  error // nil when a Docker daemon answered
)

func TestMain(m *testing.M) {
	// Tests kill connections on purpose; the driver would log each one.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
	code := m.Run()
	reportSkips()
	for _, db := range []*sharedDB{&sharedPostgres, &sharedMySQL} {
		if db.stop == nil {
			continue
		}
		if err := db.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "terminate test container: %v\n", err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}

// postgresDSN returns a pgx URL for the PostgreSQL database shared by the
// whole run; tests isolate themselves inside it.
func postgresDSN(t testing.TB) string {
	t.Helper()
	return resolveDSN(t, &sharedPostgres, "PostgreSQL", envPostgresDSN,
		"postgres://postgres@127.0.0.1:5432/idemsql_test?sslmode=disable", startPostgres)
}

// mysqlDSN returns a go-sql-driver DSN for the MySQL or MariaDB database
// shared by the whole run. It always has parseTime=true, so DATETIME columns
// scan into time.Time.
func mysqlDSN(t testing.TB) string {
	t.Helper()
	dsn := resolveDSN(t, &sharedMySQL, "MySQL/MariaDB", envMySQLDSN,
		"root@tcp(127.0.0.1:3306)/idemsql_test?parseTime=true", startMariaDB)
	return withParseTime(t, envMySQLDSN, dsn)
}

// withParseTime returns the go-sql-driver DSN with parseTime=true; env names
// where it came from, for the error.
func withParseTime(t testing.TB, env, dsn string) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	cfg.ParseTime = true
	return cfg.FormatDSN()
}

// resolveDSN takes the DSN from env, else from a container shared by the
// whole run, else skips the test, or fails it when IDEMSQL_REQUIRE_DB=1.
func resolveDSN(t testing.TB, db *sharedDB, name, env, example string, start func(context.Context) (string, func() error, error)) string {
	t.Helper()
	if dsn := os.Getenv(env); dsn != "" {
		return dsn
	}
	if err := dockerAvailable(); err != nil {
		missingDB(t, env, fmt.Sprintf("no %s: set %s (e.g. %s=%q), "+
			"or start Docker so a container is used (%v)", name, env, env, example, err))
	}
	db.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), containerLimit)
		defer cancel()
		db.dsn, db.stop, db.err = start(ctx)
	})
	if db.err != nil {
		t.Fatalf("start %s container: %v", name, db.err)
	}
	return db.dsn
}

// missingDB skips the test, or fails it when IDEMSQL_REQUIRE_DB=1, because
// env names no database.
func missingDB(t testing.TB, env, msg string) {
	t.Helper()
	if os.Getenv(envRequireDB) == "1" {
		t.Fatalf("%s is required (%s=1) but missing; %s", env, envRequireDB, msg)
	}
	skips.Lock()
	if skips.byEnv == nil {
		skips.byEnv = map[string]*skipped{}
	}
	s := skips.byEnv[env]
	if s == nil {
		s = &skipped{msg: msg}
		skips.byEnv[env] = s
	}
	s.tests++
	skips.Unlock()
	t.Skip(msg)
}

type skipped struct {
	msg   string
	tests int
}

// skips are the databases the run had to do without.
var skips struct {
	sync.Mutex
	byEnv map[string]*skipped
}

// reportSkips says, once, at the end of the run, which databases were
// skipped and how to run them: with go test's default output a skipped test
// is silent, and an "ok" would hide that most of the suite never ran.
func reportSkips() {
	skips.Lock()
	defer skips.Unlock()
	if len(skips.byEnv) == 0 {
		fmt.Println("integration: every database ran")
		return
	}
	envs := make([]string, 0, len(skips.byEnv))
	for env := range skips.byEnv {
		envs = append(envs, env)
	}
	sort.Strings(envs)
	fmt.Println("integration: SKIPPED, the suite did not run on every database:")
	for _, env := range envs {
		fmt.Printf("  %d tests skipped: %s\n", skips.byEnv[env].tests, skips.byEnv[env].msg)
	}
	fmt.Println("integration: `make test-local` creates the databases on 127.0.0.1 and sets the DSNs; `bash .ci/run` runs everything as CI does")
}

// dockerAvailable reports, once per run, whether a Docker daemon answers.
// testcontainers can panic while looking for a daemon, so the probe
// recovers, and it is bounded so a dead socket cannot stall the tests.
func dockerAvailable() error {
	dockerOnce.Do(func() {
		if _, err := os.Stat("/var/run/docker.sock"); err != nil && os.Getenv("DOCKER_HOST") == "" {
			dockerErr = errors.New("no Docker engine: /var/run/docker.sock is missing and DOCKER_HOST is unset")
			return
		}
		defer func() {
			if r := recover(); r != nil {
				dockerErr = fmt.Errorf("%v", r)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), dockerProbeLimit)
		defer cancel()
		cli, err := testcontainers.NewDockerClientWithOpts(ctx)
		if err != nil {
			dockerErr = err
			return
		}
		defer cli.Close()
		_, dockerErr = cli.Ping(ctx, client.PingOptions{})
	})
	return dockerErr
}

func startPostgres(ctx context.Context) (string, func() error, error) {
	ctr, err := postgres.Run(ctx, "postgres:15-alpine",
		postgres.WithDatabase(testDatabase),
		postgres.WithUsername("postgres"),
		postgres.WithPassword("postgres"),
		postgres.BasicWaitStrategies(),
	)
	stop := func() error { return testcontainers.TerminateContainer(ctr) }
	if err != nil {
		return "", stop, err
	}
	dsn, err := ctr.ConnectionString(ctx, "sslmode=disable")
	return dsn, stop, err
}

func startMariaDB(ctx context.Context) (string, func() error, error) {
	ctr, err := mariadb.Run(ctx, "mariadb:10.11",
		mariadb.WithDatabase(testDatabase),
		mariadb.WithUsername("root"),
		mariadb.WithPassword(""),
	)
	stop := func() error { return testcontainers.TerminateContainer(ctr) }
	if err != nil {
		return "", stop, err
	}
	dsn, err := ctr.ConnectionString(ctx, "parseTime=true")
	return dsn, stop, err
}

func TestDatabasesReachable(t *testing.T) {
	for _, tc := range []struct {
		name, driver string
		dsn          func(testing.TB) string
	}{
		{"postgres", "pgx", postgresDSN},
		{"mysql", "mysql", mysqlDSN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := sql.Open(tc.driver, tc.dsn(t))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer db.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := db.PingContext(ctx); err != nil {
				t.Fatalf("ping: %v", err)
			}
		})
	}
}
