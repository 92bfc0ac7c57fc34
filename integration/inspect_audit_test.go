package integration

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// auditQuery is one SQL block of docs/audit.md, as users copy it.
type auditQuery struct {
	name, dialect, sql string
	line               int
}

var auditMarkerRE = regexp.MustCompile(`^<!-- audit: ([a-z-]+) -->$`)

// auditQueries reads the SQL blocks of docs/audit.md: each follows a
// marker naming its recipe, and its first line names its database.
func auditQueries(t *testing.T) []auditQuery {
	t.Helper()
	f, err := os.Open("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dialectOf := map[string]string{"-- PostgreSQL": "postgres", "-- MySQL, MariaDB": "mysql", "-- SQLite": "sqlite"}
	var qs []auditQuery
	var marker string
	var cur *auditQuery
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && line == "```":
			first, body, _ := strings.Cut(cur.sql, "\n")
			d, ok := dialectOf[first]
			if !ok {
				t.Fatalf("docs/audit.md:%d: a SQL block begins with %q, not a database's name", cur.line, first)
			}
			cur.dialect, cur.sql = d, body
			qs = append(qs, *cur)
			cur = nil
		case cur != nil:
			cur.sql += line + "\n"
		case line == "```sql":
			if marker == "" {
				t.Fatalf("docs/audit.md:%d: a SQL block without an <!-- audit: NAME --> marker", n)
			}
			cur = &auditQuery{name: marker, line: n}
			marker = ""
		case auditMarkerRE.MatchString(line):
			marker = auditMarkerRE.FindStringSubmatch(line)[1]
		case strings.TrimSpace(line) != "":
			marker = ""
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return qs
}

// auditRow is one row a recipe returned, by column name.
type auditRow map[string]any

// auditFixture is what the recipes are checked against: every row of the
// table as the read API reads it, and the database's clock around the
// release of one claim.
type auditFixture struct {
	rows                   map[string]idemsql.Record
	now                    time.Time // the database's clock, after the fixture was made
	releasedAt             string    // the key released between releaseFrom and releaseTo
	releaseFrom, releaseTo time.Time
	staleFrom              time.Duration // pay:stale's lease ran out at least this long ago
	chargeID               int64
	chargeResult           json.RawMessage
}

// auditChecks say, per recipe, which keys (or aggregates) its rows must
// hold and what each column means.
var auditChecks = map[string]func(t *testing.T, fx *auditFixture, rows []auditRow){
	"stuck": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		fx.wantKeys(t, rows, func(r idemsql.Record) bool {
			return r.Status == idemsql.StatusInProgress && fx.now.Sub(r.CreatedAt) > 15*time.Minute
		}, "created_at")
		for _, row := range rows {
			want := fx.rows[auditString(t, row["idem_key"])].Lease
			if want == idemsql.LeaseAbandoned {
				want = "abandoned (atomic mode)"
			}
			if got := auditString(t, row["lease"]); got != want {
				t.Errorf("lease %q, want %q", got, want)
			}
		}
	},
	"stale": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		fx.wantKeys(t, rows, func(r idemsql.Record) bool { return r.Lease == idemsql.LeaseStale }, "lease_until")
		for _, row := range rows {
			var d time.Duration
			if v, ok := row["stale_for"]; ok {
				d = auditInterval(t, v)
			} else {
				d = time.Duration(auditFloat(t, row["stale_seconds"]) * float64(time.Second))
			}
			// Now minus lease_until: at least the time since the test moved
			// it into the past, and far less than a day (not expires_at).
			if d < fx.staleFrom-time.Second || d > fx.staleFrom+5*time.Minute {
				t.Errorf("stale for %v, want about %v", d, fx.staleFrom)
			}
		}
	},
	"by-status": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		keys, expired := map[string]int64{}, map[string]int64{}
		for _, r := range fx.rows {
			keys[r.Status]++
			if r.Expired {
				expired[r.Status]++
			}
		}
		if len(rows) != len(keys) {
			t.Errorf("%d statuses, want %d", len(rows), len(keys))
		}
		for _, row := range rows {
			s := auditString(t, row["status"])
			if k, e := auditInt(t, row["keys"]), auditInt(t, row["expired"]); k != keys[s] || e != expired[s] {
				t.Errorf("status %s: %d keys, %d expired; want %d, %d", s, k, e, keys[s], expired[s])
			}
		}
	},
	"key": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		if len(rows) != 1 {
			t.Fatalf("%d rows, want charge:order-1's", len(rows))
		}
		row := rows[0]
		fx.wantColumns(t, fx.rows["charge:order-1"], row)
		var got, want any
		if err := json.Unmarshal([]byte(auditString(t, row["result"])), &got); err != nil {
			t.Fatalf("result: %v", err)
		}
		_ = json.Unmarshal(fx.chargeResult, &want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("result %v, want %v", got, want)
		}
		if id, err := strconv.ParseInt(auditString(t, row["charge_id"]), 10, 64); err != nil || id != fx.chargeID {
			t.Errorf("charge_id %v, want %d", row["charge_id"], fx.chargeID)
		}
		if got, want := auditString(t, row["downstream_key"]), fx.rows["charge:order-1"].DownstreamKey; got != want {
			t.Errorf("downstream_key %q, want %q", got, want)
		}
	},
	"abandoned-lease": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		fx.wantKeys(t, rows, func(r idemsql.Record) bool {
			return r.Status == idemsql.StatusFailed && r.ErrorClass == idemsql.AbandonedClass
		}, "created_at")
		for _, row := range rows {
			r := fx.rows[auditString(t, row["idem_key"])]
			if got := auditInt(t, row["past_retention"]) == 1; got != r.ExpiresAt.Before(fx.now) {
				t.Errorf("%s: past_retention %v, expires_at %v, now %v", r.Key, got, r.ExpiresAt, fx.now)
			}
		}
	},
	"failures": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		type agg struct {
			n      int64
			latest idemsql.Record
		}
		want := map[string]*agg{}
		for _, r := range fx.rows {
			if r.Status != idemsql.StatusFailed || fx.now.Sub(r.CompletedAt) >= time.Hour {
				continue
			}
			a := want[r.ErrorClass]
			if a == nil {
				a = &agg{}
				want[r.ErrorClass] = a
			}
			a.n++
			if r.CompletedAt.After(a.latest.CompletedAt) {
				a.latest = r
			}
		}
		if len(rows) != len(want) || len(rows) == 0 {
			t.Fatalf("%d classes, want %d", len(rows), len(want))
		}
		for _, row := range rows {
			a := want[auditString(t, row["error_class"])]
			if a == nil || auditInt(t, row["failures"]) != a.n {
				t.Fatalf("row %v; want %v", row, want)
			}
			auditSameTime(t, "latest", row["latest"], a.latest.CompletedAt)
			if k, ok := row["latest_key"]; ok && auditString(t, k) != a.latest.Key {
				t.Errorf("latest_key %v, want %s", k, a.latest.Key)
			}
		}
	},
	"namespaces": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		type agg struct{ keys, lastHour, inProgress int64 }
		want := map[string]*agg{}
		for _, r := range fx.rows {
			ns, _, _ := strings.Cut(r.Key, ":")
			a := want[ns]
			if a == nil {
				a = &agg{}
				want[ns] = a
			}
			a.keys++
			if fx.now.Sub(r.CreatedAt) < time.Hour {
				a.lastHour++
			}
			if r.Status == idemsql.StatusInProgress {
				a.inProgress++
			}
		}
		if len(rows) != len(want) {
			t.Errorf("%d namespaces, want %d", len(rows), len(want))
		}
		for _, row := range rows {
			ns := auditString(t, row["namespace"])
			a := want[ns]
			if a == nil || auditInt(t, row["keys"]) != a.keys || auditInt(t, row["last_hour"]) != a.lastHour || auditInt(t, row["in_progress"]) != a.inProgress {
				t.Errorf("namespace %q: %v, want %+v", ns, row, a)
			}
		}
	},
	"reclaims": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		fx.wantKeys(t, rows, func(r idemsql.Record) bool { return r.Attempt > 1 }, "")
		for _, row := range rows {
			r := fx.rows[auditString(t, row["idem_key"])]
			if got := auditInt(t, row["lease_mode"]) == 1; got != !r.LeaseUntil.IsZero() {
				t.Errorf("%s: lease_mode %v", r.Key, got)
			}
		}
	},
	"released": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		fx.wantKeys(t, rows, func(r idemsql.Record) bool { return r.Lease == idemsql.LeaseReleased }, "-updated_at")
		for _, row := range rows {
			key := auditString(t, row["idem_key"])
			r := fx.rows[key]
			at := auditTime(t, row["released_at"])
			auditSameTime(t, key+": released_at", row["released_at"], r.UpdatedAt)
			if key == fx.releasedAt && (at.Before(fx.releaseFrom.Truncate(time.Millisecond)) || at.After(fx.releaseTo)) {
				t.Errorf("%s: released_at %v, want the release, between %v and %v", key, at, fx.releaseFrom, fx.releaseTo)
			}
			if got := auditString(t, row["why"]); got != r.ErrorMessage || got == "" {
				t.Errorf("%s: why %q, want %q", key, got, r.ErrorMessage)
			}
		}
	},
	"abandoned-atomic": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		fx.wantKeys(t, rows, func(r idemsql.Record) bool { return r.Lease == idemsql.LeaseAbandoned }, "created_at")
	},
	"purge": func(t *testing.T, fx *auditFixture, rows []auditRow) {
		var n int64
		var oldest time.Time
		for _, r := range fx.rows {
			if r.Status != idemsql.StatusInProgress && r.ExpiresAt.Before(fx.now) {
				n++
				if oldest.IsZero() || r.ExpiresAt.Before(oldest) {
					oldest = r.ExpiresAt
				}
			}
		}
		if len(rows) != 1 || n == 0 || auditInt(t, rows[0]["rows"]) != n {
			t.Fatalf("%v, want %d rows", rows, n)
		}
		auditSameTime(t, "oldest", rows[0]["oldest"], oldest)
	},
}

