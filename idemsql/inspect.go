package idemsql

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/idemsql/idemsql/idemdriver"
)

// The read API: what a key holds, which keys match a filter, and counts
// over the table, for tools, tests and support staff, with no SQL of their
// own per database. It only reads: no locking read, nothing that a claim,
// a takeover or a sweep would wait for.

var _ idemdriver.Rows = (*sql.Rows)(nil)

// Lease states, in Record.Lease and ListFilter.Lease: who holds a key.
const (
	// LeaseNone: no claim is held; the row's outcome is recorded (completed
	// or failed).
	LeaseNone = "none"
	// LeaseLive: a lease-mode holder's lease has not run out.
	LeaseLive = "live"
	// LeaseStale: a lease-mode holder's lease ran out without an outcome:
	// the holder died or hung. The next call with the key takes it over,
	// and so does [Sweep].
	LeaseStale = "stale"
	// LeaseReleased: the holder ended its lease on purpose ([ReleasedClass]:
	// fn failed, [Lease.Release], [ResolveReleased]). The next call takes
	// the key over at once, with the same downstream key.
	LeaseReleased = "released"
	// LeaseAbandoned: an in_progress row without a lease: an atomic-mode
	// claim that was committed without an outcome. Calls get
	// [ErrAbandoned].
	LeaseAbandoned = "abandoned"
)

func validLease(l string) bool {
	switch l {
	case LeaseNone, LeaseLive, LeaseStale, LeaseReleased, LeaseAbandoned:
		return true
	}
	return false
}

// Record is one row of the idempotency table, as [Lookup] and [List] read
// it. Times are UTC, from the database's clock; a zero time is a NULL
// column.
type Record struct {
	Key string
	// Status is [StatusInProgress], [StatusCompleted] or [StatusFailed].
	Status string
	// Attempt is 1 on the first claim and grows by one on every takeover
	// and every new claim after the key's retention ran out.
	Attempt int64
	// Owner is the owner column: the claim token of the latest holder
	// (host/pid/id and a number or random suffix).
	Owner string
	// Fingerprint is the request fingerprint the key was claimed with
	// ([Options.Fingerprint]); empty for none.
	Fingerprint []byte
	// Result is the stored result, as encoded (JSON), for a completed row;
	// nil otherwise, and always nil in a [List]. Decode it with
	// [Record.Decode].
	Result json.RawMessage
	// ErrorClass and ErrorMessage are a recorded failure (a failed row), or
	// why a lease was released ([ReleasedClass], an in_progress row).
	ErrorClass, ErrorMessage string
	// Lease says who holds the key, one of the Lease constants; LeaseUntil
	// is the lease's deadline (zero for an atomic-mode row).
	Lease      string
	LeaseUntil time.Time
	CreatedAt  time.Time // when the key was claimed (claimed anew, after its retention ran out)
	UpdatedAt  time.Time
	// CompletedAt is when the outcome was recorded; zero while in_progress.
	CompletedAt time.Time
	// ExpiresAt is the end of the key's retention.
	ExpiresAt time.Time
	// Expired reports that ExpiresAt has passed. A completed or failed row
	// is then treated as absent: the next call with the key runs again,
	// and [Purge] deletes it. An in_progress row is never free by age.
	Expired bool
	// ReadAt is the database's clock when the row was read: compare the
	// times above with it, not with the local clock.
	ReadAt time.Time
	// DownstreamKey is the key a lease-mode holder of this claim passes to
	// the external system ([Claim.DownstreamKey]): Key + ":" + CreatedAt
	// in unix milliseconds. It is meaningless for an atomic-mode row.
	DownstreamKey string
	// Steps is the stored progress of a [RunSteps] call, one entry per
	// step begun; nil for other keys.
	Steps []StepRecord

	codec Codec
}

// Decode decodes the stored result into v with the store's codec. It
// returns an error matching [ErrDecode] when the row has no result (it is
// not completed, or it came from [List]) or the result does not decode
// into v.
func (r Record) Decode(v any) error {
	if r.Result == nil {
		return &Error{Op: "decode", Key: r.Key, Kind: ErrDecode, Err: fmt.Errorf("no stored result (status %s)", r.Status)}
	}
	c := r.codec
	if c == nil {
		c = JSON
	}
	if err := c.Unmarshal(r.Result, v); err != nil {
		return &Error{Op: "decode", Key: r.Key, Kind: ErrDecode, Err: err}
	}
	return nil
}

