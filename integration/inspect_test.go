package integration

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idempostgres"
	"github.com/idemsql/idemsql/idemsql"
)

// listPage is what List returns.
type listPage struct {
	Records []idemsql.Record
	Next    string
}

// inspectOps calls the read API on one pool type.
type inspectOps struct {
	name   string
	lookup func(ctx context.Context, key string) (idemsql.Record, bool, error)
	list   func(ctx context.Context, f idemsql.ListFilter) (listPage, error)
	stats  func(ctx context.Context) (idemsql.TableStats, error)
}

func inspectOpsFor[X any](name string, db *idemsql.Store[X]) inspectOps {
	return inspectOps{
		name: name,
		lookup: func(ctx context.Context, key string) (idemsql.Record, bool, error) {
			return idemsql.Lookup(ctx, db, key)
		},
		list: func(ctx context.Context, f idemsql.ListFilter) (listPage, error) {
			records, next, err := idemsql.List(ctx, db, f)
			return listPage{Records: records, Next: next}, err
		},
		stats: func(ctx context.Context) (idemsql.TableStats, error) { return idemsql.Stats(ctx, db) },
	}
}

// readPaths are the ways the read API reaches a backend: the backend's own
// pool first, then every other kind of pool it can be bound through (a
// database/sql pool read in transactions, a pgx pool whose transactions
// return one row per query).
func readPaths(t *testing.T, b backend, e *env) []inspectOps {
	t.Helper()
	if b.name == "postgres-pgx" {
		pool, err := pgxpool.New(context.Background(), postgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return []inspectOps{
			inspectOpsFor("pgx pool", storeOn(e, idempostgres.New(pool))),
			inspectOpsFor("pgx, one row per query", storeOn(e, testDriver[pgx.Tx]{inner: idempostgres.New(pool), begin: rowPool{pool}.Begin})),
		}
	}
	return []inspectOps{
		inspectOpsFor("sql.DB", e.store),
		inspectOpsFor("sql.Tx", storeOn(e, testDriver[*sql.Tx]{inner: sqlDriver(e.dialect, e.db), begin: sqlTxPool{e.db}.Begin})),
	}
}

// rowPool begins pgx transactions that run only one-row queries (an
// Executor without RowsQuerier), as a Pool of another driver might.
type rowPool struct{ p *pgxpool.Pool }

func (p rowPool) Begin(ctx context.Context, _ sql.IsolationLevel) (idemdriver.Tx[pgx.Tx], error) {
	tx, err := p.p.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return rowTx{tx}, nil
}

type rowTx struct{ tx pgx.Tx }

func (t rowTx) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}
func (t rowTx) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return t.tx.QueryRow(ctx, q, args...)
}
func (t rowTx) Tx() pgx.Tx                         { return t.tx }
func (t rowTx) Commit(ctx context.Context) error   { return t.tx.Commit(ctx) }
func (t rowTx) Rollback(ctx context.Context) error { return t.tx.Rollback(ctx) }

// sqlTxPool begins database/sql transactions of a driver of the caller's
// own, which reads in a transaction.
type sqlTxPool struct{ db *sql.DB }

func (p sqlTxPool) Begin(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[*sql.Tx], error) {
	tx, err := p.db.BeginTx(ctx, &sql.TxOptions{Isolation: level})
	if err != nil {
		return nil, err
	}
	return sqlTxPoolTx{tx}, nil
}

type sqlTxPoolTx struct{ tx *sql.Tx }

func (t sqlTxPoolTx) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
func (t sqlTxPoolTx) QueryRow(ctx context.Context, q string, args ...any) idemdriver.Row {
	return t.tx.QueryRowContext(ctx, q, args...)
}
func (t sqlTxPoolTx) Query(ctx context.Context, q string, args ...any) (idemdriver.Rows, error) {
	return t.tx.QueryContext(ctx, q, args...)
}
func (t sqlTxPoolTx) Tx() *sql.Tx                    { return t.tx }
func (t sqlTxPoolTx) Commit(context.Context) error   { return t.tx.Commit() }
func (t sqlTxPoolTx) Rollback(context.Context) error { return t.tx.Rollback() }