// wantKeys checks that the rows are those of the keys keep selects, in
// the order of the table's column orderBy ("-" before it: descending; ""
// for any order), and that every column named after one of the table's
// holds that row's value.
func (fx *auditFixture) wantKeys(t *testing.T, rows []auditRow, keep func(idemsql.Record) bool, orderBy string) {
	t.Helper()
	desc := strings.HasPrefix(orderBy, "-")
	at := func(r idemsql.Record) time.Time {
		return map[string]time.Time{"created_at": r.CreatedAt, "updated_at": r.UpdatedAt, "lease_until": r.LeaseUntil}[strings.TrimPrefix(orderBy, "-")]
	}
	for i := 1; orderBy != "" && i < len(rows); i++ {
		a, b := at(fx.rows[auditString(t, rows[i-1]["idem_key"])]), at(fx.rows[auditString(t, rows[i]["idem_key"])])
		if desc && a.Before(b) || !desc && b.Before(a) {
			t.Errorf("rows not ordered by %s: %v", orderBy, rows)
		}
	}
	var want, got []string
	for k, r := range fx.rows {
		if keep(r) {
			want = append(want, k)
		}
	}
	for _, row := range rows {
		k := auditString(t, row["idem_key"])
		got = append(got, k)
		r, ok := fx.rows[k]
		if !ok {
			t.Fatalf("a row for %q, which the table does not hold", k)
		}
		fx.wantColumns(t, r, row)
	}
	sorted := slices.Clone(got)
	sort.Strings(sorted)
	sort.Strings(want)
	if len(want) == 0 || !slices.Equal(sorted, want) {
		t.Fatalf("keys %q, want %q", got, want)
	}
}