// Lookup reads the key's row. found is false, with a nil error, when the
// table holds no row for the key; a row past its retention is found, with
// Expired set. It runs one read-only statement: on database/sql outside
// any transaction, on pgx in a transaction at the server's default
// isolation level that it rolls back. It takes no lock, so a claim never
// waits for it.
func Lookup[X any](ctx context.Context, s *Store[X], key string) (r Record, found bool, err error) {
	if err := ValidateKey(key); err != nil {
		return Record{}, false, err
	}
	in, err := newInspector(s)
	if err != nil {
		return Record{}, false, err
	}
	err = readDB(ctx, s, func(rd reader) error {
		r, err = in.scanRecord(rd.QueryRow(ctx, in.is.Lookup, key), true)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return nil
	})
	if err != nil {
		return Record{}, false, in.s.dbError(ctx, "lookup", key, err)
	}
	return r, found, nil
}

// ListFilter chooses the rows [List] returns. The zero value lists every
// row, DefaultListLimit at a time.
type ListFilter struct {
	// Status keeps rows with this status ([StatusInProgress],
	// [StatusCompleted], [StatusFailed]); "" keeps any.
	Status string
	// Lease keeps rows in this lease state ([LeaseStale]: claims whose
	// holder died; [LeaseReleased]: claims ended on purpose); "" keeps any.
	Lease string
	// Sweepable keeps the rows [Sweep] would resolve now: stale claims,
	// claims without a lease ([LeaseAbandoned]), and released claims past
	// their retention; not those [Options.SweepReleased] adds.
	Sweepable bool
	// Purgeable keeps the rows [Purge] would delete now: completed or
	// failed, past their retention.
	Purgeable bool
	// OlderThan keeps rows claimed at least this long ago (created_at, by
	// the database's clock); 0 keeps any.
	OlderThan time.Duration
	// Prefix keeps keys that start with it, byte for byte (no wildcards).
	Prefix string
	// After continues a listing: keys after it. Pass the next that the
	// previous page's [List] returned.
	After string
	// Limit is the most rows returned: 1 to [MaxListLimit]; 0 means
	// [DefaultListLimit].
	Limit int
}

// Bounds of [ListFilter.Limit].
const (
	DefaultListLimit = 100
	MaxListLimit     = 10000
)

// List returns the rows that match f, ordered by key (byte order), one
// page at a time, without their results ([Lookup] a key for its result).
// next is the filter's After for the next page; "" when this page is the
// last. Pages are keyset-paginated, so a
// listing costs the same on page 1000 as on page 1, and rows that change
// between pages are neither skipped twice nor lost, except where their key
// moved past the cursor. Each page is one read-only statement, taken as
// [Lookup] takes its own.
func List[X any](ctx context.Context, s *Store[X], f ListFilter) (records []Record, next string, err error) {
	args, limit, err := f.args()
	if err != nil {
		return nil, "", err
	}
	in, err := newInspector(s)
	if err != nil {
		return nil, "", err
	}
	var recs []Record
	err = readDB(ctx, s, func(rd reader) error {
		recs, err = in.list(ctx, rd, args, limit+1)
		return err
	})
	if err != nil {
		return nil, "", in.s.dbError(ctx, "list", "", err)
	}
	if len(recs) > limit {
		recs = recs[:limit]
		next = recs[limit-1].Key
	}
	return recs, next, nil
}

// listArgs are the arguments of InspectStatements.List, but the limit.
type listArgs struct {
	status, lease        string
	sweepable, purgeable bool
	older                int64
	after, from, to      string
}

func (a listArgs) values(limit int) []any {
	return []any{a.status, a.lease, a.sweepable, a.purgeable, a.older, a.after, a.from, a.to, int64(limit)}
}

