//go:build linux

package idemsqlite_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	driver "modernc.org/sqlite"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// envIOErrChild names the database of TestCommitIOErrorChild.
const envIOErrChild = "IDEMSQL_SQLITE_IOERR_CHILD"

// An I/O error at COMMIT does not say that nothing committed. In WAL mode
// with synchronous=FULL on a device without powersafe overwrite (psow=0),
// SQLite writes the transaction's frames, its commit frame last, then pads
// the log to a sector boundary with copies of that frame. Here the padding
// fails (the file may not grow past the commit frame: RLIMIT_FSIZE), so
// COMMIT reports SQLITE_IOERR_WRITE, and the process then dies without
// closing the database. WAL recovery, at the next open, finds a complete
// commit frame, and the transaction is committed. Run must therefore say
// ErrCommitUnknown, not retry, and the next call replays.
func TestCommitIOErrorMayHaveCommitted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ioerr.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCommitIOErrorChild$")
	cmd.Env = append(os.Environ(), envIOErrChild+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var got string
	for line := range strings.Lines(string(out)) {
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			got = strings.TrimSpace(rest)
		}
	}
	if want := "class=ErrCommitUnknown runs=1 sqlite=ioerr"; got != want {
		t.Fatalf("child's Run whose COMMIT failed with an I/O error: %q, want %q\n%s", got, want, out)
	}

	db, err := sql.Open("sqlite", idemsqlite.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		t.Fatal(err)
	}
	res, err := idemsql.Run(context.Background(), store, "real", func(context.Context, *sql.Tx) (string, error) {
		return "ran again", nil
	})
	if err != nil || !res.Replayed || res.Value != "the failed commit's" {
		t.Fatalf("after recovery: %+v, %v; want the replay of the COMMIT that reported an I/O error", res, err)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM biz WHERE k = 'real'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("business rows after recovery: %d, %v; want 1", n, err)
	}
}

// TestCommitIOErrorChild is not a test: it is the process of
// TestCommitIOErrorMayHaveCommitted that dies after the failed COMMIT.
func TestCommitIOErrorChild(t *testing.T) {
	path := os.Getenv(envIOErrChild)
	if path == "" {
		t.Skip("the child process of TestCommitIOErrorMayHaveCommitted")
	}
	ctx := context.Background()
	// No checkpoints: the log only grows, so its size says where the
	// next frame goes.
	db, err := sql.Open("sqlite", idemsqlite.DSN(path)+"&psow=0&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		t.Fatal(err)
	}
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, db, store); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE biz (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	p := &limitPool{db: db}
	pdb, err := idemsql.New[*sql.Tx](p)
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	run := func(key, value string) error {
		_, err := idemsql.Run(ctx, pdb, key, func(ctx context.Context, tx *sql.Tx) (string, error) {
			runs++
			_, err := tx.ExecContext(ctx, "INSERT INTO biz (k) VALUES (?)", key)
			return value, err
		})
		return err
	}
	// The same transaction on other keys measures how many bytes of log
	// it writes up to the end of its commit frame.
	var frames int64
	for i := range 2 {
		before := walSize(t, path)
		if err := run(fmt.Sprint("measure-", i), "x"); err != nil {
			t.Fatal(err)
		}
		frames = firstCommitFrameEnd(t, path, before) - before
	}
	runs = 0
	p.limit = walSize(t, path) + frames
	err = run("real", "the failed commit's")
	class := "none"
	switch {
	case errors.Is(err, idemsql.ErrCommitUnknown):
		class = "ErrCommitUnknown"
	case errors.Is(err, idemsql.ErrRetryable):
		class = "ErrRetryable"
	case err == nil:
		class = "nil"
	}
	code := "other"
	var se *driver.Error
	if errors.As(err, &se) && se.Code()&0xff == 10 { // SQLITE_IOERR
		code = "ioerr"
	}
	fmt.Printf("RESULT class=%s runs=%d sqlite=%s\n", class, runs, code)
	fmt.Printf("error: %v\n", err)
	os.Exit(0) // dies with the database open: the next open recovers the log
}

// limitPool is a driver that begins database/sql transactions whose next
// COMMIT may not grow any file past limit bytes.
type limitPool struct {
	db    *sql.DB
	limit int64
}

func (p *limitPool) Dialect() idemdriver.Dialect      { return idemsqlite.Dialect }
func (p *limitPool) Bind(*sql.Tx) idemdriver.Executor { return nil }

func (p *limitPool) Begin(ctx context.Context, _ sql.IsolationLevel) (idemdriver.Tx[*sql.Tx], error) {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return limitTx{tx: tx, p: p}, nil
}

type limitTx struct {
	tx *sql.Tx
	p  *limitPool
}

func (t limitTx) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	r, err := t.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

func (t limitTx) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return t.tx.QueryRowContext(ctx, q, args...)
}

func (t limitTx) Tx() *sql.Tx                    { return t.tx }
func (t limitTx) Rollback(context.Context) error { return t.tx.Rollback() }

func (t limitTx) Commit(context.Context) error {
	if t.p.limit == 0 {
		return t.tx.Commit()
	}
	var was syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &was); err != nil {
		return err
	}
	lim := syscall.Rlimit{Cur: uint64(t.p.limit), Max: was.Max}
	t.p.limit = 0 // once
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		return err
	}
	defer syscall.Setrlimit(syscall.RLIMIT_FSIZE, &was)
	return t.tx.Commit()
}

func walSize(t *testing.T, path string) int64 {
	st, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// firstCommitFrameEnd is the offset just past the first commit frame
// written at or after from (a frame header's second word, the database
// size after a commit, is not 0 in a commit frame).
func firstCommitFrameEnd(t *testing.T, path string, from int64) int64 {
	b, err := os.ReadFile(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int64(binary.BigEndian.Uint32(b[8:12]))
	frame := 24 + pageSize
	for off := from; off+frame <= int64(len(b)); off += frame {
		if binary.BigEndian.Uint32(b[off+4:off+8]) != 0 {
			return off + frame
		}
	}
	t.Fatalf("no commit frame after offset %d", from)
	return 0
}
