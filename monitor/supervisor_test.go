package monitor

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

const readyTimeout = 7 * time.Second // distinct from every backoff step

// harness runs a Supervisor over fake processes and a fake clock.
type harness struct {
	t      *testing.T
	ev     *events
	st     *fakeStarter
	clock  *fakeClock
	s      *Supervisor
	cancel context.CancelFunc
	runErr chan error
}

// newHarness starts Run. With ready, children become ready when the test
// feeds their ready channel (and a ready timer is asked for at each start).
func newHarness(t *testing.T, ready bool, configure func(*harness)) *harness {
	ev := newEvents()
	h := &harness{t: t, ev: ev, st: newFakeStarter(ev), clock: newFakeClock(), runErr: make(chan error, 1)}
	h.s = &Supervisor{
		Name:         "app",
		Starter:      h.st,
		Command:      func() (*Command, error) { return &Command{Name: "app"}, nil },
		ReadyTimeout: readyTimeout,
		StopTimeout:  time.Minute, // fake processes exit on SIGTERM
		After:        h.clock.After,
		OnReady:      func(c *Child) { ev.add("ready:%d", c.Pid()) },
		Drain:        func(ctx context.Context, c *Child) { ev.add("drain:%d", c.Pid()) },
		OnExit:       func(c *Child, err error) { ev.add("exit:%d", c.Pid()) },
	}
	if ready {
		h.s.Ready = h.st.fakeReady
	}
	if configure != nil {
		configure(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.runErr <- h.s.Run(ctx) }()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop cancels Run and waits for it to return nil.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err, ok := <-h.runErr:
		if ok && err != nil {
			h.t.Errorf("Run: %v", err)
		}
		if ok {
			close(h.runErr)
		}
	case <-time.After(deadline):
		h.t.Fatal("Run did not return after cancel")
	}
}

// startReady waits for the next start and, for a harness with Ready, makes
// the child ready; it returns when OnReady has been called.
func (h *harness) startReady() *fakeProc {
	h.t.Helper()
	p := h.st.waitStart(h.t)
	if h.s.Ready != nil {
		h.clock.next(h.t, readyTimeout)
		p.ready <- nil
	}
	h.ev.wait(h.t, fmt.Sprintf("ready:%d", p.pid))
	return p
}

func (h *harness) status() Status { return h.s.Status() }

func TestSupervisorStartAndStop(t *testing.T) {
	h := newHarness(t, true, nil)
	if st := h.status(); st.State != StateStarting && st.State != StateStopped {
		t.Fatalf("state before ready = %q", st.State)
	}
	p := h.startReady()
	st := h.status()
	if st.State != StateReady || st.Pid != p.pid || st.StartedAt.IsZero() || st.Restarts != 0 {
		t.Fatalf("status = %+v", st)
	}
	h.stop()
	h.ev.after(t, "ready:1", "drain:1", "term:1")
	if st := h.status(); st.State != StateStopped || st.Pid != 0 {
		t.Fatalf("status after stop = %+v", st)
	}
	if err := h.s.Restart(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Restart after Run returned: %v, want ErrStopped", err)
	}
	if err := h.s.Run(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("second Run: %v, want ErrStopped", err)
	}
}

func TestSupervisorNoCommand(t *testing.T) {
	s := &Supervisor{Name: "x"}
	if err := s.Run(context.Background()); !errors.Is(err, ErrNoCommand) {
		t.Fatalf("Run = %v, want ErrNoCommand", err)
	}
}

func TestSupervisorStopKillsAfterGrace(t *testing.T) {
	h := newHarness(t, false, func(h *harness) {
		h.s.StopTimeout = time.Millisecond
		h.st.ignoreTerm = true
	})
	h.startReady()
	h.stop()
	h.ev.after(t, "ready:1", "drain:1", "term:1", "kill:1")
}