// wantColumns checks the columns that name a column of the table.
func (fx *auditFixture) wantColumns(t *testing.T, r idemsql.Record, row auditRow) {
	t.Helper()
	for col, v := range row {
		switch col {
		case "attempt":
			if auditInt(t, v) != r.Attempt {
				t.Errorf("%s: attempt %v, want %d", r.Key, v, r.Attempt)
			}
		case "status", "owner", "error_class", "error_message":
			want := map[string]string{"status": r.Status, "owner": r.Owner, "error_class": r.ErrorClass, "error_message": r.ErrorMessage}[col]
			if got := auditString(t, v); got != want {
				t.Errorf("%s: %s %q, want %q", r.Key, col, got, want)
			}
		case "created_at", "updated_at", "completed_at", "expires_at", "lease_until":
			want := map[string]time.Time{"created_at": r.CreatedAt, "updated_at": r.UpdatedAt, "completed_at": r.CompletedAt,
				"expires_at": r.ExpiresAt, "lease_until": r.LeaseUntil}[col]
			auditSameTime(t, r.Key+": "+col, v, want)
		}
	}
}

func auditString(t *testing.T, v any) string {
	t.Helper()
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	t.Fatalf("a %T where text was wanted: %v", v, v)
	return ""
}

func auditFloat(t *testing.T, v any) float64 {
	t.Helper()
	switch v := v.(type) {
	case int64:
		return float64(v)
	case float64:
		return v
	case bool:
		if v {
			return 1
		}
		return 0
	}
	f, err := strconv.ParseFloat(auditString(t, v), 64)
	if err != nil {
		t.Fatalf("a number was wanted: %v", err)
	}
	return f
}

