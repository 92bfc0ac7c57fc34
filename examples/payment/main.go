// Command payment shows idemsql's lease mode guarding a call to a payment
// provider, an effect outside the database, on an embedded SQLite database:
//
//	go run ./examples/payment
//
// First, a transient error: the (fake, httptest) payment server charges but
// its answer is lost, so fn fails. The lease ends without an outcome; the
// retry takes the key over at once and calls again with the same downstream
// key, which the server honours as Stripe does: it replays the first charge.
//
// Then a crash: worker 1 claims the order's key, calls the server, and
// crashes before it records the outcome. Its lease runs out; worker 2 takes
// the key over and calls again with the same downstream key: one charge,
// recorded once. The same crash against a server that ignores the key
// charges twice: the honest limit of lease mode.
package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "payment:", err)
		os.Exit(1)
	}
}

// Charge is the payment provider's answer, and the result idemsql stores.
type Charge struct {
	ID     string `json:"id"`
	Amount int64  `json:"amount"`
}

// provider is a fake payment API. With honourKey it keeps the answer for
// each Idempotency-Key and replays it, as Stripe's API does. With loseFirst
// it charges on the first request but fails to answer it, as a time-out
// after the charge would.
type provider struct {
	honourKey bool
	loseFirst bool
	mu        sync.Mutex
	requests  int
	charges   int
	byKey     map[string]Charge
}

func (p *provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Amount int64 `json:"amount"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	key := r.Header.Get("Idempotency-Key")
	c, seen := p.byKey[key]
	if !p.honourKey || !seen {
		p.charges++
		c = Charge{ID: fmt.Sprintf("ch_%d", p.charges), Amount: req.Amount}
		p.byKey[key] = c
	}
	if p.loseFirst && p.requests == 1 {
		http.Error(w, "upstream timed out", http.StatusGatewayTimeout)
		return
	}
	_ = json.NewEncoder(w).Encode(c)
}

// charge calls the payment API with the downstream key of the lease.
func charge(ctx context.Context, url string, l idemsql.Claim, amount int64) (Charge, error) {
	body, _ := json.Marshal(map[string]int64{"amount": amount})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/charges", bytes.NewReader(body))
	if err != nil {
		return Charge{}, err
	}
	req.Header.Set("Idempotency-Key", l.DownstreamKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Charge{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return Charge{}, fmt.Errorf("payment API: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var c Charge
	return c, json.NewDecoder(resp.Body).Decode(&c)
}

// lease is short so that the example runs in a second; in production it is
// longer than any stall you want to ride out (the default is 30s).
const lease = 300 * time.Millisecond

func run(ctx context.Context, out io.Writer) error {
	dir, err := os.MkdirTemp("", "idemsql-payment-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(dir, "app.db")))
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := idemsql.New(idemsqlite.New(db))
	if err != nil {
		return err
	}
	if err := migrations.Up(ctx, db, store); err != nil {
		return err
	}
	guard := store

	scenarios := []struct {
		title string
		p     *provider
		run   func(ctx context.Context, out io.Writer, guard *idemsql.Store[*sql.Tx], url, key string) error
		key   string
	}{
		{"A time-out after the charge, then a retry:", &provider{honourKey: true, loseFirst: true}, retryAfterError, "pay:order-41"},
		{"\nA worker crashes after the charge:", &provider{honourKey: true}, crashAndTakeOver, "pay:order-42"},
		{"\nThe same crash against a payment API that ignores Idempotency-Key:", &provider{}, crashAndTakeOver, "pay:order-43"},
	}
	for _, sc := range scenarios {
		fmt.Fprintln(out, sc.title)
		sc.p.byKey = map[string]Charge{}
		srv := httptest.NewServer(sc.p)
		err := sc.run(ctx, out, guard, srv.URL, sc.key)
		srv.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "Result: %d charge(s) at the payment API for %d request(s); idemsql recorded the outcome once\n", sc.p.charges, sc.p.requests)
	}
	return nil
}

func retryAfterError(ctx context.Context, out io.Writer, guard *idemsql.Store[*sql.Tx], url, key string) error {
	var keys []string
	pay := func(ctx context.Context, l idemsql.Claim) (Charge, error) {
		keys = append(keys, l.DownstreamKey)
		return charge(ctx, url, l, 4200)
	}
	// The API charged, but its answer was lost: fn fails. The lease ends
	// without an outcome, so the key may run again at once.
	_, err := idemsql.RunExternal(ctx, guard, key, pay)
	if err == nil {
		return errors.New("worker 1: the lost answer was not reported")
	}
	fmt.Fprintf(out, "worker 1: charged, but the answer was lost: %v\n", err)
	// The retry takes the key over (attempt 2) with the same downstream key:
	// the API recognises it and replays the charge instead of making another.
	res, err := idemsql.RunExternal(ctx, guard, key, pay)
	if err != nil {
		return fmt.Errorf("worker 1 retry: %w", err)
	}
	if keys[0] != keys[1] {
		return fmt.Errorf("downstream key changed on retry: %q, %q", keys[0], keys[1])
	}
	fmt.Fprintf(out, "worker 1: retried with the same downstream key, the API answered %s\n", res.Value.ID)
	return nil
}

func crashAndTakeOver(ctx context.Context, out io.Writer, guard *idemsql.Store[*sql.Tx], url, key string) error {
	// Worker 1: claims, charges, and dies before recording the outcome. A
	// real crash looks the same to the database: a claim nobody renews.
	c, err := idemsql.ClaimLease(ctx, guard, key, idemsql.Options{Lease: lease})
	if err != nil || !c.Held {
		return fmt.Errorf("worker 1 claim: %+v, %w", c, err)
	}
	ch, err := charge(ctx, url, c.Claim, 4200)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "worker 1: claimed %s (attempt %d), charged %s, crashed before recording it\n", key, c.Attempt, ch.ID)

	pay := func(ctx context.Context, l idemsql.Claim) (Charge, error) { return charge(ctx, url, l, 4200) }

	// Worker 2 at once: the lease is live, the key is in progress.
	if _, err := idemsql.RunExternal(ctx, guard, key, pay); !errors.Is(err, idemsql.ErrInProgress) {
		return fmt.Errorf("worker 2 during the lease: %v", err)
	}
	fmt.Fprintln(out, "worker 2: in progress while worker 1's lease is live")

	// Worker 2 waits for the lease to run out, takes over, calls again with
	// the same downstream key.
	wctx, cancel := context.WithTimeout(ctx, 10*lease)
	defer cancel()
	res, err := idemsql.RunExternal(wctx, guard, key, pay, idemsql.Options{Lease: lease, LeaseWait: 20 * time.Millisecond})
	if err != nil {
		return fmt.Errorf("worker 2 takeover: %w", err)
	}
	fmt.Fprintf(out, "worker 2: took over (attempt 2), the API answered %s\n", res.Value.ID)

	// The dead worker's claim is fenced: had it woken up, it could not
	// record anything.
	if err := c.Complete(ctx, ch); !errors.Is(err, idemsql.ErrLeaseLost) {
		return fmt.Errorf("worker 1's late completion: %v", err)
	}
	fmt.Fprintln(out, "worker 1: woke up, its completion was refused: lease lost")

	// Every later call replays without calling the API.
	again, err := idemsql.RunExternal(ctx, guard, key, pay)
	if err != nil || !again.Replayed {
		return fmt.Errorf("worker 3: %+v, %v", again, err)
	}
	fmt.Fprintf(out, "worker 3: replayed %s without calling the API\n", again.Value.ID)
	return nil
}