// A zero StopTimeout or DrainTimeout means the default, not "no time at all": the child
// gets SIGTERM (not SIGKILL at once) and the drain its full time.
func TestSupervisorZeroTimeoutsMeanDefaults(t *testing.T) {
	drainLeft := make(chan time.Duration, 1)
	h := newHarness(t, false, func(h *harness) {
		h.s.StopTimeout, h.s.DrainTimeout = 0, 0
		h.s.Drain = func(ctx context.Context, c *Child) {
			left := time.Duration(-1)
			if dl, ok := ctx.Deadline(); ok {
				left = time.Until(dl)
			}
			drainLeft <- left
			h.ev.add("drain:%d", c.Pid())
		}
	})
	h.startReady()
	h.stop()
	h.ev.after(t, "ready:1", "drain:1", "term:1")
	if left := <-drainLeft; left < DefaultDrainTimeout/2 {
		t.Errorf("the drain had %v left, want about DefaultDrainTimeout (%v)", left, DefaultDrainTimeout)
	}
}

func TestSupervisorCrashRespawn(t *testing.T) {
	h := newHarness(t, false, nil)
	p1 := h.startReady()
	p1.exit(errors.New("boom"))
	h.ev.wait(t, "exit:1")
	tm := h.clock.next(t, DefaultBackoffMin)
	st := h.status()
	if st.State != StateBackoff || st.Pid != 0 || st.Restarts != 1 || st.CrashLooping {
		t.Fatalf("status in backoff = %+v", st)
	}
	if !errors.Is(st.Err, ErrExited) || st.LastError == "" {
		t.Fatalf("status error = %v / %q, want ErrExited", st.Err, st.LastError)
	}
	tm.fire()
	p2 := h.startReady()
	if st := h.status(); st.State != StateReady || st.Pid != p2.pid || st.Restarts != 1 {
		t.Fatalf("status after respawn = %+v", st)
	}
	// An exit with status 0 is unexpected too.
	p2.exit(nil)
	h.ev.wait(t, "exit:2")
	h.clock.next(t, 2*DefaultBackoffMin) // a second short run
	if st := h.status(); st.Restarts != 2 {
		t.Fatalf("restarts = %d, want 2", st.Restarts)
	}
}

func TestSupervisorCrashLooping(t *testing.T) {
	h := newHarness(t, false, func(h *harness) { h.s.Backoff.Max = time.Second })
	want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, w := range want {
		p := h.startReady()
		p.exit(errors.New("boom"))
		tm := h.clock.next(t, w*time.Millisecond)
		st := h.status()
		if st.Restarts != i+1 || st.CrashLooping != (i+1 >= 5) {
			t.Fatalf("crash %d: status %+v", i+1, st)
		}
		tm.fire()
	}
	h.startReady()
}

// crashLoop crashes five children in a row (Backoff.Max 1s), then starts a sixth that stays.
func (h *harness) crashLoop() {
	h.t.Helper()
	for _, w := range []time.Duration{100, 200, 400, 800, 1000} {
		p := h.startReady()
		p.exit(errors.New("boom"))
		h.clock.next(h.t, w*time.Millisecond).fire()
	}
	h.startReady()
}

// A zero Backoff.Stable means DefaultBackoffStable: a worker that has just come back from
// a crash loop is still reported crash looping.
func TestSupervisorZeroStableMeansDefault(t *testing.T) {
	h := newHarness(t, false, func(h *harness) { h.s.Backoff.Max, h.s.Backoff.Stable = time.Second, 0 })
	h.crashLoop()
	if st := h.status(); !st.CrashLooping && time.Since(st.StartedAt) < DefaultBackoffStable {
		t.Errorf("up for %s after 5 crashes with Backoff.Stable 0 (the default %s): not crash looping", time.Since(st.StartedAt), DefaultBackoffStable)
	}
}

// A crash-looping worker is reported as such until its current child has been up for
// Backoff.Stable, and no longer after that.
func TestSupervisorCrashLoopingClears(t *testing.T) {
	const stable = 500 * time.Millisecond
	h := newHarness(t, false, func(h *harness) { h.s.Backoff.Max, h.s.Backoff.Stable = time.Second, stable })
	h.crashLoop()
	if st := h.status(); time.Since(st.StartedAt) < stable && !st.CrashLooping {
		t.Errorf("up for %s after 5 crashes, less than Backoff.Stable: not crash looping (%+v)", time.Since(st.StartedAt), st)
	}
	// Status reads the real clock for this: poll it.
	give := time.Now().Add(deadline)
	st := h.status()
	for ; st.CrashLooping; st = h.status() {
		if time.Now().After(give) {
			t.Fatalf("still crash looping after being up for %s: %+v", time.Since(st.StartedAt), st)
		}
		time.Sleep(10 * time.Millisecond) // polling interval of a condition wait
	}
	if up := time.Since(st.StartedAt); up < stable {
		t.Errorf("crash looping cleared after %s up, before Backoff.Stable (%s)", up, stable)
	}
}