func auditInt(t *testing.T, v any) int64 {
	t.Helper()
	f := auditFloat(t, v)
	if f != math.Trunc(f) {
		t.Fatalf("an integer was wanted: %v", v)
	}
	return int64(f)
}

// auditTime reads a time column: a time (PostgreSQL, MySQL with
// parseTime), or the text SQLite's strftime gives; zero for NULL.
func auditTime(t *testing.T, v any) time.Time {
	t.Helper()
	if tm, ok := v.(time.Time); ok {
		return tm.UTC()
	}
	s := auditString(t, v)
	if s == "" {
		return time.Time{}
	}
	tm, err := time.Parse("2006-01-02 15:04:05.999999", s)
	if err != nil {
		t.Fatalf("a time was wanted: %v", err)
	}
	return tm
}

// auditSameTime checks a time column against the read API's value, to
// the millisecond SQLite keeps.
func auditSameTime(t *testing.T, what string, v any, want time.Time) {
	t.Helper()
	got := auditTime(t, v)
	if got.IsZero() != want.IsZero() || got.Sub(want).Abs() >= time.Millisecond {
		t.Errorf("%s %v, want %v", what, got, want)
	}
}

// auditInterval reads PostgreSQL's interval as pgx's stdlib gives it:
// text, [-]HH:MM:SS[.ffffff], with days before it.
func auditInterval(t *testing.T, v any) time.Duration {
	t.Helper()
	s := auditString(t, v)
	m := regexp.MustCompile(`^(?:(\d+) days? )?(-?)(\d+):(\d+):(\d+(?:\.\d+)?)$`).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("an interval was wanted: %q", s)
	}
	days, _ := strconv.Atoi(m[1])
	h, _ := strconv.Atoi(m[3])
	mi, _ := strconv.Atoi(m[4])
	sec, _ := strconv.ParseFloat(m[5], 64)
	d := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(sec*float64(time.Second))
	if m[2] == "-" {
		d = -d
	}
	return d
}

// auditCharge is a result with an id, as the key recipe reads one.
type auditCharge struct {
	ID     int64 `json:"id"`
	Amount int64 `json:"amount"`
}

