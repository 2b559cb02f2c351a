package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Default Supervisor timeouts.
const (
	DefaultReadyTimeout = 60 * time.Second
	DefaultStopTimeout  = 30 * time.Second
	DefaultDrainTimeout = 30 * time.Second
)

// crashLoopFailures is the number of consecutive short runs from which a
// child is reported as crash-looping.
const crashLoopFailures = 5

// State is what a Supervisor is doing.
type State string

// Supervisor states, as shown by Status.
const (
	StateStarting State = "starting" // a child is started and not yet ready
	StateReady    State = "ready"    // the current child is ready and serving
	StateBackoff  State = "backoff"  // no child: waiting to restart after a crash
	StateStopping State = "stopping" // Run's context is done: draining and stopping
	StateStopped  State = "stopped"  // Run has not started, or has returned
)

// Status is a snapshot of a Supervisor.
type Status struct {
	State        State
	Pid          int       // the current child, 0 if none
	StartedAt    time.Time // of the current child
	Restarts     int       // unexpected exits, failed starts and failed readiness so far
	CrashLooping bool      // at least 5 consecutive short runs, and the current child (if any) not yet up for Backoff.Stable
	LastError    string    // the last crash's error, "" if none
	Err          error     // the same as an error, for errors.Is (e.g. ErrStart)
}

// Supervisor keeps one child running: start, ready, crash respawn with
// backoff, rolling replace. The struct is the configuration: set its fields,
// then call Run once; fields must not change after that. A crash-looping
// child is retried forever at the capped interval; Run never returns because
// of it. OnReady, OnExit and the final Drain run on Run's goroutine; Ready,
// and Drain of a replaced child, run on goroutines of their own that Run
// waits for. None of them may call Restart.
type Supervisor struct {
	Name         string                                    // for logs and errors
	Starter      Starter                                   // nil = OS
	Command      func() (*Command, error)                  // called for every start (new port each time); an error counts as a failed start
	Ready        func(ctx context.Context, c *Child) error // nil = ready once started; must return soon after ctx is done
	ReadyTimeout time.Duration                             // default 60s
	StopTimeout  time.Duration                             // grace between SIGTERM and SIGKILL, default 30s
	DrainTimeout time.Duration                             // bound on each Drain call, default 30s
	Backoff      Backoff                                   // zero = defaults; Run uses a copy
	After        func(time.Duration) <-chan time.Time      // nil = time.After (tests inject); used for backoff and ReadyTimeout
	OnReady      func(c *Child)                            // c is now current: route traffic to it
	Drain        func(ctx context.Context, old *Child)     // before stopping a replaced or the final child: wait for its in-flight
	OnExit       func(c *Child, err error)                 // unexpected exit of the current child (crash or exit 0); err is c.Err()
	// RetireInBackground makes Restart return as soon as the new child is current, while
	// the old one drains and stops in the background (Run still waits for it): a rolling
	// restart of many supervisors then drains their old children side by side instead of
	// one after the other.
	RetireInBackground bool
	Logger             *slog.Logger // nil = discard

	initOnce sync.Once
	requests chan *restartRequest // Restart → Run
	stopped  chan struct{}        // closed when Run has returned
	ran      atomic.Bool

	mu     sync.Mutex
	status Status
	stable time.Duration // the Backoff's Stable, set by Run
}

// restartRequest asks Run for a rolling replace (tableflip style).
type restartRequest struct {
	ctx   context.Context
	reply chan error // buffered 1: the answer never blocks Run
}

func (s *Supervisor) init() {
	s.initOnce.Do(func() {
		s.requests = make(chan *restartRequest)
		s.stopped = make(chan struct{})
	})
}

// Status returns a snapshot of the supervisor's state. It is safe to call
// from any goroutine.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	if st.State == "" {
		st.State = StateStopped
	}
	if st.CrashLooping && st.State == StateReady && time.Since(st.StartedAt) >= s.stable {
		st.CrashLooping = false // the current child has run long enough to reset the backoff
	}
	return st
}

// Restart replaces the child without a gap: start a new one, wait until it
// is ready, OnReady(new), Drain(old), Stop(old); it returns when the old one
// has stopped (with RetireInBackground, as soon as the new one is current). If the new one fails to become ready, it is stopped, the old
// one keeps serving, and Restart returns the error. When there is no child
// (waiting in backoff after a crash) it starts one at once and returns when
// it is ready. If ctx is done before the new child is ready, the replacement
// is abandoned; once the new child is current, ctx only stops Restart waiting
// for the old one's drain. Restart waits for Run to start if it has not yet,
// and returns an error wrapping [ErrStopped] if Run has returned.
func (s *Supervisor) Restart(ctx context.Context) error {
	s.init()
	req := &restartRequest{ctx: ctx, reply: make(chan error, 1)}
	select {
	case s.requests <- req:
	case <-s.stopped:
		return fmt.Errorf("monitor: restart %s: %w", s.Name, ErrStopped)
	case <-ctx.Done():
		return fmt.Errorf("monitor: restart %s: %w", s.Name, ctx.Err())
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("monitor: restart %s: %w", s.Name, ctx.Err())
	}
}