func (f ListFilter) args() (listArgs, int, error) {
	a := listArgs{status: f.Status, lease: f.Lease, sweepable: f.Sweepable, purgeable: f.Purgeable,
		after: f.After, from: f.Prefix, to: keysEnd}
	switch f.Status {
	case "", StatusInProgress, StatusCompleted, StatusFailed:
	default:
		return a, 0, fmt.Errorf("%w: unknown status %q", ErrInvalidOption, f.Status)
	}
	if f.Lease != "" && !validLease(f.Lease) {
		return a, 0, fmt.Errorf("%w: unknown lease state %q", ErrInvalidOption, f.Lease)
	}
	if f.OlderThan < 0 {
		return a, 0, fmt.Errorf("%w: OlderThan %v is negative", ErrInvalidOption, f.OlderThan)
	}
	a.older = f.OlderThan.Microseconds()
	if f.Prefix != "" {
		if err := ValidateKey(f.Prefix); err != nil {
			return a, 0, fmt.Errorf("prefix: %w", err)
		}
		if end, ok := prefixEnd(f.Prefix); ok {
			a.to = end
		}
	}
	if f.After != "" {
		if err := ValidateKey(f.After); err != nil {
			return a, 0, fmt.Errorf("after: %w", err)
		}
	}
	limit := f.Limit
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > MaxListLimit:
		return a, 0, fmt.Errorf("%w: limit %d is outside [1, %d]", ErrInvalidOption, f.Limit, MaxListLimit)
	}
	return a, limit, nil
}

// keysEnd is above every key: 64 times U+10FFFF is 256 bytes, and a valid
// key of at most 255 bytes of UTF-8 is either a prefix of it or smaller at
// the first byte where they differ (no UTF-8 lead byte exceeds F4, none
// after F4 exceeds 8F, no continuation byte exceeds BF). It is valid UTF-8,
// so every database takes it as text.
var keysEnd = strings.Repeat(string(rune(utf8.MaxRune)), MaxKeyLen/utf8.UTFMax+1)

// prefixEnd is the least string above every string that starts with p:
// p's last character that is not U+10FFFF, incremented, with what follows
// it cut. UTF-8 orders bytes as it orders code points, so the range
// [p, end) holds exactly the keys with prefix p, and end is valid UTF-8.
// ok is false when p is all U+10FFFF (no such string).
func prefixEnd(p string) (end string, ok bool) {
	rs := []rune(p)
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		if r == utf8.MaxRune {
			continue
		}
		r++
		if r >= 0xD800 && r <= 0xDFFF { // surrogates are not characters
			r = 0xE000
		}
		rs[i] = r
		return string(rs[:i+1]), true
	}
	return "", false
}

// TableStats counts the rows of the table, as [Stats] reads them.
type TableStats struct {
	Total, InProgress, Completed, Failed int64
	// LiveLeases, StaleLeases, Released and Abandoned split the in_progress
	// rows by lease state ([LeaseLive], [LeaseStale], [LeaseReleased],
	// [LeaseAbandoned]).
	LiveLeases, StaleLeases, Released, Abandoned int64
	// Retried counts rows with attempt > 1: keys taken over in lease mode,
	// or claimed anew after their retention ran out.
	Retried int64
	// Sweepable counts the rows [Sweep] would resolve now, as
	// [ListFilter].Sweepable lists them.
	Sweepable int64
	// Purgeable counts completed and failed rows past their retention,
	// which [Purge] would delete now.
	Purgeable int64
	// OldestInProgress is the key of the in_progress row claimed longest
	// ago, and OldestInProgressAt its created_at; "" and zero for none.
	OldestInProgress   string
	OldestInProgressAt time.Time
	// ReadAt is the database's clock when the counts were taken.
	ReadAt time.Time
}

// Stats counts the table's rows by status and lease state, in one
// read-only statement that scans the whole table: cheap for an operator's
// look, not for a hot path. Taken as [Lookup] takes its own.
func Stats[X any](ctx context.Context, s *Store[X]) (TableStats, error) {
	in, err := newInspector(s)
	if err != nil {
		return TableStats{}, err
	}
	var st TableStats
	err = readDB(ctx, s, func(rd reader) error {
		var oldest sql.NullString
		var oldestAt sql.NullInt64
		var now int64
		err := rd.QueryRow(ctx, in.is.Stats).Scan(&st.Total, &st.InProgress, &st.Completed, &st.Failed,
			&st.LiveLeases, &st.StaleLeases, &st.Released, &st.Abandoned, &st.Retried, &st.Sweepable, &st.Purgeable,
			&oldest, &oldestAt, &now)
		if err != nil {
			return err
		}
		st.OldestInProgress, st.OldestInProgressAt, st.ReadAt = oldest.String, nullMicros(oldestAt), time.UnixMicro(now).UTC()
		return nil
	})
	if err != nil {
		return TableStats{}, in.s.dbError(ctx, "stats", "", err)
	}
	return st, nil
}

