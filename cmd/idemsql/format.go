package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/idemsql/idemsql/idemsql"
)

// timeLayout shows times in UTC to the millisecond.
const timeLayout = "2006-01-02 15:04:05.000Z07:00"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(timeLayout)
}

// fmtAge says how far t is from now, by the database's clock: "3m12s ago",
// "in 23h59m".
func fmtAge(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	switch {
	case d > 0:
		return "in " + fmtDur(d)
	case d < 0:
		return fmtDur(-d) + " ago"
	}
	return "now"
}

// fmtDur rounds a duration for people: milliseconds under a second,
// seconds under an hour, minutes under two days, then days and hours.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	d = d.Round(time.Hour)
	days, hours := d/(24*time.Hour), (d%(24*time.Hour))/time.Hour
	if hours == 0 {
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd%dh", days, hours)
}

var daysRE = regexp.MustCompile(`^(\d+)d(.*)$`)

// parseAge parses a duration as Go writes it, with days too: 90s, 36h,
// 7d, 1d12h.
func parseAge(s string) (time.Duration, error) {
	var days time.Duration
	rest := s
	if m := daysRE.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		days, rest = time.Duration(n)*24*time.Hour, m[2]
		if rest == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad duration %q (want 90s, 15m, 36h, 7d, 1d12h)", s)
	}
	return days + d, nil
}

// durationFlag is a flag.Value for parseAge.
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := parseAge(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

// showKey prints a key as it is, or quoted when it holds spaces or
// characters a terminal would not show, so that a table stays a table.
func showKey(k string) string {
	for _, r := range k {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == '"' {
			return strconv.Quote(k)
		}
	}
	return k
}

// leaseWords says in words who holds a key.
func leaseWords(r idemsql.Record) string {
	switch r.Lease {
	case idemsql.LeaseNone:
		return "none: the outcome is recorded"
	case idemsql.LeaseLive:
		return fmt.Sprintf("live: held until %s (for %s more)", fmtTime(r.LeaseUntil), fmtDur(r.LeaseUntil.Sub(r.ReadAt)))
	case idemsql.LeaseStale:
		return fmt.Sprintf("stale: the lease ran out %s ago without an outcome (the holder died or hung); "+
			"the next call with the key takes it over, and so does `idemsql sweep`", fmtDur(r.ReadAt.Sub(r.LeaseUntil)))
	case idemsql.LeaseReleased:
		// A release is the row's last write; lease_until is the end of its
		// retention.
		return fmt.Sprintf("released %s ago by its holder without an outcome; "+
			"the next call takes it over at once, with the same downstream key", fmtDur(r.ReadAt.Sub(r.UpdatedAt)))
	case idemsql.LeaseAbandoned:
		return "abandoned: in progress without a lease, an atomic-mode claim committed without an outcome; " +
			"calls with the key get ErrAbandoned"
	}
	return string(r.Lease)
}

// jsonRecord is a Record as --json prints it.
type jsonRecord struct {
	Key           string          `json:"key"`
	Status        string          `json:"status"`
	Attempt       int64           `json:"attempt"`
	Owner         string          `json:"owner"`
	Lease         string          `json:"lease"`
	LeaseUntil    *time.Time      `json:"lease_until"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
	CompletedAt   *time.Time      `json:"completed_at"`
	ExpiresAt     time.Time       `json:"expires_at"`
	Expired       bool            `json:"expired"`
	Fingerprint   string          `json:"fingerprint"`
	ErrorClass    string          `json:"error_class,omitempty"`
	ErrorMessage  string          `json:"error_message,omitempty"`
	DownstreamKey string          `json:"downstream_key"`
	Result        json.RawMessage `json:"result,omitempty"`
	Steps         []jsonStep      `json:"steps,omitempty"`
	ReadAt        time.Time       `json:"read_at"`
}

// jsonStep is a step of a RunSteps key's progress as --json prints it.
type jsonStep struct {
	Name     string          `json:"name"`
	State    string          `json:"state"`
	Runs     int             `json:"runs"`
	Result   json.RawMessage `json:"result,omitempty"`
	Class    string          `json:"class,omitempty"`
	Message  string          `json:"message,omitempty"`
	Started  time.Time       `json:"started"`
	Finished *time.Time      `json:"finished,omitempty"`
}

// downstreamKey is the key lease mode hands the external system for the
// row's claim; "" for an atomic-mode row, which has none.
func downstreamKey(r idemsql.Record) string {
	if r.LeaseUntil.IsZero() {
		return ""
	}
	return r.DownstreamKey
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func toJSON(r idemsql.Record) jsonRecord {
	j := jsonRecord{Key: r.Key, Status: r.Status, Attempt: r.Attempt, Owner: r.Owner, Lease: string(r.Lease),
		LeaseUntil: optTime(r.LeaseUntil), CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		CompletedAt: optTime(r.CompletedAt), ExpiresAt: r.ExpiresAt, Expired: r.Expired,
		Fingerprint: hex.EncodeToString(r.Fingerprint), ErrorClass: r.ErrorClass, ErrorMessage: r.ErrorMessage,
		DownstreamKey: downstreamKey(r), ReadAt: r.ReadAt}
	for _, st := range r.Steps {
		j.Steps = append(j.Steps, jsonStep{Name: st.Name, State: st.State, Runs: st.Runs, Result: st.Result,
			Class: st.Class, Message: st.Message, Started: st.Started, Finished: optTime(st.Finished)})
	}
	if r.Result != nil {
		if json.Valid(r.Result) {
			j.Result = r.Result
		} else { // not JSON, against the table's contract: show it as a string
			b, _ := json.Marshal(string(r.Result))
			j.Result = b
		}
	}
	return j
}

// prettyJSON indents a stored result; one that is not JSON comes back as
// it is.
func prettyJSON(raw []byte) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

// count formats an integer with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	if n < 0 {
		return "-" + count(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// plural is "1 row", "2 rows", "1,000 batches".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "ch") || strings.HasSuffix(noun, "s") {
		return count(n) + " " + noun + "es"
	}
	return count(n) + " " + noun + "s"
}