// Run starts the child and keeps it running until ctx is done; then it
// drains and stops the child and returns nil. It may be called once.
func (s *Supervisor) Run(ctx context.Context) error {
	s.init()
	if !s.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("monitor: %s: Run called twice: %w", s.Name, ErrStopped)
	}
	defer close(s.stopped)
	if s.Command == nil {
		return fmt.Errorf("monitor: %s: %w", s.Name, ErrNoCommand)
	}
	r := &runner{
		s:            s,
		ctx:          ctx,
		log:          s.Logger,
		backoff:      s.Backoff,
		readyTimeout: s.ReadyTimeout,
		stopTimeout:  s.StopTimeout,
		drainTimeout: s.DrainTimeout,
		after:        s.After,
		wait:         -1,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("child", s.Name)
	s.mu.Lock()
	s.stable = s.Backoff.Stable
	if s.stable <= 0 {
		s.stable = DefaultBackoffStable
	}
	s.mu.Unlock()
	if r.readyTimeout <= 0 {
		r.readyTimeout = DefaultReadyTimeout
	}
	if r.stopTimeout <= 0 {
		r.stopTimeout = DefaultStopTimeout
	}
	if r.drainTimeout <= 0 {
		r.drainTimeout = DefaultDrainTimeout
	}
	if r.after == nil {
		r.after = time.After
	}
	r.loop()
	r.retiring.Wait()
	s.setStatus(StateStopped, nil)
	return nil
}

// runner is the state of one Run, owned by Run's goroutine (retire
// goroutines only use the immutable fields).
type runner struct {
	s            *Supervisor
	ctx          context.Context
	log          *slog.Logger
	backoff      Backoff
	readyTimeout time.Duration
	stopTimeout  time.Duration
	drainTimeout time.Duration
	after        func(time.Duration) <-chan time.Time

	wait     time.Duration  // before the next start; <0: none
	retiring sync.WaitGroup // replaced children being drained and stopped
}

func (r *runner) loop() {
	var cur *Child
	for {
		if cur == nil {
			if r.ctx.Err() != nil {
				return
			}
			var req *restartRequest // a Restart during backoff: answered by this start
			if r.wait >= 0 {
				r.s.setStatus(StateBackoff, nil)
				r.log.Info("restarting after backoff", "wait", r.wait)
				select {
				case <-r.ctx.Done():
					return
				case <-r.after(r.wait):
				case req = <-r.s.requests:
					r.backoff.Reset()
					r.s.setCrashLooping(false)
				}
			}
			c, _, err := r.startReady(nil, nil)
			if err == nil {
				cur = c
				r.makeCurrent(c)
			} else if r.ctx.Err() == nil {
				r.crashed(c, err)
			}
			if req != nil {
				req.reply <- err
			}
			if r.ctx.Err() != nil {
				if cur != nil {
					r.shutdown(cur)
				}
				return
			}
			continue
		}
		select {
		case <-r.ctx.Done():
			r.shutdown(cur)
			return
		case <-cur.Done():
			r.s.setStatus(StateBackoff, nil)
			r.exited(cur)
			cur = nil
		case req := <-r.s.requests:
			cur = r.replace(cur, req)
		}
	}
}