// TestAuditRecipes runs every query of docs/audit.md, as written, on its
// database, on a table with a key in every state, and checks its answer
// against the read API: the keys it promises, in its order, and what each
// column means (a released_at that is the release's time, a stale_for
// that is the time since the lease ran out).
func TestAuditRecipes(t *testing.T) {
	qs := auditQueries(t)
	perName := map[string]map[string]int{}
	for _, q := range qs {
		if perName[q.name] == nil {
			perName[q.name] = map[string]int{}
		}
		perName[q.name][q.dialect]++
	}
	for name, per := range perName {
		if per["postgres"] != 1 || per["mysql"] != 1 || per["sqlite"] != 1 {
			t.Errorf("docs/audit.md: recipe %s has blocks %v, want one for each database", name, per)
		}
		if auditChecks[name] == nil {
			t.Errorf("docs/audit.md: recipe %s has no check in this test", name)
		}
	}
	for name := range auditChecks {
		if perName[name] == nil {
			t.Errorf("a check for recipe %s, which docs/audit.md does not have", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, b := range backends {
		if b.name == "postgres-pgx" {
			continue // the same server as postgres-stdlib
		}
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			fx := makeAuditFixture(t, e)
			for _, q := range qs {
				if q.dialect != b.dialect {
					continue
				}
				t.Run(q.name, func(t *testing.T) {
					query := strings.ReplaceAll(q.sql, "idempotency_keys", e.table)
					rows, types := auditRun(t, e.db, query)
					defer func() {
						if t.Failed() {
							t.Logf("docs/audit.md:%d:\n%s\nrows: %v", q.line, query, rows)
						}
					}()
					// A key is bytes on MySQL (VARBINARY), which its client
					// shows as hex: the recipes convert it to text.
					for col, typ := range types {
						if strings.Contains(col, "key") || col == "namespace" {
							if strings.Contains(typ, "BINARY") || strings.Contains(typ, "BLOB") {
								t.Errorf("column %s is %s, not text", col, typ)
							}
						}
					}
					auditChecks[q.name](t, fx, rows)
				})
			}
		})
	}
}

// auditRun runs a recipe and returns its rows and its columns' types.
func auditRun(t *testing.T, db *sql.DB, query string) ([]auditRow, map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		t.Fatalf("%v\n%s", err, query)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	cts, err := rows.ColumnTypes()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, ct := range cts {
		types[ct.Name()] = ct.DatabaseTypeName()
	}
	var out []auditRow
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := auditRow{}
		for i, c := range cols {
			row[c] = vals[i]
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%v\n%s", err, query)
	}
	return out, types
}

// makeAuditFixture is the read API's fixture, with a key whose result has
// an id, a lease claim a sweep abandoned a day ago, and a claim released
// between two readings of the database's clock.
func makeAuditFixture(t *testing.T, e *env) *auditFixture {
	t.Helper()
	ctx := context.Background()
	makeInspectFixture(t, e)
	fx := &auditFixture{chargeID: 17, staleFrom: 5 * time.Second}
	if _, err := idemsql.Run(ctx, e.store, "charge:order-1", func(context.Context, *sql.Tx) (auditCharge, error) {
		return auditCharge{ID: fx.chargeID, Amount: 1999}, nil
	}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, "INSERT INTO "+e.table+" (idem_key, status, error_class, error_message, attempt, owner, lease_until, created_at, updated_at, completed_at, expires_at) "+
		"VALUES (?, 'failed', 'abandoned', 'lease ran out', 2, 'gone', "+e.secondsAgo(86300)+", "+e.secondsAgo(86400)+", "+e.secondsAgo(86000)+", "+e.secondsAgo(86000)+", "+e.secondsAgo(60)+")",
		"pay:abandoned")
	clock := func() time.Time {
		st, err := idemsql.Stats(ctx, e.store)
		if err != nil {
			t.Fatal(err)
		}
		return st.ReadAt
	}
	fx.releasedAt = "refund:released"
	c, err := opsFor(e.store).claim(ctx, fx.releasedAt, idemsql.Options{Lease: time.Hour})
	if err != nil || !c.Held {
		t.Fatalf("claim: %+v %v", c, err)
	}
	fx.releaseFrom = clock()
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}
	fx.releaseTo = clock()
	fx.rows = map[string]idemsql.Record{}
	for f := (idemsql.ListFilter{Limit: idemsql.MaxListLimit}); ; {
		recs, next, err := idemsql.List(ctx, e.store, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			fx.rows[r.Key] = r
		}
		if next == "" {
			break
		}
		f.After = next
	}
	r, _, err := idemsql.Lookup(ctx, e.store, "charge:order-1")
	if err != nil {
		t.Fatal(err)
	}
	fx.chargeResult = r.Result
	fx.now = clock()
	return fx
}
