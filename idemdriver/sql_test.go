package idemdriver

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// preparingDialect prepares statements that any SQLite database accepts,
// and says whether its server shows commits early as early says.
type preparingDialect struct{ early bool }

func (preparingDialect) Name() string { return "test" }
func (preparingDialect) Statements(Table) Statements {
	return Statements{Claim: "SELECT 1", Read: "SELECT 2"}
}
func (preparingDialect) Classify(error) ErrorKind { return KindOther }
func (preparingDialect) PrepareStatements() bool  { return true }
func (preparingDialect) PrepareFailed(error) bool { return false }
func (d preparingDialect) VisibleBeforeDurable(context.Context, Executor) (bool, error) {
	return d.early, nil
}

func openSQLite(t *testing.T, name string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// waitReady waits for the background run to end, which needs a free
// connection of the pool.
func waitReady(t *testing.T, d *sqlDriver) *preparedSet {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ps := d.ready(); ps != nil {
			return ps
		}
		if time.Now().After(deadline) {
			t.Fatal("statements not prepared after the connection was free")
		}
		time.Sleep(time.Millisecond)
	}
}

// Bind binds a transaction that holds the pool's only connection without
// waiting for preparing, which needs a connection; once the background
// preparation is done, later transactions run prepared statements, and the
// driver knows what the dialect's question found.
func TestSQLPreparesInTheBackground(t *testing.T) {
	db := openSQLite(t, "a.db")
	db.SetMaxOpenConns(1)
	d := SQL(preparingDialect{early: false}, db).(*sqlDriver)
	d.Prepare("SELECT 1", "SELECT 2")
	ctx := context.Background()

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	bound := d.Bind(tx).(sqlExecutor)
	if bound.ps != nil {
		t.Fatal("first binding: prepared statements while the pool's only connection is in use")
	}
	if !bound.VisibleBeforeDurable() {
		t.Fatal("first binding: the server's durability is known before the dialect was asked")
	}
	if n, err := bound.Exec(ctx, "SELECT 1"); err != nil || n != 0 {
		t.Fatalf("unprepared statement: %d, %v", n, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	waitReady(t, d)
	tx, err = db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	bound = d.Bind(tx).(sqlExecutor)
	if bound.ps == nil || len(bound.ps.stmts) != 2 {
		t.Fatalf("later binding: %+v, want 2 prepared statements", bound.ps)
	}
	if bound.VisibleBeforeDurable() {
		t.Fatal("later binding: the dialect's answer (durable) is not used")
	}
	var v int
	if err := bound.QueryRow(ctx, "SELECT 2").Scan(&v); err != nil || v != 2 {
		t.Fatalf("prepared statement: %d, %v", v, err)
	}
}

// A nil transaction binds nothing: Do refuses it.
func TestSQLBindNil(t *testing.T) {
	if ex := SQL(preparingDialect{}, openSQLite(t, "a.db")).Bind(nil); ex != nil {
		t.Fatalf("Bind(nil) = %v, want nil", ex)
	}
}

// A transaction of another *sql.DB than the driver's cannot run the
// driver's prepared statements: database/sql refuses, sending nothing, and
// the statement runs as text.
func TestSQLTransactionOfAnotherPool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	open := func() *sql.DB {
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	mine, other := open(), open()
	ctx := context.Background()
	if _, err := mine.Exec("CREATE TABLE t (v INTEGER)"); err != nil {
		t.Fatal(err)
	}
	const insert, count = "INSERT INTO t (v) VALUES (?)", "SELECT COUNT(*) FROM t WHERE v = ?"
	d := SQL(preparingDialect{}, mine).(*sqlDriver)
	d.Prepare(insert, count)
	if ps := waitReady(t, d); len(ps.stmts) != 2 {
		t.Fatalf("%d statements prepared, want 2", len(ps.stmts))
	}
	tx, err := other.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	ex := d.Bind(tx)
	if n, err := ex.Exec(ctx, insert, 7); err != nil || n != 1 {
		t.Fatalf("Exec in another pool's transaction: %d, %v", n, err)
	}
	var n int
	if err := ex.QueryRow(ctx, count, 7).Scan(&n); err != nil || n != 1 {
		t.Fatalf("QueryRow in another pool's transaction: %d, %v", n, err)
	}
}

// Statements asked for after the first run (a second store on the same
// driver) are prepared by the next one, beside those prepared already.
func TestSQLPrepareAgain(t *testing.T) {
	d := SQL(preparingDialect{}, openSQLite(t, "a.db")).(*sqlDriver)
	d.Prepare("SELECT 1")
	first := waitReady(t, d)
	d.Prepare("SELECT 2")
	deadline := time.Now().Add(10 * time.Second)
	for d.ready() == first {
		if time.Now().After(deadline) {
			t.Fatal("the second statement was never prepared")
		}
		time.Sleep(time.Millisecond)
	}
	if ps := d.set.Load(); ps.stmts["SELECT 1"] != first.stmts["SELECT 1"] || ps.stmts["SELECT 2"] == nil {
		t.Fatalf("after a second Prepare: %v", ps.stmts)
	}
}

// Begin's transaction drops its connection when asked to: a session
// setting left on it must not reach another transaction.
func TestSQLDropSession(t *testing.T) {
	db := openSQLite(t, "a.db")
	db.SetMaxOpenConns(1)
	d := SQL(preparingDialect{}, db)
	ctx := context.Background()
	tx, err := d.Begin(ctx, sql.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "PRAGMA busy_timeout = 1"); err != nil {
		t.Fatal(err)
	}
	tx.(SessionDropper).DropSession()
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var ms int
	if err := db.QueryRow("PRAGMA busy_timeout").Scan(&ms); err != nil || ms == 1 {
		t.Fatalf("busy_timeout on the next connection: %d, %v; want the dropped connection's setting gone", ms, err)
	}
}
