package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

// BenchmarkGuard runs the hot paths one call at a time on every database
// path that answers (PostgreSQL and MySQL from IDEMSQL_POSTGRES_DSN and
// IDEMSQL_MYSQL_DSN, or their local defaults; SQLite always):
//
//	cd bench && go test -run '^$' -bench Guard -benchmem
//
// Allocations include the bench's transaction adapter (the same for every
// variant); compare idem-* with hand-* and bare to see what Do adds.
func BenchmarkGuard(b *testing.B) {
	ctx := context.Background()
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	names := []string{"bare", "hand-first", "idem-first", "hand-replay", "idem-replay"}
	for _, path := range allPaths {
		b.Run(path, func(b *testing.B) {
			be, err := open(ctx, path, openOptions{maxConns: 1, interpolate: true, suffix: "_gobench", batch: 1000})
			if err != nil {
				b.Skipf("%s unavailable: %v", path, err)
			}
			defer func() { _ = be.dropTables(ctx); be.close() }()
			for _, name := range names {
				var v variant
				for _, x := range variants {
					if x.name == name {
						v = x
					}
				}
				b.Run(name, func(b *testing.B) {
					o, err := v.make(ctx, be, runID+b.Name())
					if err != nil {
						b.Fatal(err)
					}
					b.ReportAllocs()
					var seq uint64
					for b.Loop() {
						if err := o(ctx, seq); err != nil {
							b.Fatal(err)
						}
						seq++
					}
				})
			}
		})
	}
}

// BenchmarkSQLiteAllocs isolates what Do adds on SQLite by calling
// database/sql directly, with no adapter: bare is BEGIN; INSERT; COMMIT,
// hand-first adds the two statements of a hand-written guard, idem-first is
// the same work through idemsql.Do.
//
//	cd bench && go test -run '^$' -bench SQLiteAllocs -benchmem
func BenchmarkSQLiteAllocs(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(dir, "allocs.db")))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	store, err := idemsql.New(idemsqlite.New(db), idemsql.Options{Table: "idem"})
	if err != nil {
		b.Fatal(err)
	}
	hand, err := idemsql.New(idemsqlite.New(db), idemsql.Options{Table: "hand"})
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []*idemsql.Store[*sql.Tx]{store, hand} {
		if err := migrations.Up(ctx, db, s); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE business (id INTEGER PRIMARY KEY, k TEXT NOT NULL, amount INTEGER NOT NULL, created_at INTEGER NOT NULL DEFAULT (unixepoch()))`); err != nil {
		b.Fatal(err)
	}
	q := sqlFor("sqlite", "business", "hand", "idem", 1000)
	mustCommit := func(tx *sql.Tx, err error) {
		if err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	keys := func(prefix string) func() string {
		var n uint64
		return func() string { n++; return key(prefix, "a", n) }
	}
	b.Run("bare", func(b *testing.B) {
		next := keys("bare")
		b.ReportAllocs()
		for b.Loop() {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			_, err = tx.ExecContext(ctx, q.business, next(), int64(4200))
			mustCommit(tx, err)
		}
	})
	b.Run("hand-first", func(b *testing.B) {
		next := keys("hand")
		b.ReportAllocs()
		for b.Loop() {
			k := next()
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			fp := sha256.Sum256(request(k))
			_, err = tx.ExecContext(ctx, q.handClaim, k, fp[:])
			if err == nil {
				c := charge{Ref: k, Amount: 4200}
				var res sql.Result
				if res, err = tx.ExecContext(ctx, q.business, k, c.Amount); err == nil {
					c.ID, _ = res.LastInsertId()
					enc, _ := json.Marshal(c)
					_, err = tx.ExecContext(ctx, q.handComplete, string(enc), k)
				}
			}
			mustCommit(tx, err)
		}
	})
	b.Run("idem-first", func(b *testing.B) {
		next := keys("idem")
		b.ReportAllocs()
		for b.Loop() {
			k := next()
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			_, err = idemsql.Do(ctx, store, tx, k, func(ctx context.Context) (charge, error) {
				c := charge{Ref: k, Amount: 4200}
				res, err := tx.ExecContext(ctx, q.business, k, c.Amount)
				if err == nil {
					c.ID, _ = res.LastInsertId()
				}
				return c, err
			}, idemsql.Options{Fingerprint: request(k)})
			mustCommit(tx, err)
		}
	})
	b.Run("idem-replay", func(b *testing.B) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, err = idemsql.Do(ctx, store, tx, "replayed", func(ctx context.Context) (charge, error) {
			return charge{Ref: "replayed", Amount: 4200}, nil
		}, idemsql.Options{Fingerprint: request("replayed")})
		mustCommit(tx, err)
		b.ReportAllocs()
		for b.Loop() {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			_, err = idemsql.Do(ctx, store, tx, "replayed", func(ctx context.Context) (charge, error) {
				b.Fatal("replay ran fn")
				return charge{}, nil
			}, idemsql.Options{Fingerprint: request("replayed")})
			mustCommit(tx, err)
		}
	})
}

// BenchmarkSQLiteParse measures what SQLite spends preparing each
// statement of a guarded call (prepare and finalize, nothing run): the
// cost that every unprepared statement pays again on every call.
//
//	cd bench && go test -run '^$' -bench SQLiteParse
func BenchmarkSQLiteParse(b *testing.B) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(b.TempDir(), "parse.db")))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	store, err := idemsql.New(idemsqlite.New(db), idemsql.Options{Table: "idem"})
	if err != nil {
		b.Fatal(err)
	}
	hand, err := idemsql.New(idemsqlite.New(db), idemsql.Options{Table: "hand"})
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []*idemsql.Store[*sql.Tx]{store, hand} {
		if err := migrations.Up(ctx, db, s); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE business (id INTEGER PRIMARY KEY, k TEXT NOT NULL, amount INTEGER NOT NULL, created_at INTEGER NOT NULL DEFAULT (unixepoch()))`); err != nil {
		b.Fatal(err)
	}
	q := sqlFor("sqlite", "business", "hand", "idem", 1000)
	st := idemsqlite.Dialect.Statements(idemdriver.Table{Name: "idem"})
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for _, s := range []struct{ name, q string }{
		{"business", q.business}, {"hand-claim", q.handClaim}, {"hand-read", q.handRead}, {"hand-complete", q.handComplete},
		{"claim", st.Claim}, {"claim-completed", st.ClaimCompleted}, {"read", st.Read}, {"complete", st.Complete},
		{"begin", "BEGIN IMMEDIATE"}, {"commit", "COMMIT"},
	} {
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
				stmt, err := conn.PrepareContext(ctx, s.q)
				if err != nil {
					b.Fatal(err)
				}
				stmt.Close()
			}
		})
	}
}