// inspector is one read's view of a store.
type inspector struct {
	s  *core
	is idemdriver.InspectStatements
}

func newInspector[X any](st *Store[X]) (*inspector, error) {
	if st == nil {
		return nil, errNoStore
	}
	d, ok := st.dialect.(idemdriver.InspectDialect)
	if !ok {
		return nil, fmt.Errorf("%w: dialect %s has no read API", ErrInvalidOption, st.dialect.Name())
	}
	return &inspector{s: &st.core, is: d.InspectStatements(st.table())}, nil
}

// reader runs the read API's statements.
type reader interface {
	QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row
	// query runs a query of many rows; nil when the connection cannot.
	query() func(ctx context.Context, query string, args ...any) (idemdriver.Rows, error)
}

// readDB runs f on the store's pool: outside any transaction where the
// driver can ([idemdriver.Reader]: database/sql's), so that each statement
// is its own snapshot, and no isolation level or BEGIN IMMEDIATE (SQLite's
// _txlock) turns the read into one that locks or waits for writers; else in
// a transaction that is rolled back.
func readDB[X any](ctx context.Context, s *Store[X], f func(reader) error) error {
	if r, ok := s.driver.(idemdriver.Reader); ok {
		return f(txReader{ex: r, q: r.Query})
	}
	tx, err := s.driver.Begin(ctx, sql.LevelDefault)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	r := txReader{ex: tx}
	if q, ok := any(tx).(idemdriver.RowsQuerier); ok {
		r.q = q.Query
	}
	return f(r)
}

type txReader struct {
	ex interface {
		QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row
	}
	q func(ctx context.Context, query string, args ...any) (idemdriver.Rows, error)
}

func (r txReader) QueryRow(ctx context.Context, query string, args ...any) idemdriver.Row {
	return r.ex.QueryRow(ctx, query, args...)
}

func (r txReader) query() func(ctx context.Context, query string, args ...any) (idemdriver.Rows, error) {
	return r.q
}

// list reads up to limit rows: in one statement where the connection runs
// queries of many rows, else one statement per row, each continuing after
// the last key read.
func (in *inspector) list(ctx context.Context, rd reader, a listArgs, limit int) ([]Record, error) {
	var recs []Record
	if q := rd.query(); q != nil {
		rows, err := q(ctx, in.is.List, a.values(limit)...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := in.scanRecord(rows, false)
			if err != nil {
				return nil, err
			}
			recs = append(recs, r)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return recs, rows.Close()
	}
	for len(recs) < limit {
		r, err := in.scanRecord(rd.QueryRow(ctx, in.is.List, a.values(1)...), false)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
		a.after = r.Key
	}
	return recs, nil
}

// scanRecord scans a row of InspectStatements' columns.
func (in *inspector) scanRecord(row idemdriver.Row, withResult bool) (Record, error) {
	r := Record{codec: in.s.defaults.codec}
	var owner, errClass, errMsg sql.NullString
	var result, steps []byte
	var lease string
	var leaseUntil, completed sql.NullInt64
	var created, updated, expires, now int64
	err := row.Scan(&r.Key, &r.Status, &r.Attempt, &owner, &r.Fingerprint, &result, &errClass, &errMsg,
		&lease, &leaseUntil, &created, &updated, &completed, &expires, &now, &steps)
	if err != nil {
		return Record{}, err
	}
	r.Steps = stepRecords(steps)
	r.Owner, r.ErrorClass, r.ErrorMessage = owner.String, errClass.String, errMsg.String
	if withResult && result != nil {
		r.Result = json.RawMessage(result)
	}
	r.Lease = lease
	if !validLease(r.Lease) {
		return Record{}, fmt.Errorf("%w: lease state %q", ErrUnexpectedState, lease) // Lookup's error carries the key
	}
	r.LeaseUntil, r.CompletedAt = nullMicros(leaseUntil), nullMicros(completed)
	r.CreatedAt, r.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	r.ExpiresAt, r.ReadAt = time.UnixMicro(expires).UTC(), time.UnixMicro(now).UTC()
	r.Expired = expires <= now
	// As lease mode builds it from the claim's generation: created_at in
	// unix milliseconds, rounded down.
	r.DownstreamKey = r.Key + ":" + strconv.FormatInt(floorDiv(created, 1000), 10)
	return r, nil
}

func nullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