// inspectFixture is a table with a key in every state the read API tells
// apart.
type inspectFixture struct {
	done        idemsql.Result[invoice]
	live        idemsql.Lease
	stale       idemsql.Lease
	released    idemsql.Lease
	externalKey string // the downstream key RunExternal's fn saw for "pay:done"
}

func makeInspectFixture(t *testing.T, e *env) inspectFixture {
	t.Helper()
	ctx := context.Background()
	var fx inspectFixture
	var runs atomic.Int64
	fx.done = e.mustGuarded("acct:done", 7, &runs)
	_, err := e.runTx(ctx, "acct:failed", func(ctx context.Context, tx testTx) (invoice, error) {
		return invoice{}, idemsql.Permanent("card_declined", errors.New("the card was declined"))
	}, idemsql.Options{RecordFailures: true})
	if !errors.Is(err, idemsql.ErrFailureRecorded) {
		t.Fatalf("recorded failure: %v", err)
	}
	ops := opsFor(e.store)
	claim := func(key string) idemsql.Lease {
		c, err := ops.claim(ctx, key, idemsql.Options{Lease: time.Hour})
		if err != nil || !c.Held {
			t.Fatalf("claim %q: %+v %v", key, c, err)
		}
		return c
	}
	fx.live = claim("pay:live")
	fx.stale = claim("pay:stale")
	e.exec(t, "UPDATE "+e.table+" SET lease_until = "+e.secondsAgo(5)+" WHERE idem_key = ?", "pay:stale")
	fx.released = claim("pay:released")
	if err := fx.released.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.do(ctx, "pay:done", func(ctx context.Context, l idemsql.Claim) (receipt, error) {
		fx.externalKey = l.DownstreamKey
		return receipt{By: "ext", Attempt: l.Attempt, Downstream: l.DownstreamKey}, nil
	}); err != nil {
		t.Fatal(err)
	}
	// An atomic-mode claim committed without an outcome, claimed two hours
	// ago.
	e.exec(t, "INSERT INTO "+e.table+" (idem_key, status, attempt, owner, created_at, updated_at, expires_at) VALUES (?, 'in_progress', 1, 'gone', "+
		e.secondsAgo(7200)+", "+e.secondsAgo(7200)+", "+e.secondsAgo(-3600)+")", "atomic:abandoned")
	e.mustGuarded("old:expired", 1, &runs)
	e.expire("old:expired")
	e.mustGuarded("old:again", 2, &runs)
	e.expire("old:again")
	e.mustGuarded("old:again", 3, &runs)
	return fx
}

func (e *env) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	if _, err := e.db.Exec(e.q(query), args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

var fixtureKeys = []string{"acct:done", "acct:failed", "atomic:abandoned", "old:again", "old:expired",
	"pay:done", "pay:live", "pay:released", "pay:stale"}

// TestInspect reads every state a key can be in through the read API, on
// every backend and every kind of pool.
func TestInspect(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			fx := makeInspectFixture(t, e)
			for _, ops := range readPaths(t, b, e) {
				t.Run(ops.name, func(t *testing.T) {
					checkLookup(t, e, ops, fx)
					checkList(t, ops)
					checkStats(t, ops)
				})
			}
			t.Run("Prefixes", func(t *testing.T) { checkPrefixes(t, e, readPaths(t, b, e)) })
			t.Run("NoWaitForWriters", func(t *testing.T) { checkNoWait(t, e, readPaths(t, b, e)[0]) })
			if b.dialect == "mysql" {
				t.Run("WithoutParseTime", func(t *testing.T) { checkWithoutParseTime(t, b, e) })
			}
			if b.dialect != "sqlite" {
				t.Run("Schema", func(t *testing.T) { checkInspectSchema(t, b, e) })
			}
		})
	}
}

