package idemsql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
)

// ErrStepsChanged: the key's stored progress was made by other code than
// the code resuming it: the step stored at some position has another name
// (or kind: [Step], [StepTx]) than the one the code calls there, or fn
// ended without calling steps that are stored. Nothing ran that had run before, and nothing is
// recorded: the claim is released with its progress, for a deployment
// whose steps match (or for [Forget], on a person's word).
var ErrStepsChanged = errors.New("idemsql: the steps differ from the key's stored progress")

// StepRecord is one step of a [RunSteps] call's stored progress, as
// [Lookup] and [List] read it ([Record].Steps).
type StepRecord struct {
	Name string
	// State is "started" (running, or it died or failed and runs again on
	// resume), "done" (Result holds its result) or "failed" (a [Permanent]
	// error: Class and Message).
	State string
	// Runs counts the runs of the step that were begun: more than one
	// when a holder died, or the step failed with a retryable error, and
	// the step ran again.
	Runs           int
	Result         json.RawMessage
	Class, Message string
	// Started and Finished are the holder's clock (UTC) when the last run
	// began and ended; Finished is zero for a started step.
	Started, Finished time.Time
}

// Steps is the progress of one [RunSteps] call: pass it to [Step] and
// [StepTx]. It is valid only while RunSteps's fn runs, and for one step at
// a time.
type Steps[X any] struct {
	st     *Store[X]
	l      Lease
	doc    stepsDoc
	next   int             // position of the next step fn calls
	names  map[string]bool // names called in this run
	busy   atomic.Bool     // a step is running
	closed atomic.Bool     // fn returned
	// err, once set, ends the run: the claim is lost, a progress write
	// failed, or the steps changed. Every later step returns it.
	err error
}

// The steps column: the input and each step's state.
type stepsDoc struct {
	// Downstream is the claim's downstream key: a document left by an
	// earlier generation of the key (an outcome past its retention that
	// was claimed anew) is not this claim's progress.
	Downstream string          `json:"downstream"`
	Input      json.RawMessage `json:"input"`
	Steps      []stepEntry     `json:"steps"`
}

type stepEntry struct {
	Name     string          `json:"name"`
	Kind     string          `json:"kind"` // stepExternal or stepTx
	State    string          `json:"state"`
	Runs     int             `json:"runs"`
	Result   json.RawMessage `json:"result,omitempty"`
	Class    string          `json:"class,omitempty"`
	Message  string          `json:"message,omitempty"`
	Started  time.Time       `json:"started"`
	Finished *time.Time      `json:"finished,omitempty"`
	// Tx marks a step's transaction's first write, so that its checkpoint
	// can tell that the write is still there (StepsSwap).
	Tx string `json:"tx,omitempty"`
}

const (
	stepStarted = "started"
	stepDone    = "done"
	stepFailed  = "failed"
	maxStepName = 64

	stepExternal = "external" // a Step
	stepTx       = "tx"       // a StepTx
)

