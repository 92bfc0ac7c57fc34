package idemsql

import (
	"context"
	"errors"
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
	// pause is held by the heartbeat while it renews, and by a StepTx
	// while its transaction is open: that transaction holds the row's
	// lock, and with it the lease.
	pause sync.Mutex
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
// before the lease's end by its local clock (the database may be
// unreachable), fn's context is cancelled with the cause, an error that
// matches [ErrLeaseLost].
//
// The heartbeat lives as long as fn runs. ctx's end cancels fn's context,
// but not the renewals: fn may still be acting on the external system, and
// a lease left to run out would hand the key to a second holder meanwhile.
// For the same reason it goes on trying after a feared loss: a renewal
// that gets through restores the lease (the fence shows that no one took
// the key meanwhile), one that the fence refuses makes the loss certain.
// The heartbeat stops when fn returns, and when fn panics: then the panic
// goes on up and the lease simply runs out, so that the key is taken over
// later (fn may have done the effect before panicking).
func (l Lease) hold(ctx context.Context, fn func(ctx context.Context)) (lost error, definite bool) {
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		lost, definite = l.heartbeat(context.WithoutCancel(ctx), stop, cancel)
	}()
	var once sync.Once
	stopHeartbeat := func() { once.Do(func() { close(stop); <-done }) }
	defer stopHeartbeat()
	fn(fctx)
	stopHeartbeat()
	return lost, definite
}

// heartbeat renews l every heartbeat interval until stop is closed. When a
// renewal is refused by the fence it cancels fn with that error and
// returns it as certain. When none gets through before the lease's local
// deadline it cancels fn with that error and goes on trying; it returns the
// first such error as feared, unless a later renewal is refused.
func (l Lease) heartbeat(ctx context.Context, stop <-chan struct{}, cancel context.CancelCauseFunc) (lost error, definite bool) {
	t := time.NewTicker(l.lr.cfg.lease.heartbeatEvery())
	defer t.Stop()
	for {
		select {
		case <-stop:
			return lost, false
		case <-t.C:
		}
		// A tick that comes after the local deadline (a stalled process, a
		// feared loss) still tries once: the fence refuses the renewal if
		// another holder took the key, and lets it through if no one did.
		l.clock.pause.Lock()
		refused, err := l.renew(ctx, stop)
		l.clock.pause.Unlock()
		switch {
		case err == nil:
		case errors.Is(err, errStopped):
			return lost, false
		case refused:
			cancel(err)
			return err, true
		case lost == nil:
			lost = err
			cancel(err)
		}
	}
}