func mustLookup(t *testing.T, ops inspectOps, key string) idemsql.Record {
	t.Helper()
	r, found, err := ops.lookup(context.Background(), key)
	if err != nil || !found {
		t.Fatalf("Lookup(%q): found=%v err=%v", key, found, err)
	}
	return r
}

func checkLookup(t *testing.T, e *env, ops inspectOps, fx inspectFixture) {
	ctx := context.Background()
	before := time.Now()

	r := mustLookup(t, ops, "acct:done")
	if r.Status != idemsql.StatusCompleted || r.Lease != idemsql.LeaseNone || r.Attempt != 1 || r.Expired || r.Result == nil {
		t.Fatalf("acct:done: %+v", r)
	}
	var got invoice
	if err := r.Decode(&got); err != nil || got != fx.done.Value {
		t.Fatalf("Decode: %+v %v, want %+v", got, err, fx.done.Value)
	}
	var wrong []string
	if err := r.Decode(&wrong); !errors.Is(err, idemsql.ErrDecode) {
		t.Fatalf("Decode into the wrong type: %v", err)
	}
	if d := r.ReadAt.Sub(before); d < -time.Minute || d > time.Minute {
		t.Fatalf("ReadAt %v is %v from the local clock", r.ReadAt, d)
	}
	if r.CreatedAt.After(r.UpdatedAt) || r.UpdatedAt.After(r.ReadAt) || r.CompletedAt.IsZero() || r.CompletedAt.After(r.ReadAt) {
		t.Fatalf("times out of order: %+v", r)
	}
	if ttl := r.ExpiresAt.Sub(r.CreatedAt); ttl < 23*time.Hour || ttl > 25*time.Hour {
		t.Fatalf("retention %v, want about 24h", ttl)
	}
	if !r.LeaseUntil.IsZero() || r.Owner == "" || r.CreatedAt.Location() != time.UTC {
		t.Fatalf("acct:done: %+v", r)
	}

	r = mustLookup(t, ops, "acct:failed")
	if r.Status != idemsql.StatusFailed || r.ErrorClass != "card_declined" || !strings.Contains(r.ErrorMessage, "declined") || r.Result != nil {
		t.Fatalf("acct:failed: %+v", r)
	}
	if err := r.Decode(&got); !errors.Is(err, idemsql.ErrDecode) {
		t.Fatalf("Decode of a failed row: %v", err)
	}

	for _, c := range []struct {
		key   string
		lease idemsql.Lease
		state string
	}{
		{"pay:live", fx.live, idemsql.LeaseLive},
		{"pay:stale", fx.stale, idemsql.LeaseStale},
		{"pay:released", fx.released, idemsql.LeaseReleased},
	} {
		r = mustLookup(t, ops, c.key)
		if r.Status != idemsql.StatusInProgress || r.Lease != c.state || r.Attempt != c.lease.Attempt || r.Owner != c.lease.Owner {
			t.Fatalf("%s: %+v, want lease %s, attempt %d, owner %s", c.key, r, c.state, c.lease.Attempt, c.lease.Owner)
		}
		if r.DownstreamKey != c.lease.DownstreamKey {
			t.Fatalf("%s: downstream key %q, the holder's is %q", c.key, r.DownstreamKey, c.lease.DownstreamKey)
		}
		// A released claim's lease_until is the end of its retention: only
		// live and stale leases say anything by it.
		if live := r.LeaseUntil.After(r.ReadAt); c.state != idemsql.LeaseReleased && live != (c.state == idemsql.LeaseLive) {
			t.Fatalf("%s: lease until %v, read at %v", c.key, r.LeaseUntil, r.ReadAt)
		}
	}
	if r := mustLookup(t, ops, "pay:live"); r.LeaseUntil.Sub(r.ReadAt) < 59*time.Minute {
		t.Fatalf("live lease ends %v after the read", r.LeaseUntil.Sub(r.ReadAt))
	}
	if r := mustLookup(t, ops, "pay:released"); r.ErrorClass != idemsql.ReleasedClass {
		t.Fatalf("released: %+v", r)
	}
	r = mustLookup(t, ops, "pay:done")
	if r.Status != idemsql.StatusCompleted || r.Lease != idemsql.LeaseNone || r.LeaseUntil.IsZero() || r.DownstreamKey != fx.externalKey {
		t.Fatalf("pay:done: %+v, fn saw downstream key %q", r, fx.externalKey)
	}
	var rc receipt
	if err := r.Decode(&rc); err != nil || rc.Downstream != fx.externalKey {
		t.Fatalf("pay:done result: %+v %v", rc, err)
	}

	r = mustLookup(t, ops, "atomic:abandoned")
	if r.Status != idemsql.StatusInProgress || r.Lease != idemsql.LeaseAbandoned || !r.LeaseUntil.IsZero() {
		t.Fatalf("atomic:abandoned: %+v", r)
	}
	if age := r.ReadAt.Sub(r.CreatedAt); age < 2*time.Hour-time.Minute || age > 2*time.Hour+time.Minute {
		t.Fatalf("atomic:abandoned claimed %v ago, want 2h", age)
	}
	if r := mustLookup(t, ops, "old:expired"); !r.Expired || r.Status != idemsql.StatusCompleted {
		t.Fatalf("old:expired: %+v", r)
	}
	if r := mustLookup(t, ops, "old:again"); r.Attempt != 2 || r.Expired {
		t.Fatalf("old:again: %+v", r)
	}

	if r, found, err := ops.lookup(ctx, "no:such-key"); err != nil || found || r.Key != "" {
		t.Fatalf("unknown key: %+v %v %v", r, found, err)
	}
	if _, _, err := ops.lookup(ctx, ""); !errors.Is(err, idemsql.ErrInvalidKey) {
		t.Fatalf("empty key: %v", err)
	}
}

