package idemdriver

import (
	"context"
)

// Dialect is what one database contributes: the SQL text of each operation
// and the meaning of its driver's errors. The packages idempostgres,
// idemmysql and idemsqlite provide one per database; the algorithm stays in
// idemsql.
type Dialect interface {
	// Name identifies the dialect in errors and logs ("postgres", "mysql",
	// "sqlite").
	Name() string
	// Statements returns the SQL for the table. Its names have already
	// been checked to be lowercase identifiers; the dialect quotes them.
	Statements(t Table) Statements
	// Classify says what a driver error means. Unknown errors are KindOther.
	Classify(err error) ErrorKind
}

// Table names a store's idempotency table: Name, in Schema when Schema is
// not empty (idemsql.Options.Schema), on a database of the dialect named
// Dialect ("postgres", "mysql", "sqlite"), which the migrations need.
type Table struct {
	Dialect      string
	Schema, Name string
}

// String is the table's name as the migrations write it: schema.name, or
// name.
func (t Table) String() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// Quote quotes each part of the name with q and joins them with a dot:
// Quote(`"`) gives "schema"."name".
func (t Table) Quote(q string) string {
	if t.Schema == "" {
		return q + t.Name + q
	}
	return q + t.Schema + q + "." + q + t.Name + q
}

// SchemaSupport is implemented by dialects whose tables may live in a named
// schema (idemsql.Options.Schema).
type SchemaSupport interface {
	SupportsSchemas() bool
}

// Executor runs statements in a transaction: [Driver.Bind] adapts the
// caller's, and a [Tx] is one. [SQL]'s adapt a *sql.Tx, idempostgres's a
// pgx.Tx.
type Executor interface {
	// Exec runs a statement and reports the rows it affected.
	Exec(ctx context.Context, query string, args ...any) (rowsAffected int64, err error)
	// QueryRow runs a query that returns at most one row. Scan on the result
	// must report sql.ErrNoRows (or an error that unwraps to it) when there
	// is none.
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Row is the result of [Executor.QueryRow].
type Row interface {
	Scan(dest ...any) error
}

// Rows is the result of [RowsQuerier.Query]. *sql.Rows is one.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// RowsQuerier is implemented by an [Executor] that runs queries returning
// many rows ([SQL]'s and idempostgres's do). Sweep, Purge and List use it;
// over an Executor without it they read one row per statement.
type RowsQuerier interface {
	Query(ctx context.Context, query string, args ...any) (Rows, error)
}

// ErrorKind is what a [Dialect] says a driver error means.
type ErrorKind int

const (
	KindOther ErrorKind = iota
	// KindDuplicateKey: a plain INSERT hit the primary key (MySQL 1062). Only
	// meaningful for dialects whose claim reports duplicates as errors.
	KindDuplicateKey
	// KindRetryable: the database refused the transaction and it must be
	// run again; it is rolled back or aborted, and nothing sent on it
	// afterwards can run outside it (PostgreSQL 40001, 40P01).
	KindRetryable
	// KindTxEnded: the database rolled the transaction back by itself and
	// the session left it, so a statement sent afterwards would run outside
	// any transaction, in autocommit (MySQL 1213 and Galera's aborts, 1020,
	// 1206; the SQLite errors that roll back). Retryable. The core sends
	// nothing more on the transaction after it.
	KindTxEnded
	// KindConnLost: the connection broke or was closed, or (SQLite) an I/O
	// error ended the transaction. Before COMMIT it is retryable: the
	// transaction is over. During COMMIT the outcome is unknown: the server
	// may have committed before the connection broke, and SQLite's WAL
	// recovery may find committed a transaction whose COMMIT reported an
	// I/O error.
	KindConnLost
	// KindLockTimeout: a lock wait timed out (PostgreSQL 55P03, MySQL 1205).
	KindLockTimeout
	// KindStatementTimeout: the statement ran past the server's statement
	// time limit (PostgreSQL 57014, MariaDB 1969, MySQL 3024).
	KindStatementTimeout
	// KindTxAborted: the transaction can no longer run statements
	// (PostgreSQL 25P02, a transaction already committed or rolled back)
	// and will roll back whatever the caller does. Met after fn ran (storing
	// the result, committing), it means fn went on past an error that
	// aborted the transaction: retryable, like the claim that MySQL loses
	// the same way.
	KindTxAborted
	// KindStoreUnusable: the statement cannot run against the store's
	// table as it is, whichever key it names: the table, its schema or a
	// column does not exist (PostgreSQL 42P01, 3F000, 42703; MySQL 1146,
	// 1049, 1054; SQLite "no such table", "no such column"), the user
	// lacks a privilege on it (PostgreSQL 42501, MySQL 1142), or the
	// server cannot parse the statement (too old a version). Another try
	// meets it again. Met in the library's own statements, it is
	// idemsql.ErrStoreUnusable; in fn's, it is fn's own error.
	KindStoreUnusable
)
