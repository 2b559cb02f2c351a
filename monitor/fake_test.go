package monitor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// events records callbacks and signals in order, as "ready:1", "term:2", ...
type events struct {
	mu   sync.Mutex
	list []string
	ch   chan string
}

func newEvents() *events { return &events{ch: make(chan string, 1024)} }

func (e *events) add(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	e.mu.Lock()
	e.list = append(e.list, s)
	e.mu.Unlock()
	e.ch <- s
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

func (e *events) has(s string) bool { return slices.Contains(e.all(), s) }

// wait waits until event s has happened.
func (e *events) wait(t *testing.T, s string) {
	t.Helper()
	if e.has(s) {
		return
	}
	timeout := time.After(deadline)
	for {
		select {
		case got := <-e.ch:
			if got == s {
				return
			}
		case <-timeout:
			t.Fatalf("no event %q; have %v", s, e.all())
		}
	}
}

// after checks that want appear in this order after event from.
func (e *events) after(t *testing.T, from string, want ...string) {
	t.Helper()
	all := e.all()
	i := slices.Index(all, from)
	if i < 0 {
		t.Fatalf("no event %q in %v", from, all)
	}
	if got := all[i+1:]; !slices.Equal(got, want) {
		t.Fatalf("after %q got events %v, want %v", from, got, want)
	}
}

var errKilled = errors.New("fake: killed by signal")

// fakeProc is a process whose exit and readiness the test triggers.
type fakeProc struct {
	pid        int
	ev         *events
	ignoreTerm bool
	ready      chan error // fed by the test, read by fakeReady
	exitCh     chan error
	exitOnce   sync.Once
	exitedFlag chan struct{}
}

func (p *fakeProc) exit(err error) {
	p.exitOnce.Do(func() {
		close(p.exitedFlag)
		p.exitCh <- err
	})
}

func (p *fakeProc) Pid() int { return p.pid }

func (p *fakeProc) Signal(sig syscall.Signal) error {
	select {
	case <-p.exitedFlag:
		return os.ErrProcessDone
	default:
	}
	switch sig {
	case syscall.SIGTERM:
		p.ev.add("term:%d", p.pid)
		if !p.ignoreTerm {
			p.exit(errKilled)
		}
	case syscall.SIGKILL:
		p.ev.add("kill:%d", p.pid)
		p.exit(errKilled)
	default:
		p.ev.add("%v:%d", sig, p.pid)
	}
	return nil
}

func (p *fakeProc) Wait() error { return <-p.exitCh }

// fakeStarter starts fakeProcs with pids 1, 2, 3, ...
type fakeStarter struct {
	ev         *events
	ignoreTerm bool

	mu      sync.Mutex
	next    int
	fail    []error // returned by the next starts
	procs   map[int]*fakeProc
	started chan *fakeProc
}

func newFakeStarter(ev *events) *fakeStarter {
	return &fakeStarter{ev: ev, procs: map[int]*fakeProc{}, started: make(chan *fakeProc, 64)}
}

func (s *fakeStarter) Start(c *Command) (Process, error) {
	s.mu.Lock()
	if len(s.fail) > 0 {
		err := s.fail[0]
		s.fail = s.fail[1:]
		s.mu.Unlock()
		return nil, err
	}
	s.next++
	p := &fakeProc{
		pid:        s.next,
		ev:         s.ev,
		ignoreTerm: s.ignoreTerm,
		ready:      make(chan error, 1),
		exitCh:     make(chan error, 1),
		exitedFlag: make(chan struct{}),
	}
	s.procs[p.pid] = p
	s.mu.Unlock()
	s.started <- p
	return p, nil
}

func (s *fakeStarter) proc(pid int) *fakeProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[pid]
}

// waitStart returns the next started process.
func (s *fakeStarter) waitStart(t *testing.T) *fakeProc {
	t.Helper()
	select {
	case p := <-s.started:
		return p
	case <-time.After(deadline):
		t.Fatal("no process started")
		return nil
	}
}

// fakeReady is a Supervisor.Ready that waits for the test to feed p.ready.
func (s *fakeStarter) fakeReady(ctx context.Context, c *Child) error {
	select {
	case err := <-s.proc(c.Pid()).ready:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fakeClock is a Supervisor.After whose timers the test fires.
type fakeClock struct{ timers chan fakeTimer }

type fakeTimer struct {
	d time.Duration
	c chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{timers: make(chan fakeTimer, 64)} }

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	t := fakeTimer{d: d, c: make(chan time.Time, 1)}
	f.timers <- t
	return t.c
}

// next returns the next timer asked for, checking its duration.
func (f *fakeClock) next(t *testing.T, want time.Duration) fakeTimer {
	t.Helper()
	select {
	case tm := <-f.timers:
		if tm.d != want {
			t.Fatalf("timer of %v, want %v", tm.d, want)
		}
		return tm
	case <-time.After(deadline):
		t.Fatalf("no timer of %v asked for", want)
		return fakeTimer{}
	}
}

func (tm fakeTimer) fire() { tm.c <- time.Time{} }