func keysOf(recs []idemsql.Record) []string {
	keys := make([]string, len(recs))
	for i, r := range recs {
		keys[i] = r.Key
	}
	return keys
}

// listAll walks every page of f.
func listAll(t *testing.T, ops inspectOps, f idemsql.ListFilter) []string {
	t.Helper()
	var keys []string
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("List does not end")
		}
		p, err := ops.list(context.Background(), f)
		if err != nil {
			t.Fatalf("List(%+v): %v", f, err)
		}
		for _, r := range p.Records {
			if r.Result != nil {
				t.Fatalf("List returned a result for %q", r.Key)
			}
		}
		keys = append(keys, keysOf(p.Records)...)
		if p.Next == "" {
			return keys
		}
		f.After = p.Next
	}
}

func checkList(t *testing.T, ops inspectOps) {
	ctx := context.Background()
	all := listAll(t, ops, idemsql.ListFilter{})
	if !slices.Equal(all, fixtureKeys) {
		t.Fatalf("List: %q, want %q", all, fixtureKeys)
	}
	if paged := listAll(t, ops, idemsql.ListFilter{Limit: 2}); !slices.Equal(paged, fixtureKeys) {
		t.Fatalf("List by 2: %q", paged)
	}
	p, err := ops.list(ctx, idemsql.ListFilter{Limit: 9})
	if err != nil || p.Next != "" || len(p.Records) != 9 {
		t.Fatalf("a page that holds everything: %d records, next %q, %v", len(p.Records), p.Next, err)
	}
	p, err = ops.list(ctx, idemsql.ListFilter{Limit: 8})
	if err != nil || p.Next != "pay:released" {
		t.Fatalf("a page one short: next %q, %v", p.Next, err)
	}
	for _, c := range []struct {
		f    idemsql.ListFilter
		want []string
	}{
		{idemsql.ListFilter{Status: idemsql.StatusFailed}, []string{"acct:failed"}},
		{idemsql.ListFilter{Status: idemsql.StatusInProgress}, []string{"atomic:abandoned", "pay:live", "pay:released", "pay:stale"}},
		{idemsql.ListFilter{Lease: idemsql.LeaseStale}, []string{"pay:stale"}},
		{idemsql.ListFilter{Lease: idemsql.LeaseReleased}, []string{"pay:released"}},
		{idemsql.ListFilter{Lease: idemsql.LeaseLive}, []string{"pay:live"}},
		{idemsql.ListFilter{Lease: idemsql.LeaseAbandoned}, []string{"atomic:abandoned"}},
		{idemsql.ListFilter{Lease: idemsql.LeaseNone, Prefix: "acct:"}, []string{"acct:done", "acct:failed"}},
		{idemsql.ListFilter{Sweepable: true}, []string{"atomic:abandoned", "pay:stale"}},
		{idemsql.ListFilter{Purgeable: true}, []string{"old:expired"}},
		{idemsql.ListFilter{OlderThan: time.Hour}, []string{"atomic:abandoned"}},
		{idemsql.ListFilter{Prefix: "pay:"}, []string{"pay:done", "pay:live", "pay:released", "pay:stale"}},
		{idemsql.ListFilter{Prefix: "pay:", After: "pay:live"}, []string{"pay:released", "pay:stale"}},
		{idemsql.ListFilter{Prefix: "pay:", After: "acct:done"}, []string{"pay:done", "pay:live", "pay:released", "pay:stale"}},
		{idemsql.ListFilter{Prefix: "pay:", Status: idemsql.StatusCompleted}, []string{"pay:done"}},
		{idemsql.ListFilter{Prefix: "nothing"}, nil},
	} {
		if got := listAll(t, ops, c.f); !slices.Equal(got, c.want) {
			t.Errorf("List(%+v) = %q, want %q", c.f, got, c.want)
		}
	}
	for _, f := range []idemsql.ListFilter{{Status: "done"}, {Lease: "dead"}, {Limit: -1}, {Limit: idemsql.MaxListLimit + 1}, {OlderThan: -time.Second}} {
		if _, err := ops.list(ctx, f); !errors.Is(err, idemsql.ErrInvalidOption) {
			t.Errorf("List(%+v): %v, want ErrInvalidOption", f, err)
		}
	}
	if _, err := ops.list(ctx, idemsql.ListFilter{Prefix: "a\x00"}); !errors.Is(err, idemsql.ErrInvalidKey) {
		t.Errorf("prefix with NUL: %v", err)
	}
}

