package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"path"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

// MigrationStatus is one of the target's migrations and whether the
// database has applied it.
type MigrationStatus struct {
	Version int64
	// Source is the migration's file name.
	Source  string
	Applied bool
	// AppliedAt is when it was applied, as goose recorded it; zero while
	// pending.
	AppliedAt time.Time
}

// Status reports the target's migrations, oldest first, and which of them
// the database has applied, from the version table [Up] keeps for the
// target ([VersionTable], in the table's schema). It changes nothing: where
// the version table does not exist yet, every migration is pending (goose's
// own status would create the table). On MySQL the DSN needs
// parseTime=true: goose reads its version table's timestamps.
func Status(ctx context.Context, db *sql.DB, target Target) ([]MigrationStatus, error) {
	p, err := provider(ctx, db, target)
	if err != nil {
		return nil, err
	}
	table := target.Table()
	versions := idemdriver.Table{Schema: table.Schema, Name: VersionTable(table.Name)}
	exists, err := tableExists(ctx, db, table.Dialect, versions)
	if err != nil {
		return nil, fmt.Errorf("idemsql migrations: %w", err)
	}
	var out []MigrationStatus
	if !exists {
		for _, s := range p.ListSources() {
			out = append(out, MigrationStatus{Version: s.Version, Source: path.Base(s.Path)})
		}
		return out, nil
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("idemsql migrations: %w", err)
	}
	for _, s := range st {
		out = append(out, MigrationStatus{Version: s.Source.Version, Source: path.Base(s.Source.Path),
			Applied: s.State == goose.StateApplied, AppliedAt: s.AppliedAt})
	}
	return out, nil
}

// tableExists looks t up in the catalog, where the dialect's statements
// would find it: PostgreSQL's search_path, the connection's MySQL database.
func tableExists(ctx context.Context, db database.DBTxConn, dialect string, t idemdriver.Table) (bool, error) {
	var q string
	var args []any
	switch dialect {
	case "postgres":
		q, args = `SELECT to_regclass($1) IS NOT NULL`, []any{t.Quote(`"`)}
	case "mysql":
		q = `SELECT COUNT(*) > 0 FROM information_schema.tables WHERE table_schema = COALESCE(NULLIF(?, ''), DATABASE()) AND table_name = ?`
		args = []any{t.Schema, t.Name}
	case "sqlite":
		q, args = `SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?`, []any{t.Name}
	default:
		return false, fmt.Errorf("%w: no migrations for dialect %q", idemsql.ErrInvalidOption, dialect)
	}
	var ok bool
	err := db.QueryRowContext(ctx, q, args...).Scan(&ok)
	return ok, err
}
