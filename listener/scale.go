package listener

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Scale changes the number of workers to n. Growing starts the new workers, waits until
// they are ready, then moves their keys to them in one membership change (if a new
// worker's app exits before it is ready, or it is not ready within the ready timeout plus
// a margin, the new workers are stopped and the count stays); shrinking moves
// the keys away first, then drains and stops the surplus workers. Either way only the keys
// that jump hash must move change owner. n may be 0: the socket stays bound and requests
// get 503 until the cluster grows again. It waits its turn as Reload does.
func (m *Master) Scale(ctx context.Context, n int) error {
	if n < 0 || n > MaxWorkers {
		return fmt.Errorf("%w: cannot scale to %d workers: use 0 to %d", ErrConfig, n, MaxWorkers)
	}
	return m.submit(ctx, "scale", func(ctx context.Context, c *cluster) error { return c.scale(ctx, n) })
}

// scale is Scale on the loop.
func (c *cluster) scale(ctx context.Context, n int) error {
	if c.life.Err() != nil {
		return ErrStopped
	}
	cur := c.members
	switch {
	case n > cur:
		return c.grow(ctx, cur, n)
	case n < cur:
		return c.shrink(ctx, cur, n)
	}
	return nil
}

func (c *cluster) grow(ctx context.Context, cur, n int) error {
	c.logger.Info("scaling up", "from", cur, "to", n)
	added := make([]*worker, 0, n-cur)
	for i := cur; i < n; i++ {
		added = append(added, c.newWorker(i, c.cfg))
	}
	c.workers = append(c.workers, added...)
	c.publish() // before the first hello: a router is configured from the view
	for _, w := range added {
		w.start()
	}
	began := time.Now()
	st := newStepper(ctx, StepStart, len(added))
	timeout := c.cfg.ReadyTimeout + 30*time.Second
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, w := range added {
		var why error
		c.wait(func() { why = awaitReady(ctx, w, t.C, timeout) })
		if why == nil {
			st.did(w.index, w.lastState().AppPID, began)
			continue
		}
		c.logger.Error("new workers did not become ready; scaling back", "from", cur, "to", n, "worker", w.index, "err", why)
		c.workers = c.workers[:cur]
		c.publish()
		c.wait(func() { stopAll(context.Background(), added, nil) })
		return fmt.Errorf("scale to %d: worker %d: %w", n, w.index, why)
	}
	if err := c.announce(ctx, n); err != nil {
		c.logger.Warn("membership not acknowledged by every router", "err", err)
	}
	if c.standby != nil {
		c.standby.close()
		c.standby = nil
	}
	c.logger.Info("scaled", "workers", n)
	return nil
}

func (c *cluster) shrink(ctx context.Context, cur, n int) error {
	c.logger.Info("scaling down", "from", cur, "to", n)
	if n == 0 {
		sb, err := newStandby(c.lnFile, c.errorLog())
		if err != nil {
			return err
		}
		c.standby = sb
	}
	if err := c.announce(ctx, n); err != nil {
		c.logger.Warn("membership not acknowledged by every router", "err", err)
	}
	removed := slices.Clone(c.workers[n:])
	c.workers = c.workers[:n]
	c.publish()
	st := newStepper(ctx, StepStop, len(removed))
	c.wait(func() { stopAll(ctx, removed, st) })
	c.logger.Info("scaled", "workers", n)
	return nil
}

// awaitReady waits until the new worker w is ready. The error says why not: its app
// exited before it was (and it did not make it since), it was not ready by expired (the
// end of timeout), or ctx ended.
func awaitReady(ctx context.Context, w *worker, expired <-chan time.Time, timeout time.Duration) error {
	select {
	case <-w.ready:
		return nil
	case msg := <-w.failed:
		select {
		case <-w.ready:
			return nil // it failed once, then made it
		default:
		}
		return errors.New(msg)
	case <-expired:
		return fmt.Errorf("not ready within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopAll drains every worker, then stops them all, in parallel, reporting each stopped
// worker to st (nil: to nobody).
func stopAll(ctx context.Context, ws []*worker, st *stepper) {
	began := time.Now()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.drain(ctx, true) }() // the cluster goes on without them
	}
	wg.Wait()
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.cancel(); <-w.done; st.did(w.index, 0, began) }()
	}
	wg.Wait()
}