func TestSupervisorReadyTimeout(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.st.waitStart(t)
	h.clock.next(t, readyTimeout).fire()
	h.ev.wait(t, "term:1")
	h.clock.next(t, DefaultBackoffMin).fire()
	st := h.status()
	if !errors.Is(st.Err, ErrReadyTimeout) || st.Restarts != 1 {
		t.Fatalf("status = %+v, want ErrReadyTimeout", st)
	}
	if h.ev.has("ready:1") || h.ev.has("exit:1") {
		t.Fatalf("events %v: a child that never got ready is neither ready nor crashed", h.ev.all())
	}
	<-p.exitedFlag
	h.startReady()
}

func TestSupervisorStartFailure(t *testing.T) {
	h := newHarness(t, false, func(h *harness) {
		h.st.fail = []error{errors.New("no such file"), errors.New("no such file")}
	})
	h.clock.next(t, 100*time.Millisecond).fire()
	tm := h.clock.next(t, 200*time.Millisecond)
	if st := h.status(); !errors.Is(st.Err, ErrStart) || st.Restarts != 2 || st.State != StateBackoff {
		t.Fatalf("status = %+v, want ErrStart", st)
	}
	tm.fire()
	h.startReady()
}

func TestSupervisorRestart(t *testing.T) {
	h := newHarness(t, true, nil)
	h.startReady()
	done := make(chan error, 1)
	go func() { done <- h.s.Restart(context.Background()) }()
	p2 := h.st.waitStart(t)
	h.clock.next(t, readyTimeout)
	if st := h.status(); st.Pid != 1 || st.State != StateReady {
		t.Fatalf("status while replacing = %+v, want old still current", st)
	}
	p2.ready <- nil
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	h.ev.after(t, "ready:1", "ready:2", "drain:1", "term:1")
	if st := h.status(); st.Pid != 2 || st.State != StateReady || st.Restarts != 0 {
		t.Fatalf("status after restart = %+v", st)
	}
	// The replaced child's exit is not a crash: no OnExit, no backoff.
	if h.ev.has("exit:1") {
		t.Fatal("OnExit called for the replaced child")
	}
	h.stop()
	h.ev.after(t, "term:1", "drain:2", "term:2")
}

// TestSupervisorRetireInBackground: with RetireInBackground, Restart returns once the new
// child is current, while the old one is still draining; Run waits for that drain.
func TestSupervisorRetireInBackground(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, true, func(h *harness) {
		h.s.RetireInBackground = true
		h.s.Drain = func(ctx context.Context, c *Child) {
			h.ev.add("drain:%d", c.Pid())
			if c.Pid() == 1 {
				<-release // the old child's drain holds until the test lets it go
			}
		}
	})
	h.startReady()
	done := make(chan error, 1)
	go func() { done <- h.s.Restart(context.Background()) }()
	p2 := h.st.waitStart(t)
	h.clock.next(t, readyTimeout)
	p2.ready <- nil
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	h.ev.wait(t, "drain:1")
	if h.ev.has("term:1") {
		t.Fatal("the old child was stopped before its drain ended")
	}
	close(release)
	h.ev.wait(t, "term:1")
	h.stop()
}