func checkStats(t *testing.T, ops inspectOps) {
	st, err := ops.stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := idemsql.TableStats{Total: 9, InProgress: 4, Completed: 4, Failed: 1,
		LiveLeases: 1, StaleLeases: 1, Released: 1, Abandoned: 1, Retried: 1, Sweepable: 2, Purgeable: 1,
		OldestInProgress: "atomic:abandoned"}
	got := st
	got.OldestInProgressAt, got.ReadAt = time.Time{}, time.Time{}
	if got != want {
		t.Fatalf("Stats:\n got %+v\nwant %+v", got, want)
	}
	if age := st.ReadAt.Sub(st.OldestInProgressAt); age < 2*time.Hour-time.Minute || age > 2*time.Hour+time.Minute {
		t.Fatalf("oldest in progress claimed %v ago, want 2h", age)
	}
}

// checkPrefixes: a prefix is bytes, not a pattern, and ends where the next
// character would.
func checkPrefixes(t *testing.T, e *env, paths []inspectOps) {
	keys := []string{"w%1", "w_2", "wa3", `w\4`, "w%%5", "é1", "é2", "ê1", "e1", "\U0010FFFFz", "\U0010FFFF\U0010FFFF", "zz"}
	var runs atomic.Int64
	for _, k := range keys {
		e.mustGuarded(k, 1, &runs)
	}
	for _, ops := range paths {
		for _, c := range []struct {
			prefix string
			want   []string
		}{
			{"w%", []string{"w%%5", "w%1"}},
			{"w_", []string{"w_2"}},
			{`w\`, []string{`w\4`}},
			{"w", []string{"w%%5", "w%1", `w\4`, "w_2", "wa3"}},
			{"é", []string{"é1", "é2"}},
			{"e", []string{"e1"}},
			{"\U0010FFFF", []string{"\U0010FFFFz", "\U0010FFFF\U0010FFFF"}},
			{"\U0010FFFF\U0010FFFF", []string{"\U0010FFFF\U0010FFFF"}},
		} {
			if got := listAll(t, ops, idemsql.ListFilter{Prefix: c.prefix}); !slices.Equal(got, c.want) {
				t.Errorf("%s: prefix %q: %q, want %q", ops.name, c.prefix, got, c.want)
			}
		}
	}
}

// checkNoWait: a read never waits for a writer: not for an uncommitted
// claim, nor for a row another transaction has locked.
func checkNoWait(t *testing.T, e *env, ops inspectOps) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var runs atomic.Int64
	holder := e.holdKey(ctx, "held:uncommitted", &runs)
	defer func() { _ = holder.Rollback(context.Background()) }()
	if e.dialect != "sqlite" {
		if err := holder.Exec(ctx, e.q("SELECT attempt FROM "+e.table+" WHERE idem_key = ? FOR UPDATE"), "acct:done"); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if _, found, err := ops.lookup(ctx, "held:uncommitted"); err != nil || found {
		t.Fatalf("uncommitted claim: found=%v %v", found, err)
	}
	if _, found, err := ops.lookup(ctx, "acct:done"); err != nil || !found {
		t.Fatalf("locked row: found=%v %v", found, err)
	}
	if _, err := ops.list(ctx, idemsql.ListFilter{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.stats(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("reads took %v next to an open writer", d)
	}
}

// checkWithoutParseTime: times are read as numbers, so a MySQL DSN without
// parseTime gives the same record.
func checkWithoutParseTime(t *testing.T, b backend, e *env) {
	dsn := mysqlDSN(t)
	if b.name == "galera" {
		dsn = galeraDSNs(t)[0]
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ParseTime = false
	db := openMySQL(t, cfg.FormatDSN())
	with, _, err := idemsql.Lookup(context.Background(), e.store, "acct:done")
	if err != nil {
		t.Fatal(err)
	}
	without, _, err := idemsql.Lookup(context.Background(), storeOn(e, sqlDriver(e.dialect, db)), "acct:done")
	if err != nil {
		t.Fatal(err)
	}
	with.ReadAt, without.ReadAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(with, without) {
		t.Fatalf("with parseTime:\n%+v\nwithout:\n%+v", with, without)
	}
}

// checkInspectSchema: the read API finds a table in a schema of its own
// (idemsql.Options.Schema), and nothing of the default schema's.
func checkInspectSchema(t *testing.T, b backend, admin *env) {
	schema := "idem_s_" + uniqueSuffix(t)
	create, drop := "CREATE SCHEMA "+schema, "DROP SCHEMA "+schema+" CASCADE"
	if b.dialect == "mysql" {
		create, drop = "CREATE DATABASE "+schema, "DROP DATABASE "+schema
	}
	admin.exec(t, create)
	t.Cleanup(func() { _, _ = admin.db.Exec(drop) })
	e := b.setup(t, idemsql.Options{Schema: schema})
	var runs atomic.Int64
	e.mustGuarded("in-schema", 5, &runs)
	for _, ops := range readPaths(t, b, e) {
		r := mustLookup(t, ops, "in-schema")
		var got invoice
		if err := r.Decode(&got); err != nil || got.Amount != 5 {
			t.Fatalf("%s: %+v %v", ops.name, got, err)
		}
		if keys := listAll(t, ops, idemsql.ListFilter{}); !slices.Equal(keys, []string{"in-schema"}) {
			t.Fatalf("%s: List = %q", ops.name, keys)
		}
		if st, err := ops.stats(context.Background()); err != nil || st.Total != 1 {
			t.Fatalf("%s: Stats = %+v, %v", ops.name, st, err)
		}
	}
}