// RunSteps runs fn, a sequence of named steps, at most once per key, with
// recovery points: every step's completion is stored with the key's claim,
// so that a run that died, lost its lease or failed with a retryable error
// is resumed by the next call with the key (or by a [Completer]) at its
// first unfinished step. fn calls [Step] for each effect outside the
// database and [StepTx] for each database write, in the same order on
// every run; a step stored done returns its stored result without running.
//
// It claims the key as [RunExternal] does (the same lease, heartbeat,
// fence, takeover and replay; the same options, with
// [Options.RecordFailures] always on), stores in (encoded with the codec)
// with the claim, and records fn's result as the key's outcome: later calls
// replay it (Result.Replayed), as they replay RunExternal's. An error made
// with [Permanent] that fn returns is recorded and replayed as a failure
// ([ErrFailureRecorded]); any other error releases the claim with its
// progress: the next call takes it over at once and resumes.
//
// A resumed run gets the input its first run stored, not the caller's, as
// a replay gets the stored result whatever the caller asked: the stored
// steps were made from it. Give [Options.Fingerprint] to refuse a key reused
// for another request.
//
// Steps are named (1 to 64 bytes of A-Z a-z 0-9 _ . : -), each name once
// per run. When the stored progress does not match the steps fn calls,
// the call returns [ErrStepsChanged] and releases the claim untouched.
//
// What a crash costs: a [StepTx] step runs exactly once (its writes commit
// with its checkpoint). A [Step] step runs again only if its holder died,
// or failed with a retryable error, between marking it started and storing
// its result, and then with the same [Claim.DownstreamKey].
func RunSteps[X, In, T any](ctx context.Context, s *Store[X], key string, in In, fn func(ctx context.Context, s *Steps[X], in In) (T, error), opts ...Options) (Result[T], error) {
	var res Result[T]
	if err := ValidateKey(key); err != nil {
		return res, err
	}
	if fn == nil {
		return res, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	lr, err := newStepsLeaser(s, opts, reflect.TypeFor[T]())
	if err != nil {
		return res, err
	}
	input, err := encode(in, &lr.cfg, isInterface[In]())
	if err != nil {
		return res, err
	}
	ctx, call := lr.s.startCall(ctx, "RunSteps", "lease", key, lr.start)
	defer call.unwinding()
	res, err = runExternal(ctx, lr, key, func(ctx context.Context, c Claim) (T, error) {
		v, _, err := runSteps(ctx, s, Lease{Claim: c, Held: true, lr: lr}, input, &in, fn)
		return v, err
	})
	call.finish(res.Replayed, err)
	return res, err
}

// errKind is the sentinel encode's error matches.
func errKind(err error) error {
	if errors.Is(err, ErrResultTooLarge) {
		return ErrResultTooLarge
	}
	return ErrEncode
}

func newStepsLeaser[X any](s *Store[X], opts []Options, result reflect.Type) (*leaser, error) {
	lr, err := newLeaser(s, opts)
	if err != nil {
		return nil, err
	}
	if want := lr.cfg.lease.result; want != nil && want != result {
		return nil, fmt.Errorf("%w: Options.ResultType[%v] given to RunSteps, whose fn returns %v", ErrInvalidOption, want, result)
	}
	lr.cfg.recordFailures = true
	return lr, nil
}

// Completer is a [SweepHandler] that finishes the [RunSteps] runs nobody
// retries: for each stale claim, it decodes the input stored with the claim
// into In and runs fn, under the sweeper's claim, as RunSteps would resume
// it. fn's result becomes the key's outcome ([ResolveCompleted]); a
// [Permanent] error is recorded as [ResolveAbandoned] with the error's
// class and message; any other error leaves the claim for a later sweep.
//
// A claim that fn failed with a retryable error is released: Sweep hands it
// to a handler only with [Options.SweepReleased] (or once its retention has
// run out). A claim without stored progress (not a RunSteps key, or one
// whose holder died before storing its input) is resolved as Sweep
// without a handler resolves it: abandoned, or, if its holder released it,
// handed back to callers ([ResolveReleased]).
func Completer[X, In, T any](s *Store[X], fn func(ctx context.Context, s *Steps[X], in In) (T, error), opts ...Options) SweepHandler {
	_, err := newStepsLeaser(s, opts, reflect.TypeFor[T]())
	if err == nil && fn == nil {
		err = fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	return func(ctx context.Context, st Stale) (Resolution, error) {
		if err != nil {
			return Resolution{}, err
		}
		lr, err := newStepsLeaser(s, opts, reflect.TypeFor[T]())
		if err != nil {
			return Resolution{}, err
		}
		v, found, err := runSteps(ctx, s, Lease{Claim: st.Claim, Held: true, lr: lr}, nil, nil, fn)
		switch class, permanent := IsPermanent(err); {
		case !found && err == nil && st.Reason == StaleReleased:
			return Resolution{Outcome: ResolveReleased}, nil
		case !found && err == nil:
			return Resolution{Outcome: ResolveAbandoned, Message: "no stored steps to resume"}, nil
		case err == nil:
			return Resolution{Outcome: ResolveCompleted, Result: v}, nil
		case permanent:
			return Resolution{Outcome: ResolveAbandoned, Message: class + ": " + err.Error()}, nil
		default:
			return Resolution{}, err
		}
	}
}

// runSteps runs fn under l, the claim of RunSteps or of a sweeper. input is
// the encoded input of a call, stored unless the claim has progress
// already; a nil input (Completer's) takes the stored one, decoded into a
// new In, and found reports whether there was one.
func runSteps[X, In, T any](ctx context.Context, st *Store[X], l Lease, input []byte, in *In, fn func(context.Context, *Steps[X], In) (T, error)) (v T, found bool, err error) {
	s := &Steps[X]{st: st, l: l, names: map[string]bool{}}
	resumed, err := s.load(ctx, input)
	if err != nil || !resumed && input == nil {
		return v, false, err
	}
	if resumed {
		// A resumed run gets the input its first run stored, as a replay
		// gets the stored result: the steps it hands back were made from it.
		in = new(In)
		if err := l.lr.cfg.codec.Unmarshal(s.doc.Input, in); err != nil {
			return v, true, &Error{Op: "input", Key: l.Key, Kind: ErrDecode, Err: err}
		}
	}
	v, err = fn(ctx, s, *in)
	if !s.busy.CompareAndSwap(false, true) {
		// A step fn started in a goroutine of its own is still running.
		// Whatever it writes later is refused by the fence, which the
		// outcome (or the release) closes.
		s.closed.Store(true)
		return v, true, fmt.Errorf("%w: RunSteps's fn returned while one of its steps was still running", ErrInvalidOption)
	}
	s.closed.Store(true)
	if s.err != nil {
		return v, true, s.err
	}
	_, permanent := IsPermanent(err)
	if (err == nil || permanent) && s.next < len(s.doc.Steps) {
		// About to record an outcome over progress fn never reached.
		return v, true, s.changed(fmt.Errorf("the stored progress has %d steps, the code called %d; next stored: %q",
			len(s.doc.Steps), s.next, s.doc.Steps[s.next].Name))
	}
	return v, true, err
}

// load reads the claim's progress (resumed: there is some), and stores
// input as the progress of a claim that has none.
func (s *Steps[X]) load(ctx context.Context, input []byte) (resumed bool, err error) {
	l := s.l
	var raw sql.NullString
	var held bool
	if err := l.lr.inTx(ctx, "steps", l.Key, func(ex idemdriver.Executor) (bool, error) {
		err := ex.QueryRow(ctx, l.lr.ls.StepsRead, l.Key, l.Attempt, l.Owner).Scan(&raw)
		if errors.Is(err, sql.ErrNoRows) {
			held = false
			return false, nil
		}
		held = true
		if err != nil {
			return false, l.lr.s.dbError(ctx, "steps", l.Key, err)
		}
		return false, nil
	}); err != nil {
		return false, err
	}
	if !held {
		return false, lostError("steps", l.Key, l.Attempt)
	}
	if raw.Valid {
		var doc stepsDoc
		if err := json.Unmarshal([]byte(raw.String), &doc); err != nil {
			return false, &Error{Op: "steps", Key: l.Key, Kind: ErrDecode, Err: err}
		}
		if doc.Downstream == l.DownstreamKey {
			s.doc = doc
			return true, nil
		}
	}
	if input == nil {
		return false, nil
	}
	return false, s.save(ctx, stepsDoc{Downstream: l.DownstreamKey, Input: input})
}

// save writes doc as the claim's progress, fenced, and renews the lease.
func (s *Steps[X]) save(ctx context.Context, doc stepsDoc) error {
	l := s.l
	b, err := json.Marshal(doc)
	if err != nil {
		return &Error{Op: "step", Key: l.Key, Kind: ErrEncode, Err: err}
	}
	us := l.lr.leaseMicros()
	var at time.Time
	if _, err := l.write(ctx, nil, fencedWrite{op: "step",
		stmt: func(ctx context.Context, ex idemdriver.Executor) (int64, error) {
			at = time.Now()
			return ex.Exec(ctx, l.lr.ls.StepsSave, string(b), us, us, l.Key, l.Attempt, l.Owner)
		}}); err != nil {
		// The progress is unknown from here on: no later step may run.
		s.err = err
		return err
	}
	l.clock.renewed(at)
	s.doc = doc
	return nil
}

// with is the progress with step i set to e.
func (s *Steps[X]) with(i int, e stepEntry) stepsDoc {
	doc := s.doc
	doc.Steps = append(make([]stepEntry, 0, max(len(doc.Steps), i+1)), doc.Steps...)
	if i < len(doc.Steps) {
		doc.Steps[i] = e
	} else {
		doc.Steps = append(doc.Steps, e)
	}
	return doc
}

func (s *Steps[X]) changed(err error) error {
	s.err = &Error{Op: "step", Key: s.l.Key, Kind: ErrStepsChanged, Err: err}
	return s.err
}

// enter begins the step called name: its position, and what is stored
// there from an earlier run. leave must follow unless it fails.
func (s *Steps[X]) enter(name, kind string) (int, *stepEntry, error) {
	if s == nil || s.names == nil {
		return 0, nil, fmt.Errorf("%w: a Steps not made by RunSteps", ErrInvalidOption)
	}
	if !validStepName(name) {
		return 0, nil, fmt.Errorf("%w: step name %q: want 1 to %d bytes of A-Z a-z 0-9 _ . : -", ErrInvalidOption, name, maxStepName)
	}
	if !s.busy.CompareAndSwap(false, true) {
		return 0, nil, fmt.Errorf("%w: step %q called while another step of the run is running (inside it, or concurrently)", ErrInvalidOption, name)
	}
	switch {
	case s.closed.Load():
		s.busy.Store(false)
		return 0, nil, fmt.Errorf("%w: step %q called after RunSteps's fn returned", ErrInvalidOption, name)
	case s.err != nil:
		s.busy.Store(false)
		return 0, nil, s.err
	case s.names[name]:
		s.busy.Store(false)
		return 0, nil, fmt.Errorf("%w: step name %q used twice in one run", ErrInvalidOption, name)
	}
	s.names[name] = true
	i := s.next
	s.next++
	if i >= len(s.doc.Steps) {
		return i, nil, nil
	}
	prev := s.doc.Steps[i]
	if prev.Name != name || prev.Kind != kind {
		err := s.changed(fmt.Errorf("step %d is %q (%s) in the stored progress, the code calls %q (%s)", i+1, prev.Name, prev.Kind, name, kind))
		s.busy.Store(false)
		return 0, nil, err
	}
	return i, &prev, nil
}

func (s *Steps[X]) leave() { s.busy.Store(false) }

func validStepName(name string) bool {
	if len(name) == 0 || len(name) > maxStepName {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// stored is the outcome of a step an earlier run finished: its result, or
// its failure as a [Permanent] error.
func stored[T any](key string, codec Codec, e *stepEntry) (T, error) {
	var v T
	if e.State == stepFailed {
		return v, Permanent(e.Class, errors.New(e.Message))
	}
	if err := codec.Unmarshal(e.Result, &v); err != nil {
		return v, &Error{Op: "decode", Key: key, Kind: ErrDecode, Err: err}
	}
	return v, nil
}

// nowUTC is a step's time: the holder's clock, to the millisecond.
func nowUTC() *time.Time {
	t := time.Now().UTC().Truncate(time.Millisecond)
	return &t
}

// Step runs fn, an effect outside the database, as the step called name
// of s's run, unless an earlier run finished it: then it returns the
// stored result (or the stored [Permanent] failure) without running fn.
//
// It stores the step as started (one more run) before fn runs, and fn's
// result after, each under the claim's fence. fn gets the run's [Claim]
// with Step set to name, PriorRuns to the runs begun before this one (0 on
// the first), and DownstreamKey to the claim's downstream key + "/" +
// name: the same for every run of the step, so that the external system
// absorbs a repeat. A [Permanent] error is stored as the step's failure
// and returned (fn may then compensate earlier steps with further steps);
// any other error is returned and leaves the step to run again on resume.
// A result that cannot be encoded is stored as a failure of class
// [UnencodableClass].
//
// Errors of its own: [ErrInvalidOption] (a bad or repeated name, a step
// called inside another or concurrently), [ErrStepsChanged], [ErrDecode],
// and the errors of a fenced write ([ErrLeaseLost]), after which every
// later step of the run returns the same error.
func Step[X, T any](ctx context.Context, s *Steps[X], name string, fn func(ctx context.Context, c Claim) (T, error)) (T, error) {
	var zero T
	if fn == nil {
		return zero, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	i, prev, err := s.enter(name, stepExternal)
	if err != nil {
		return zero, err
	}
	defer s.leave()
	cfg := &s.l.lr.cfg
	runs := 1
	if prev != nil {
		if prev.State != stepStarted {
			return stored[T](s.l.Key, cfg.codec, prev)
		}
		runs = prev.Runs + 1
	}
	e := stepEntry{Name: name, Kind: stepExternal, State: stepStarted, Runs: runs, Started: *nowUTC()}
	if err := s.save(ctx, s.with(i, e)); err != nil {
		return zero, err
	}
	c := s.l.Claim
	c.Step, c.PriorRuns, c.DownstreamKey = name, runs-1, c.DownstreamKey+"/"+name
	v, fnErr := fn(ctx, c)
	wctx := context.WithoutCancel(ctx) // the effect happened, or failed: record it
	if fnErr == nil {
		encoded, err := encode(v, cfg, isInterface[T]())
		if err != nil {
			fnErr = Permanent(UnencodableClass, err)
		} else {
			e.State, e.Result, e.Finished = stepDone, encoded, nowUTC()
			if err := s.save(wctx, s.with(i, e)); err != nil {
				return zero, err
			}
			return v, nil
		}
	}
	class, ok := IsPermanent(fnErr)
	if !ok {
		return zero, fnErr
	}
	e.State, e.Class, e.Message, e.Finished = stepFailed, truncateUTF8(class, maxErrorClass), truncateUTF8(fnErr.Error(), maxErrorMessage), nowUTC()
	if err := s.save(wctx, s.with(i, e)); err != nil {
		return zero, joinErrs(fnErr, err)
	}
	return zero, fnErr
}

// StepTx runs fn, database writes, as the step called name of s's run,
// unless an earlier run finished it: then it returns the stored result
// without running fn.
//
// fn runs in a transaction of its own, which holds the step's checkpoint
// too: its first statement, fenced by the claim, locks the key's row and
// marks the step started (failing at once, with [ErrLeaseLost], when the
// claim is lost); then fn's writes; then, fenced again, the step's result;
// then COMMIT. The writes and the checkpoint commit together or not at
// all, so the step runs exactly once however its holder dies. While the
// transaction is open the key's row lock holds the lease (a takeover waits
// for it, and sees the lease the first statement renewed), so the
// heartbeat pauses: on SQLite, whose one writer is this transaction, it
// could not renew meanwhile.
//
// A transaction the database refused or lost (ErrRetryable, fn's own
// errors of that class included) is run again, fn included, as [Run] does,
// at most [Options.MaxAttempts] times. A COMMIT whose fate is unknown is
// settled by the next try, which locks the row and reads whether the step
// is stored done. Any other error of fn rolls back and is returned:
// nothing of the step stays.
func StepTx[X, T any](ctx context.Context, s *Steps[X], name string, fn func(ctx context.Context, tx X) (T, error)) (T, error) {
	var zero T
	if fn == nil {
		return zero, fmt.Errorf("%w: nil fn", ErrInvalidOption)
	}
	i, prev, err := s.enter(name, stepTx)
	if err != nil {
		return zero, err
	}
	defer s.leave()
	cfg := &s.l.lr.cfg
	runs := 1
	if prev != nil {
		if prev.State != stepStarted {
			return stored[T](s.l.Key, cfg.codec, prev)
		}
		runs = prev.Runs + 1
	}
	uncertain := false
	for attempt := 1; ; attempt++ {
		v, err := stepTxOnce(ctx, s, i, name, runs, uncertain, fn)
		if err == nil {
			return v, nil
		}
		var e *Error
		switch {
		case errors.Is(err, ErrCommitUnknown):
			uncertain = true
		case errors.Is(err, ErrRetryable) || errors.As(err, &e) && e.Op == "begin":
		case errors.Is(err, ErrLeaseLost):
			s.err = err
			return zero, err
		default:
			return zero, err
		}
		if attempt >= cfg.maxAttempts || ctx.Err() != nil {
			if uncertain {
				s.err = err // whether the step is done cannot be told
			}
			return zero, err
		}
		if werr := sleep(ctx, backoff(attempt, cfg.backoffBase, cfg.backoffMax)); werr != nil {
			if uncertain {
				s.err = err
			}
			return zero, withoutClass(err, werr)
		}
	}
}

func stepTxOnce[X, T any](ctx context.Context, s *Steps[X], i int, name string, runs int, uncertain bool, fn func(context.Context, X) (T, error)) (T, error) {
	var zero T
	l, lr := s.l, s.l.lr
	l.clock.pause.Lock()
	defer l.clock.pause.Unlock()
	ptx, err := s.st.driver.Begin(ctx, lr.cfg.isolation)
	if err != nil {
		return zero, lr.s.dbError(ctx, "begin", l.Key, err)
	}
	ended := false
	defer func() {
		if !ended { // an error, or fn panicked
			_ = ptx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	us := lr.leaseMicros()
	at := time.Now()
	if uncertain {
		// Did the last try's COMMIT go through? The fenced write waits for
		// that transaction's lock, if it still holds it.
		n, err := ptx.Exec(ctx, lr.ls.Renew, us, us, l.Key, l.Attempt, l.Owner)
		if err != nil {
			return zero, lr.s.dbError(ctx, "step", l.Key, err)
		}
		if n != 1 {
			return zero, lostError("step", l.Key, l.Attempt)
		}
		var raw sql.NullString
		if err := ptx.QueryRow(ctx, lr.ls.StepsRead, l.Key, l.Attempt, l.Owner).Scan(&raw); err != nil {
			return zero, lr.s.dbError(ctx, "step", l.Key, err)
		}
		var doc stepsDoc
		if raw.Valid && json.Unmarshal([]byte(raw.String), &doc) == nil && i < len(doc.Steps) &&
			doc.Steps[i].Name == name && doc.Steps[i].State == stepDone {
			ended = true
			if e := lr.s.commit(ctx, ptx, "step: commit", l.Key, true); e != nil {
				return zero, e
			}
			l.clock.renewed(at)
			s.doc = doc
			return stored[T](l.Key, lr.cfg.codec, &doc.Steps[i])
		}
	}
	var mark [8]byte
	_, _ = rand.Read(mark[:])
	e := stepEntry{Name: name, Kind: stepTx, State: stepStarted, Runs: runs, Started: *nowUTC(), Tx: hex.EncodeToString(mark[:])}
	marked, err := json.Marshal(s.with(i, e))
	if err != nil {
		return zero, &Error{Op: "step", Key: l.Key, Kind: ErrEncode, Err: err}
	}
	n, err := ptx.Exec(ctx, lr.ls.StepsSave, string(marked), us, us, l.Key, l.Attempt, l.Owner)
	if err != nil {
		return zero, lr.s.dbError(ctx, "step", l.Key, err)
	}
	if n != 1 {
		return zero, lostError("step", l.Key, l.Attempt)
	}
	v, fnErr := fn(ctx, ptx.Tx())
	if fnErr != nil {
		if !errors.Is(fnErr, ErrRetryable) && kindSentinel("fn", lr.s.classify(fnErr)) == ErrRetryable && ctx.Err() == nil {
			return zero, &Error{Op: "fn", Key: l.Key, Kind: ErrRetryable, Err: unclassed(fnErr)}
		}
		return zero, fnErr
	}
	encoded, err := encode(v, &lr.cfg, isInterface[T]())
	if err != nil {
		return zero, &Error{Op: "step", Key: l.Key, Kind: errKind(err), Err: err}
	}
	e.State, e.Result, e.Finished, e.Tx = stepDone, encoded, nowUTC(), ""
	doc := s.with(i, e)
	done, err := json.Marshal(doc)
	if err != nil {
		return zero, &Error{Op: "step", Key: l.Key, Kind: ErrEncode, Err: err}
	}
	if ec, ok := ptx.(idemdriver.ExecCommitter); ok && ctx.Err() == nil {
		// The step's record leaves with the COMMIT, fenced by the mark. A
		// failed COMMIT ended the transaction too: the deferred rollback
		// then sends nothing.
		if e := lr.s.execCommit(ctx, ec, "step", "step: commit", l.Key, lr.ls.StepsSwap, string(done), l.Key, l.Attempt, l.Owner, string(marked)); e != nil {
			return zero, e
		}
		ended = true
	} else {
		n, err = ptx.Exec(ctx, lr.ls.StepsSwap, string(done), l.Key, l.Attempt, l.Owner, string(marked))
		if err != nil {
			return zero, lr.s.dbError(ctx, "step", l.Key, err)
		}
		if n != 1 {
			// The first write is gone: the database ended the transaction
			// under fn (and MySQL went on in autocommit).
			return zero, claimLost("step", l.Key)
		}
		ended = true
		if e := lr.s.commit(ctx, ptx, "step: commit", l.Key, true); e != nil {
			return zero, e
		}
	}
	l.clock.renewed(at)
	s.doc = doc
	return v, nil
}

// stepRecords is the audit view of a steps column.
func stepRecords(raw []byte) []StepRecord {
	if raw == nil {
		return nil
	}
	var doc stepsDoc
	if json.Unmarshal(raw, &doc) != nil {
		return nil
	}
	recs := make([]StepRecord, len(doc.Steps))
	for i, e := range doc.Steps {
		recs[i] = StepRecord{Name: e.Name, State: e.State, Runs: e.Runs, Result: e.Result,
			Class: e.Class, Message: e.Message, Started: e.Started}
		if e.Finished != nil {
			recs[i].Finished = *e.Finished
		}
	}
	return recs
}
