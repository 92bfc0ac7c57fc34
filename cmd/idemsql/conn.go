package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	sqlitedriver "modernc.org/sqlite"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemmysql"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
)

// dsnEnv names the environment variable the DSN is read from when --dsn is
// not given, so that it stays out of shell history and process listings.
const dsnEnv = "IDEMSQL_DSN"

var dialects = []string{"postgres", "mysql", "sqlite"}

var (
	// mysqlNet matches the network part of a go-sql-driver DSN:
	// user:pass@tcp(host:port)/db, tcp(host)/db, user@unix(/path)/db.
	mysqlNet = regexp.MustCompile(`(^|@)(tcp|tcp4|tcp6|unix)\(`)
	// libpqKV matches a libpq key=value connection string.
	libpqKV = regexp.MustCompile(`^\s*(host|hostaddr|port|dbname|user|password|sslmode|service|connect_timeout|application_name)\s*=`)
	// userinfo finds the password of user:password@... at the start of a
	// string that is not a URL (go-sql-driver's form, or a form not known).
	userinfo = regexp.MustCompile(`^([^\s:/@()]*):(\S*)@`)
)

// detectDialect tells which database a DSN names, from its form. It never
// returns an error that quotes a DSN it could not place: that DSN may hold
// a password in a place nobody can tell.
func detectDialect(dsn string) (string, error) {
	lower := strings.ToLower(dsn)
	switch {
	case strings.TrimSpace(dsn) == "":
		return "", usagef("no database: pass --dsn or set %s", dsnEnv)
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		return "postgres", nil
	case strings.HasPrefix(lower, "mysql://"):
		return "", usagef("a MySQL DSN has go-sql-driver's form, not a URL: user:password@tcp(host:3306)/dbname")
	case strings.HasPrefix(lower, "file:"):
		return "sqlite", nil
	case strings.HasPrefix(lower, "sqlite:"), strings.HasPrefix(lower, "sqlite3:"):
		return "", usagef("a SQLite database is a file path (./app.db) or a file: URI (file:app.db?...)")
	case mysqlNet.MatchString(dsn):
		return "mysql", nil
	case strings.Contains(dsn, "@"):
		if _, err := mysql.ParseDSN(dsn); err == nil {
			return "mysql", nil
		}
		return "", usagef("cannot tell which database the DSN names: pass --dialect (%s)", strings.Join(dialects, ", "))
	case libpqKV.MatchString(dsn):
		return "postgres", nil
	case strings.Contains(dsn, "://"):
		return "", usagef("cannot tell which database the DSN names: pass --dialect (%s)", strings.Join(dialects, ", "))
	}
	return "sqlite", nil
}

// target is a database the command works on.
type target struct {
	dialect string
	driver  string // database/sql driver name, "" when connector is set
	dsn     string // what the driver gets
	conn    *mysql.Config
	path    string // SQLite: the file
	shown   string // the DSN as messages show it
}

// resolveTarget checks the DSN for the dialect (detected when dialect is
// empty) and prepares what the driver gets.
func resolveTarget(dsn, dialect string, red *redactor) (target, error) {
	red.add(dsn)
	if dialect == "" {
		d, err := detectDialect(dsn)
		if err != nil {
			return target{}, err
		}
		dialect = d
	}
	t := target{dialect: dialect}
	switch dialect {
	case "postgres":
		if strings.TrimSpace(dsn) == "" {
			return t, usagef("no database: pass --dsn or set %s", dsnEnv)
		}
		if _, err := pgconn.ParseConfig(dsn); err != nil {
			return t, usagef("bad PostgreSQL DSN: %v", err)
		}
		t.driver, t.dsn = "pgx", dsn
	case "mysql":
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return t, usagef("bad MySQL DSN (want user:password@tcp(host:3306)/dbname): %v", err)
		}
		red.addSecret(cfg.Passwd)
		// The read API needs no parseTime; goose's version table does.
		cfg.ParseTime = true
		t.conn = cfg
	case "sqlite":
		path, err := sqlitePath(dsn)
		if err != nil {
			return t, err
		}
		t.driver, t.path = "sqlite", path
		t.dsn = dsn
		if !strings.HasPrefix(strings.ToLower(dsn), "file:") {
			t.dsn = idemsqlite.DSN(dsn)
		}
	default:
		return t, usagef("unknown dialect %q (want %s)", dialect, strings.Join(dialects, ", "))
	}
	t.shown = red.redactDSN(dsn)
	return t, nil
}

