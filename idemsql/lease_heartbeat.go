package idemsql

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// hold runs fn while a heartbeat renews the lease every heartbeat interval.
// When a renewal finds the lease gone (definite), or no renewal succeeded
// for a whole lease by the local monotonic clock (the database may be
// unreachable), fn's context is cancelled with the cause, an error that
// matches [ErrLeaseLost]. The local deadline starts at l.since, a moment
// before the lease was taken, or at the start of the last successful
// renewal: it ends before the database's.
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
		renewed := l.since
		for {
			select {
			case <-stop:
				return
			case <-hctx.Done():
				return
			case <-t.C:
			}
			at := time.Now()
			left := dur - at.Sub(renewed)
			var err error
			if left > 0 {
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), left)
				err = l.Renew(rctx)
				rcancel()
				if err == nil {
					renewed = at
					continue
				}
				if errors.Is(err, ErrLeaseLost) {
					hbLost, hbDefinite = err, true
					cancel(err)
					return
				}
			}
			if time.Since(renewed) >= dur {
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
