package listener

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Scale changes the number of workers to n. Growing starts the new workers, waits until
// they are ready, then moves their keys to them in one membership change (if a new
// worker's app exits before it is ready, or it is not ready within the ready timeout plus
// a margin, the new workers are stopped and the count stays); shrinking moves
// the keys away first, then drains and stops the surplus workers. Either way only the keys
// that jump hash must move change owner. n may be 0: the socket stays bound and requests
// get 503 until the cluster grows again.
func (m *Master) Scale(ctx context.Context, n int) error {
	if n < 0 || n > MaxWorkers {
		return fmt.Errorf("%w: cannot scale to %d workers: use 0 to %d", ErrConfig, n, MaxWorkers)
	}
	ctx, end, err := m.beginOp(ctx)
	defer end()
	if err != nil {
		return err
	}
	return m.scaleLocked(ctx, n)
}

// scaleLocked is Scale with m.op held.
func (m *Master) scaleLocked(ctx context.Context, n int) error {
	m.mu.Lock()
	if m.stopping {
		m.mu.Unlock()
		return ErrStopped
	}
	cur := m.members
	m.mu.Unlock()
	switch {
	case n > cur:
		return m.grow(ctx, cur, n)
	case n < cur:
		return m.shrink(ctx, cur, n)
	}
	return nil
}

func (m *Master) grow(ctx context.Context, cur, n int) error {
	m.logger.Info("scaling up", "from", cur, "to", n)
	m.mu.Lock()
	added := make([]*worker, 0, n-cur)
	for i := cur; i < n; i++ {
		w := m.newWorkerLocked(i)
		m.workers = append(m.workers, w)
		added = append(added, w)
		w.start()
	}
	m.mu.Unlock()
	began := time.Now()
	st := newStepper(ctx, StepStart, len(added))
	timeout := m.config().ReadyTimeout + 30*time.Second
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, w := range added {
		var why error
		select {
		case <-w.ready:
			st.did(w.index, w.lastState().AppPID, began)
			continue
		case msg := <-w.failed:
			select {
			case <-w.ready:
				st.did(w.index, w.lastState().AppPID, began)
				continue // it failed once, then made it
			default:
			}
			why = errors.New(msg)
		case <-t.C:
			why = fmt.Errorf("not ready within %s", timeout)
		case <-ctx.Done():
			why = ctx.Err()
		}
		m.logger.Error("new workers did not become ready; scaling back", "from", cur, "to", n, "worker", w.index, "err", why)
		m.mu.Lock()
		m.workers = m.workers[:cur]
		m.mu.Unlock()
		stopAll(context.Background(), added, nil)
		return fmt.Errorf("scale to %d: worker %d: %w", n, w.index, why)
	}
	if err := m.announce(ctx, n); err != nil {
		m.logger.Warn("membership not acknowledged by every router", "err", err)
	}
	m.mu.Lock()
	sb := m.standby
	m.standby = nil
	m.mu.Unlock()
	if sb != nil {
		sb.close()
	}
	m.logger.Info("scaled", "workers", n)
	return nil
}

func (m *Master) shrink(ctx context.Context, cur, n int) error {
	m.logger.Info("scaling down", "from", cur, "to", n)
	if n == 0 {
		sb, err := newStandby(m.lnFile, m.errorLog())
		if err != nil {
			return err
		}
		m.mu.Lock()
		m.standby = sb
		m.mu.Unlock()
	}
	if err := m.announce(ctx, n); err != nil {
		m.logger.Warn("membership not acknowledged by every router", "err", err)
	}
	m.mu.Lock()
	removed := append([]*worker(nil), m.workers[n:]...)
	m.workers = m.workers[:n]
	m.mu.Unlock()
	stopAll(ctx, removed, newStepper(ctx, StepStop, len(removed)))
	m.logger.Info("scaled", "workers", n)
	return nil
}

// stopAll drains every worker, then stops them all, in parallel, reporting each stopped
// worker to st (nil: to nobody).
func stopAll(ctx context.Context, ws []*worker, st *stepper) {
	began := time.Now()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.drain(ctx) }()
	}
	wg.Wait()
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.cancel(); <-w.done; st.did(w.index, 0, began) }()
	}
	wg.Wait()
}
