package integration

import (
	"context"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// auditQuery is one SQL block of docs/audit.md.
type auditQuery struct {
	section, dialect, sql string
}

// auditQueries reads the SQL blocks of docs/audit.md: each is one
// statement whose first line names the database it is for.
func auditQueries(t *testing.T) []auditQuery {
	t.Helper()
	b, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	var qs []auditQuery
	section := ""
	block := regexp.MustCompile("(?s)^```sql\n(.*?)```")
	dialectOf := map[string]string{"-- PostgreSQL": "postgres", "-- MySQL, MariaDB": "mysql", "-- SQLite": "sqlite"}
	text := string(b)
	for i := 0; i < len(text); {
		rest := text[i:]
		if strings.HasPrefix(rest, "## ") {
			section = strings.TrimSpace(strings.SplitN(rest[3:], "\n", 2)[0])
		}
		if m := block.FindStringSubmatch(rest); m != nil {
			first, body, _ := strings.Cut(m[1], "\n")
			d, ok := dialectOf[first]
			if !ok {
				t.Fatalf("docs/audit.md, %s: a SQL block begins with %q, not a database's name", section, first)
			}
			qs = append(qs, auditQuery{section: section, dialect: d, sql: body})
			i += len(m[0])
			continue
		}
		nl := strings.IndexByte(rest, '\n')
		if nl < 0 {
			break
		}
		i += nl + 1
	}
	return qs
}

// TestAuditRecipes runs every query of docs/audit.md on its database, on a
// table with a key in every state, and checks that each answers with rows:
// the recipes do run as written.
func TestAuditRecipes(t *testing.T) {
	qs := auditQueries(t)
	perDialect := map[string]int{}
	for _, q := range qs {
		perDialect[q.dialect]++
	}
	if len(qs) < 27 || perDialect["postgres"] != perDialect["mysql"] || perDialect["mysql"] != perDialect["sqlite"] {
		t.Fatalf("docs/audit.md has %d SQL blocks, by database %v: want each recipe for each", len(qs), perDialect)
	}
	for _, b := range backends {
		if b.name == "postgres-pgx" {
			continue // the same server as postgres-stdlib
		}
		t.Run(b.name, func(t *testing.T) {
			e := b.setup(t)
			makeInspectFixture(t, e)
			var runs atomic.Int64
			e.mustGuarded("charge:order-1", 1999, &runs)
			// A lease claim a sweep abandoned a day ago, past its retention.
			e.exec(t, "INSERT INTO "+e.table+" (idem_key, status, error_class, error_message, attempt, owner, created_at, updated_at, completed_at, expires_at) "+
				"VALUES (?, 'failed', 'abandoned', 'lease ran out', 1, 'gone', "+e.secondsAgo(86400)+", "+e.secondsAgo(86000)+", "+e.secondsAgo(86000)+", "+e.secondsAgo(60)+")",
				"pay:abandoned")
			ran := 0
			for _, q := range qs {
				if q.dialect != b.dialect {
					continue
				}
				ran++
				query := strings.ReplaceAll(q.sql, "idempotency_keys", e.table)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				rows, err := e.db.QueryContext(ctx, query)
				if err != nil {
					cancel()
					t.Fatalf("%s: %v\n%s", q.section, err, query)
				}
				n := 0
				for rows.Next() {
					n++
				}
				err = rows.Err()
				rows.Close()
				cancel()
				if err != nil {
					t.Fatalf("%s: %v\n%s", q.section, err, query)
				}
				if n == 0 {
					t.Errorf("%s: no rows on a table with a key in every state\n%s", q.section, query)
				}
			}
			if ran != perDialect[b.dialect] {
				t.Fatalf("ran %d queries, want %d", ran, perDialect[b.dialect])
			}
		})
	}
}
