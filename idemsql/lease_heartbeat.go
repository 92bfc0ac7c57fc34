package idemsql

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// leaseClock is a holder's conservative view of when its lease ends, by
// the local monotonic clock: the lease's duration from the moment before
// the statement that last set lease_until was sent. The database computed
// lease_until from its own clock after that moment, so the local deadline
// never falls after the database's (up to clock drift, which a lease is
// far too short for).
type leaseClock struct {
	base time.Time     // has a monotonic reading
	dur  time.Duration // the lease
	end  atomic.Int64  // nanoseconds from base to the deadline
}

func newLeaseClock(since time.Time, dur time.Duration) *leaseClock {
	c := &leaseClock{base: since, dur: dur}
	c.end.Store(int64(dur))
	return c
}

func (c *leaseClock) deadline() time.Time { return c.base.Add(time.Duration(c.end.Load())) }

// renewed moves the deadline on to a lease from at, the moment before a
// renewal was sent; never back, when renewals finish out of order.
func (c *leaseClock) renewed(at time.Time) {
	end := int64(at.Sub(c.base) + c.dur)
	for {
		old := c.end.Load()
		if end <= old || c.end.CompareAndSwap(old, end) {
			return
		}
	}
}

// hold runs fn while a heartbeat renews the lease every heartbeat interval.
// When a renewal finds the lease gone (definite), or no renewal succeeded
// for a whole lease by the local monotonic clock (the database may be
// unreachable), fn's context is cancelled with the cause, an error that
// matches [ErrLeaseLost]. The local deadline is l's clock: it ends before
// the database's.
//
// The heartbeat stops when fn returns, when ctx ends, and when fn panics:
// then the panic goes on up and the lease simply runs out, so that the key
// is taken over later (fn may have done the effect before panicking).
func (l Lease) hold(ctx context.Context, fn func(ctx context.Context)) (lost error, definite bool) {
	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	dur, every := l.lr.cfg.lease.leaseDuration(), l.lr.cfg.lease.heartbeatEvery()
	stop := make(chan struct{})
	var hbLost error
	var hbDefinite bool
	var wg sync.WaitGroup
	var once sync.Once
	stopHeartbeat := func() { once.Do(func() { close(stop); wg.Wait() }) }
	defer stopHeartbeat()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-hctx.Done():
				return
			case <-t.C:
			}
			left := time.Until(l.clock.deadline())
			var err error
			if left > 0 {
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), left)
				err = l.Renew(rctx)
				rcancel()
				if err == nil {
					continue
				}
				if errors.Is(err, ErrLeaseLost) {
					hbLost, hbDefinite = err, true
					cancel(err)
					return
				}
			}
			if !time.Now().Before(l.clock.deadline()) {
				if err == nil {
					err = errors.New("the heartbeat ran late")
				}
				hbLost = &Error{Op: "renew", Key: l.Key, Kind: ErrLeaseLost,
					Err: fmt.Errorf("no renewal succeeded for a whole lease (%v): %w", dur, err)}
				cancel(hbLost)
				return
			}
		}
	}()
	fn(hctx)
	stopHeartbeat()
	return hbLost, hbDefinite
}