// sqlitePath is the file a SQLite DSN names.
func sqlitePath(dsn string) (string, error) {
	p := dsn
	if strings.HasPrefix(strings.ToLower(p), "file:") {
		p = p[len("file:"):]
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		if strings.HasPrefix(p, "//") { // file:///abs/path, file://localhost/abs/path
			u, err := url.Parse("file:" + p)
			if err != nil {
				return "", usagef("bad SQLite URI: %v", err)
			}
			p = u.Path
		} else if unescaped, err := url.PathUnescape(p); err == nil {
			p = unescaped
		}
	}
	switch {
	case p == "":
		return "", usagef("no SQLite database file in the DSN")
	case p == ":memory:" || strings.Contains(dsn, "mode=memory"):
		return "", usagef("an in-memory SQLite database is empty in every process: name a file")
	}
	return p, nil
}

// conn is an open database and a store for its table.
type conn struct {
	target
	db    *sql.DB
	store *idemsql.Store[*sql.Tx]
	watch *batchWatch // the store's observer, for purge and sweep
	table string      // as messages show it: schema.name or name
}

// open connects to the database. A SQLite file must exist unless create.
func open(ctx context.Context, cf connFlags, red *redactor, create bool) (*conn, error) {
	t, err := resolveTarget(cf.dsn, cf.dialect, red)
	if err != nil {
		return nil, err
	}
	watch := &batchWatch{}
	opts := idemsql.Options{Table: cf.table, Schema: cf.schema, Observers: []idemsql.Observer{watch}}
	// Opening a pool connects to nothing yet.
	var db *sql.DB
	if t.conn != nil {
		c, err := mysql.NewConnector(t.conn)
		if err != nil {
			return nil, usagef("bad MySQL DSN: %v", err)
		}
		db = sql.OpenDB(c)
	} else if db, err = sql.Open(t.driver, t.dsn); err != nil {
		return nil, fmt.Errorf("open %s: %w", t.shown, err)
	}
	var d idemdriver.Driver[*sql.Tx]
	switch t.dialect {
	case "postgres":
		d = idempostgres.NewSQL(db)
	case "mysql":
		d = idemmysql.New(db)
	case "sqlite":
		d = idemsqlite.New(db)
	}
	store, err := idemsql.New(d, opts)
	if err != nil {
		db.Close()
		return nil, usagef("%v", err)
	}
	if t.dialect == "sqlite" && !create {
		if _, err := os.Stat(t.path); err != nil {
			db.Close()
			return nil, fmt.Errorf("no SQLite database at %s (`idemsql migrate up` creates it): %w", t.path, err)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s: %w", t.shown, err)
	}
	c := &conn{target: t, db: db, store: store, watch: watch}
	c.table = store.Table().String()
	return c, nil
}

func (c *conn) Close() error { return c.db.Close() }

// explain turns an error of the table's statements into one that says what
// to do, where the table (or its schema) is missing.
func (c *conn) explain(err error) error {
	if err == nil {
		return nil
	}
	what := missing(c.dialect, err)
	if what == "table" && c.store.Table().Schema != "" && !c.schemaExists() {
		// PostgreSQL and MySQL report a table in a missing schema as a
		// missing table.
		what = "schema"
	}
	switch what {
	case "table":
		return fmt.Errorf("table %s does not exist in %s: run `idemsql migrate up` (with the same --table and --schema)", c.table, c.shown)
	case "schema":
		return c.errNoSchema("run `idemsql migrate up`")
	}
	return err
}

// errNoSchema says that the store's schema does not exist, how to create
// it, and then what.
func (c *conn) errNoSchema(then string) error {
	create := "CREATE SCHEMA "
	if c.dialect == "mysql" {
		create = "CREATE DATABASE "
	}
	return fmt.Errorf("schema %s does not exist in %s: create it (%s%s), then %s", c.store.Table().Schema, c.shown, create, c.store.Table().Schema, then)
}

// tableExists looks the store's table up in the catalog, where its
// statements would find it.
func (c *conn) tableExists(ctx context.Context) (bool, error) {
	var q string
	var args []any
	switch c.dialect {
	case "postgres":
		q, args = `SELECT to_regclass($1) IS NOT NULL`, []any{c.table}
	case "mysql":
		q = `SELECT COUNT(*) > 0 FROM information_schema.tables WHERE table_schema = COALESCE(NULLIF(?, ''), DATABASE()) AND table_name = ?`
		args = []any{c.store.Table().Schema, c.store.Table().Name}
	default:
		q, args = `SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?`, []any{c.store.Table().Name}
	}
	var ok bool
	err := c.db.QueryRowContext(ctx, q, args...).Scan(&ok)
	return ok, err
}

// schemaExists looks the store's schema up in the catalog; true when it
// cannot tell.
func (c *conn) schemaExists() bool {
	q := `SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1`
	if c.dialect == "mysql" {
		q = `SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int64
	if err := c.db.QueryRowContext(ctx, q, c.store.Table().Schema).Scan(&n); err != nil {
		return true
	}
	return n > 0
}

// missing reads a driver error: "table" when the table does not exist,
// "schema" when its schema does not, else "".
func missing(dialect string, err error) string {
	switch dialect {
	case "postgres":
		var e *pgconn.PgError
		if errors.As(err, &e) {
			switch e.Code {
			case "42P01": // undefined_table
				return "table"
			case "3F000": // invalid_schema_name
				return "schema"
			}
		}
	case "mysql":
		var e *mysql.MySQLError
		if errors.As(err, &e) {
			switch e.Number {
			case 1146: // ER_NO_SUCH_TABLE
				return "table"
			case 1049: // ER_BAD_DB_ERROR
				return "schema"
			}
		}
	case "sqlite":
		// SQLite reports a missing table as a generic SQLITE_ERROR (1): the
		// message is all there is to tell it by.
		var e *sqlitedriver.Error
		if errors.As(err, &e) && e.Code()&0xff == 1 && strings.Contains(e.Error(), "no such table") {
			return "table"
		}
	}
	return ""
}

// redactor keeps passwords out of every message: the DSN as given, shown
// with its password masked, and the password itself wherever a driver
// echoes it.
type redactor struct {
	dsns    []string
	secrets []string
}

const mask = "xxxxx"

// add registers a DSN and the secrets that can be read from its form.
func (r *redactor) add(dsn string) {
	if dsn == "" {
		return
	}
	r.dsns = append(r.dsns, dsn)
	if scheme, rest, ok := strings.Cut(dsn, "://"); ok && !strings.ContainsAny(scheme, "@/ ") {
		u, err := url.Parse(dsn)
		if err == nil {
			if p, ok := u.User.Password(); ok {
				r.addSecret(p)
			}
			for k, vs := range u.Query() {
				if strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword") {
					for _, v := range vs {
						r.addSecret(v)
					}
				}
			}
		} else if at := strings.LastIndex(rest, "@"); at >= 0 {
			// Not a valid URL: mask all that can be the password, up to
			// the last '@'.
			if _, p, ok := strings.Cut(rest[:at], ":"); ok {
				r.addSecret(p)
			}
		}
	} else if m := userinfo.FindStringSubmatch(dsn); m != nil {
		r.addSecret(m[2])
	}
	for _, kv := range strings.Fields(dsn) {
		if k, v, ok := strings.Cut(kv, "="); ok && (k == "password" || k == "sslpassword") {
			r.addSecret(strings.Trim(v, "'"))
		}
	}
}

// addSecret registers a password, raw and in the escaped forms a DSN
// carries it in.
func (r *redactor) addSecret(s string) {
	if s == "" || s == mask {
		return
	}
	for _, v := range []string{s, url.QueryEscape(s), url.PathEscape(s), url.UserPassword("u", s).String()[2:]} {
		if v != "" && !contains(r.secrets, v) {
			r.secrets = append(r.secrets, v)
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// redactDSN is the DSN as messages show it.
func (r *redactor) redactDSN(dsn string) string {
	out := dsn
	for _, s := range r.secrets {
		out = strings.ReplaceAll(out, s, mask)
	}
	return out
}

// String masks every registered DSN and password in s. A password shorter
// than four bytes is masked only inside a DSN: masking every "ab" in a
// message would garble it, and no driver echoes a password but inside the
// DSN.
func (r *redactor) String(s string) string {
	for _, d := range r.dsns {
		s = strings.ReplaceAll(s, d, r.redactDSN(d))
	}
	for _, sec := range r.secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, mask)
		}
	}
	return s
}
