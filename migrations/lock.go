package migrations

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"time"

	"github.com/pressly/goose/v3/lock"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// Up and Down hold a lock of the database's own for the table from before
// goose reads the version table until the last migration is recorded, so
// that a fleet starting at once applies each migration once: the others
// wait, then find nothing pending. Each locker waits as long as ctx allows,
// and its lock ends with the session that took it: a migrator that dies
// frees it at once, and one that lives keeps it however long a migration
// takes (no lease to run out under a slow ALTER).
//
// goose ships a PostgreSQL session locker, but it polls with
// pg_try_advisory_lock every 5 s (1 s at least), all waiters in step, so
// a fleet of n starts in about n seconds; pg_advisory_lock and GET_LOCK
// hand the lock over as soon as it is free.

// lockerFor returns the session locker for the table's dialect.
func lockerFor(db *sql.DB, table idemdriver.Table) (lock.SessionLocker, error) {
	switch table.Dialect {
	case "postgres":
		return pgLocker{key: pgLockKey(table)}, nil
	case "mysql":
		return mysqlLocker{table: table}, nil
	case "sqlite":
		return &sqliteLocker{db: db}, nil
	}
	return nil, fmt.Errorf("%w: no migrations for dialect %q", idemsql.ErrInvalidOption, table.Dialect)
}

// pgLocker takes a session advisory lock. Its key is the table's, not
// goose's default: an application's own goose migrations, which may call
// Up, never wait for themselves.
type pgLocker struct{ key int64 }

func pgLockKey(t idemdriver.Table) int64 {
	h := fnv.New64a()
	h.Write([]byte("idemsql migrations " + t.String()))
	return int64(h.Sum64())
}

func (l pgLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, l.key); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	return nil
}

func (l pgLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	var released bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock($1)`, l.key).Scan(&released); err != nil {
		return fmt.Errorf("release the migration lock: %w", err)
	}
	if !released {
		return errors.New("release the migration lock: the session did not hold it")
	}
	return nil
}

// mysqlLocker takes a named lock (GET_LOCK) of the server. Names are
// server-wide and at most 64 characters: the name hashes the database and
// the table. On Galera and MySQL Group Replication a named lock is local
// to one node: see the package doc.
type mysqlLocker struct{ table idemdriver.Table }

const mysqlLockName = `CONCAT('idemsql_migrate:', SHA1(CONCAT(COALESCE(NULLIF(?, ''), DATABASE(), ''), '.', ?)))`

// mysqlLockWait bounds one GET_LOCK. The locker asks again until ctx ends;
// a caller that gave up leaves a server thread waiting no longer than this.
const mysqlLockWait = 5 // seconds

func (l mysqlLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	for {
		var got sql.NullInt64
		err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(`+mysqlLockName+`, ?)`, l.table.Schema, l.table.Name, mysqlLockWait).Scan(&got)
		switch {
		case err != nil:
			return fmt.Errorf("take the migration lock: %w", err)
		case !got.Valid:
			return errors.New("take the migration lock: GET_LOCK failed")
		case got.Int64 == 1:
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("take the migration lock: %w", err)
		}
	}
}

func (l mysqlLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	var released sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT RELEASE_LOCK(`+mysqlLockName+`)`, l.table.Schema, l.table.Name).Scan(&released); err != nil {
		return fmt.Errorf("release the migration lock: %w", err)
	}
	if released.Int64 != 1 {
		return errors.New("release the migration lock: the session did not hold it")
	}
	return nil
}

// sqliteLocker holds a write transaction open on a file beside the
// database, <database>-idemsql-migrate, through a connection of its own.
// SQLite's only lock on the database itself is the write lock, which the
// migrations need; SQLite's own file locking keeps the side file's write
// transaction to one connection at a time, in this process or any other.
// The file stays after the migration: deleting it while another process
// waits on it would let a third lock a new file.
type sqliteLocker struct {
	db     *sql.DB
	lockDB *sql.DB
	conn   *sql.Conn
}

func (l *sqliteLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	var path string
	if err := conn.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&path); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	if path == "" {
		return nil // in memory: no other connection migrates this database
	}
	u := url.URL{Scheme: "file", Opaque: path + "-idemsql-migrate", RawQuery: "_pragma=busy_timeout(1000)"}
	l.lockDB = sql.OpenDB(driverConnector{l.db.Driver(), u.String()})
	l.lockDB.SetMaxOpenConns(1)
	err := l.lock(ctx)
	if err != nil {
		l.close()
		return fmt.Errorf("take the migration lock: %w", err)
	}
	return nil
}

func (l *sqliteLocker) lock(ctx context.Context) error {
	c, err := l.lockDB.Conn(ctx)
	if err != nil {
		return err
	}
	l.conn = c
	return whileBusy(ctx, func() error {
		_, err := c.ExecContext(ctx, `BEGIN IMMEDIATE`)
		return err
	})
}

func (l *sqliteLocker) SessionUnlock(ctx context.Context, _ *sql.Conn) error {
	if l.conn == nil {
		return nil
	}
	_, err := l.conn.ExecContext(ctx, `ROLLBACK`)
	// Closing ends the transaction anyway: the lock is released either way.
	return errors.Join(err, l.close())
}

func (l *sqliteLocker) close() error {
	var err error
	if l.conn != nil {
		err = l.conn.Close()
		l.conn = nil
	}
	if l.lockDB != nil {
		err = errors.Join(err, l.lockDB.Close())
		l.lockDB = nil
	}
	return err
}

// driverConnector opens connections of the database's own driver.
type driverConnector struct {
	d    driver.Driver
	name string
}

func (c driverConnector) Connect(context.Context) (driver.Conn, error) { return c.d.Open(c.name) }
func (c driverConnector) Driver() driver.Driver                        { return c.d }

// sqliteOpen opens a connection of db, asking again while SQLite answers
// busy. On a new database file, connections that set WAL mode
// (idemsqlite.DSN's journal_mode pragma) at the same moment can fail with
// SQLITE_BUSY at once, whatever busy_timeout says: a fleet started on a new
// file would see some of its migrators fail before any lock is taken. Once
// one connection has set it, WAL is the file's mode and later connections
// only read it.
func sqliteOpen(ctx context.Context, db *sql.DB) error {
	return whileBusy(ctx, func() error {
		c, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		return c.Close() // back to the pool, for goose to use
	})
}

// whileBusy runs f until it returns anything but SQLite's busy, or ctx
// ends.
func whileBusy(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil || ctx.Err() != nil || !sqliteBusy(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sqliteBusy reports SQLITE_BUSY or SQLITE_LOCKED (in the low byte of the
// extended code of modernc.org/sqlite's errors): another connection holds
// the lock.
func sqliteBusy(err error) bool {
	var coded interface{ Code() int }
	if !errors.As(err, &coded) {
		return false
	}
	code := coded.Code() & 0xff
	return code == 5 || code == 6
}