func TestSupervisorRestartNotReady(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(h *harness, p *fakeProc, timer fakeTimer)
		want error
	}{
		{"exits", func(h *harness, p *fakeProc, _ fakeTimer) { p.exit(errors.New("bad config")) }, ErrExited},
		{"timeout", func(h *harness, p *fakeProc, tm fakeTimer) { tm.fire() }, ErrReadyTimeout},
		{"error", func(h *harness, p *fakeProc, _ fakeTimer) { p.ready <- errBadReady }, errBadReady},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, true, nil)
			h.startReady()
			done := make(chan error, 1)
			go func() { done <- h.s.Restart(context.Background()) }()
			p2 := h.st.waitStart(t)
			tc.fail(h, p2, h.clock.next(t, readyTimeout))
			if err := waitErr(t, done); !errors.Is(err, tc.want) {
				t.Fatalf("Restart = %v, want %v", err, tc.want)
			}
			<-p2.exitedFlag
			if st := h.status(); st.Pid != 1 || st.State != StateReady || st.Restarts != 0 {
				t.Fatalf("status = %+v, want old child current", st)
			}
			if h.ev.has("drain:1") || h.ev.has("term:1") || h.ev.has("ready:2") {
				t.Fatalf("events %v: old child touched", h.ev.all())
			}
			// The old child still serves and is still supervised.
			h.st.proc(1).exit(errors.New("later crash"))
			h.ev.wait(t, "exit:1")
		})
	}
}

var errBadReady = errors.New("health check failed")

func TestSupervisorRestartCanceled(t *testing.T) {
	h := newHarness(t, true, nil)
	h.startReady()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.s.Restart(ctx) }()
	p2 := h.st.waitStart(t)
	h.clock.next(t, readyTimeout)
	cancel()
	if err := waitErr(t, done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Restart = %v, want context.Canceled", err)
	}
	<-p2.exitedFlag // the abandoned child is stopped
	if st := h.status(); st.Pid != 1 {
		t.Fatalf("status = %+v, want old child current", st)
	}
}

func TestSupervisorOldCrashesDuringRestart(t *testing.T) {
	h := newHarness(t, true, nil)
	p1 := h.startReady()
	done := make(chan error, 1)
	go func() { done <- h.s.Restart(context.Background()) }()
	p2 := h.st.waitStart(t)
	h.clock.next(t, readyTimeout)
	p1.exit(errors.New("boom"))
	h.ev.wait(t, "exit:1")
	if st := h.status(); st.Restarts != 1 || st.State != StateStarting || st.Pid != 2 {
		t.Fatalf("status = %+v", st)
	}
	p2.ready <- nil
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if st := h.status(); st.Pid != 2 || st.State != StateReady {
		t.Fatalf("status = %+v", st)
	}
}

func TestSupervisorRestartDuringBackoff(t *testing.T) {
	h := newHarness(t, false, nil)
	p1 := h.startReady()
	p1.exit(errors.New("boom"))
	h.clock.next(t, DefaultBackoffMin) // never fired
	if err := h.s.Restart(context.Background()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	h.ev.wait(t, "ready:2")
	if st := h.status(); st.Pid != 2 || st.State != StateReady {
		t.Fatalf("status = %+v", st)
	}
}

func TestSupervisorCancelDuringBackoff(t *testing.T) {
	h := newHarness(t, false, nil)
	h.startReady().exit(errors.New("boom"))
	h.clock.next(t, DefaultBackoffMin)
	h.stop()
	if st := h.status(); st.State != StateStopped {
		t.Fatalf("status = %+v", st)
	}
}

func TestSupervisorCancelWhileStarting(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.st.waitStart(t)
	h.clock.next(t, readyTimeout)
	h.stop()
	<-p.exitedFlag
	if h.ev.has("ready:1") || h.ev.has("exit:1") {
		t.Fatalf("events %v", h.ev.all())
	}
}

func TestChildStopConcurrent(t *testing.T) {
	ev := newEvents()
	st := newFakeStarter(ev)
	c, err := Start(st, &Command{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- c.Stop(time.Minute) }()
	}
	for range 8 {
		if err := waitErr(t, errs); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	if got := ev.all(); len(got) != 1 || got[0] != "term:1" {
		t.Fatalf("signals %v, want one term", got)
	}
	if !errors.Is(c.Err(), errKilled) {
		t.Fatalf("Err = %v", c.Err())
	}
	if err := c.Stop(time.Minute); err != nil {
		t.Fatalf("Stop again: %v", err)
	}
}

func TestStartError(t *testing.T) {
	st := newFakeStarter(newEvents())
	st.fail = []error{errors.New("nope")}
	if _, err := Start(st, &Command{Name: "x"}); !errors.Is(err, ErrStart) {
		t.Fatalf("Start = %v, want ErrStart", err)
	}
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(deadline):
		t.Fatal("timed out")
		return nil
	}
}