// startReady starts a child and waits until it is ready. On failure the
// child, if it was started, is stopped and returned with the error. While
// waiting, an exit of old (the child being replaced) is handled as a crash
// and reported by oldExited; abort cancels the wait.
func (r *runner) startReady(abort <-chan struct{}, old *Child) (c *Child, oldExited bool, err error) {
	cmd, err := r.s.Command()
	if err != nil {
		return nil, false, fmt.Errorf("monitor: %s: %w: command: %w", r.s.Name, ErrStart, err)
	}
	c, err = Start(r.s.Starter, cmd)
	if err != nil {
		return nil, false, err
	}
	r.log.Info("started", "pid", c.Pid())
	if old == nil {
		r.s.setStatus(StateStarting, c)
	}
	if r.s.Ready == nil {
		return c, false, nil
	}
	rctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- r.s.Ready(rctx, c) }()
	timeout := r.after(r.readyTimeout)
	var oldDone <-chan struct{}
	if old != nil {
		oldDone = old.Done()
	}
	for err == nil {
		select {
		case rerr := <-result:
			result = nil
			if rerr == nil {
				return c, oldExited, nil
			}
			err = fmt.Errorf("monitor: %s (pid %d) not ready: %w", r.s.Name, c.Pid(), rerr)
		case <-c.Done():
			err = fmt.Errorf("monitor: %s not ready: %w", r.s.Name, c.exitErr())
		case <-timeout:
			err = fmt.Errorf("monitor: %s (pid %d): %w after %v", r.s.Name, c.Pid(), ErrReadyTimeout, r.readyTimeout)
		case <-r.ctx.Done():
			err = fmt.Errorf("monitor: %s (pid %d) not ready: %w", r.s.Name, c.Pid(), r.ctx.Err())
		case <-abort:
			err = fmt.Errorf("monitor: %s (pid %d) not ready: restart canceled", r.s.Name, c.Pid())
		case <-oldDone:
			oldDone, oldExited = nil, true
			r.s.setStatus(StateStarting, c)
			r.exited(old)
		}
	}
	cancel()
	if result != nil {
		<-result // Ready must return once rctx is done
	}
	r.log.Warn("not ready, stopping", "pid", c.Pid(), "err", err)
	c.Stop(r.stopTimeout)
	return c, oldExited, err
}

// replace is a rolling replace of cur; it returns the new current child (cur
// if the replacement failed, nil if cur crashed meanwhile and the
// replacement failed).
func (r *runner) replace(cur *Child, req *restartRequest) *Child {
	r.log.Info("replacing", "old", cur.Pid())
	c, oldExited, err := r.startReady(req.ctx.Done(), cur)
	if err != nil {
		req.reply <- err
		if oldExited {
			return nil // the crash is accounted for: back off, then start
		}
		return cur // if it has exited since, the loop sees it
	}
	r.makeCurrent(c)
	r.retiring.Add(1)
	if r.s.RetireInBackground {
		req.reply <- nil
	}
	go func() {
		defer r.retiring.Done()
		err := r.drainStop(cur)
		if !r.s.RetireInBackground {
			req.reply <- err
		} else if err != nil {
			r.log.Error("stop the replaced child", "pid", cur.Pid(), "err", err)
		}
		r.log.Info("replaced", "old", cur.Pid(), "new", c.Pid())
	}()
	return c
}

func (r *runner) makeCurrent(c *Child) {
	r.log.Info("ready", "pid", c.Pid())
	r.s.setStatus(StateReady, c)
	if r.s.OnReady != nil {
		r.s.OnReady(c)
	}
}

// exited handles an unexpected exit of the current child.
func (r *runner) exited(c *Child) {
	r.crashed(c, c.exitErr())
	if r.s.OnExit != nil {
		r.s.OnExit(c, c.Err())
	}
}

// crashed records a crash (c is nil if it never started) and sets the wait
// before the next start.
func (r *runner) crashed(c *Child, err error) {
	var uptime time.Duration
	if c != nil {
		uptime = time.Since(c.StartedAt())
	}
	r.wait = r.backoff.Next(uptime)
	looping := r.backoff.Failures() >= crashLoopFailures
	if looping {
		r.log.Error("crash looping", "failures", r.backoff.Failures(), "uptime", uptime, "err", err)
	} else {
		r.log.Warn("crashed", "uptime", uptime, "err", err)
	}
	r.s.mu.Lock()
	r.s.status.Restarts++
	r.s.status.CrashLooping = looping
	r.s.status.LastError = err.Error()
	r.s.status.Err = err
	r.s.mu.Unlock()
}

func (r *runner) shutdown(c *Child) {
	r.log.Info("stopping", "pid", c.Pid())
	r.s.setStatus(StateStopping, c)
	if err := r.drainStop(c); err != nil {
		r.log.Error("stop", "pid", c.Pid(), "err", err)
	}
}

// drainStop drains c, bounded by DrainTimeout even after Run's context is
// done, then stops it.
func (r *runner) drainStop(c *Child) error {
	if r.s.Drain != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), r.drainTimeout)
		r.s.Drain(ctx, c)
		cancel()
	}
	return c.Stop(r.stopTimeout)
}

// setStatus sets the state and the current child (nil: none).
func (s *Supervisor) setStatus(st State, c *Child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.State = st
	s.status.Pid, s.status.StartedAt = 0, time.Time{}
	if c != nil {
		s.status.Pid, s.status.StartedAt = c.Pid(), c.StartedAt()
	}
}

func (s *Supervisor) setCrashLooping(v bool) {
	s.mu.Lock()
	s.status.CrashLooping = v
	s.mu.Unlock()
}
