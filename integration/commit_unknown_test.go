package integration

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemdriver"
	"github.com/idemsql/idemsql/idemsql"
)

func init() {
	conformanceCases = append(conformanceCases,
		conformanceCase{name: "ConnectionLostAtCommitIsUnknown", only: "postgres", run: testCommitUnknown},
		conformanceCase{name: "ConnectionLostAtCommitIsUnknown", only: "mysql", run: testCommitUnknown})
}

// killAtCommitPool begins transactions whose COMMIT finds its connection
// killed by the server: the client cannot tell whether it went through.
type killAtCommitPool struct {
	e *env
}

func (p killAtCommitPool) Begin(ctx context.Context, level sql.IsolationLevel) (idemdriver.Tx[*sql.Tx], error) {
	tx, err := p.e.db.BeginTx(ctx, &sql.TxOptions{Isolation: level})
	if err != nil {
		return nil, err
	}
	return killAtCommitTx{countedTx: countedTx{Executor: sqlExec{tx}, tx: tx}, e: p.e}, nil
}

type killAtCommitTx struct {
	countedTx
	e *env
}

func (k killAtCommitTx) Commit(ctx context.Context) error {
	id := k.e.connID(ctx, sqlTestTx{tx: k.tx, store: k.e.store})
	if err := k.e.kill(id); err != nil {
		return err
	}
	k.e.waitGone(ctx, id)
	return k.tx.Commit()
}

// waitGone waits until the server no longer lists the session: a kill is
// asynchronous on PostgreSQL.
func (e *env) waitGone(ctx context.Context, id int64) {
	q := "SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?"
	if e.dialect == "postgres" {
		q = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ?"
	}
	for ctx.Err() == nil && e.queryInt(q, id) != 0 {
		time.Sleep(5 * time.Millisecond)
	}
}

// The connection breaks as Run commits. Run cannot know whether the
// COMMIT went through, so it neither retries (that could run fn twice) nor
// reports a failure that is retryable: ErrCommitUnknown, alone. Calling
// again with the key then replays or runs; here the server had rolled the
// transaction back, so it runs, once.
func testCommitUnknown(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const key = "commit-unknown"
	var runs atomic.Int64
	fn := func(ctx context.Context, tx *sql.Tx) (invoice, error) {
		n := runs.Add(1)
		_, err := tx.ExecContext(ctx, e.q("INSERT INTO "+e.biz+" (idem_key, amount) VALUES (?, ?)"), key, n)
		return invoice{Key: key, Amount: n}, err
	}
	_, err := idemsql.Run(ctx, storeOn(e, testDriver[*sql.Tx]{inner: sqlDriver(e.dialect, e.db), begin: killAtCommitPool{e: e}.Begin}), key, fn)
	if !errors.Is(err, idemsql.ErrCommitUnknown) {
		t.Fatalf("err = %v, want ErrCommitUnknown", err)
	}
	oneClass(t, err)
	if n := runs.Load(); n != 1 {
		t.Fatalf("fn ran %d times: Run retried a COMMIT of unknown outcome", n)
	}
	res, err := idemsql.Run(ctx, e.store, key, fn)
	if err != nil || res.Replayed || res.Value.Amount != 2 {
		t.Fatalf("again: %+v, %v; want fn to run (the COMMIT had not gone through)", res, err)
	}
	if n := e.bizRows(key); n != 1 {
		t.Fatalf("%d business rows, want 1", n)
	}
}
