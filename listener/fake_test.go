package listener

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
)

// fakeRouters is a monitor.Starter whose processes are fake routers: goroutines that
// speak descend on the socket the master hands a router as fd 3, so that the master's
// operations are tested without forking. Every router's app is ready as soon as the
// router has joined.
type fakeRouters struct {
	// restartErr, if set, is the error a router answers a Restart with ("": success),
	// given its index and the app its config names.
	restartErr func(index int, app string) string
	// appFails, if set, says which routers' apps never become ready: they start one app,
	// then another.
	appFails func(index int) bool
	// newMasterFails makes a hot upgrade's new master exit without saying it is ready.
	newMasterFails bool
	// hold, if set, is received from before a Restart is answered: a test holds a
	// reload part way with it.
	hold chan struct{}

	mu      sync.Mutex
	pid     int
	events  []string            // what the routers were asked, in order
	changed chan struct{}       // closed and replaced whenever events grows
	live    map[int]*fakeRouter // the routers running, by pid
}

func newFakeRouters() *fakeRouters {
	return &fakeRouters{pid: 1000, changed: make(chan struct{}), live: map[int]*fakeRouter{}}
}

// Start starts a fake router for the command's --index, or a fake new master for a hot
// upgrade's command.
func (f *fakeRouters) Start(cmd *monitor.Command) (monitor.Process, error) {
	if slices.Contains(cmd.Args, UpgradeFlag) {
		return f.startNewMaster(cmd)
	}
	i := slices.Index(cmd.Args, "--index")
	if i < 0 || i+1 >= len(cmd.Args) || len(cmd.ExtraFiles) == 0 {
		return nil, fmt.Errorf("%w: not a router's command line: %v", monitor.ErrStart, cmd.Args)
	}
	index, err := strconv.Atoi(cmd.Args[i+1])
	if err != nil {
		return nil, err
	}
	c, err := net.FileConn(cmd.ExtraFiles[0]) // a dup: the master closes its file
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.pid++
	p := &fakeRouter{f: f, index: index, pid: f.pid, conn: descend.NewConn(c), done: make(chan struct{}),
		killed: make(chan struct{})}
	f.live[p.pid] = p
	f.mu.Unlock()
	go p.serve()
	return p, nil
}

// note records an event.
func (f *fakeRouters) note(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, fmt.Sprintf(format, args...))
	close(f.changed)
	f.changed = make(chan struct{})
}

// waitFor waits until some event satisfies ok, and fails the test if none does in time.
func (f *fakeRouters) waitFor(t *testing.T, what string, ok func(event string) bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		found := slices.ContainsFunc(f.events, ok)
		changed := f.changed
		f.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %s within 10s; events: %q", what, f.take())
		}
	}
}

// running names the routers still running ("worker 1 (pid 1003)"), by index.
func (f *fakeRouters) running() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := slices.Collect(maps.Values(f.live))
	slices.SortFunc(ps, func(a, b *fakeRouter) int { return cmp.Or(a.index-b.index, a.pid-b.pid) })
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("worker %d (pid %d)", p.index, p.pid)
	}
	return out
}

// runningIndexes is the index of every router still running, in order.
func (f *fakeRouters) runningIndexes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, p := range f.live {
		out = append(out, p.index)
	}
	slices.Sort(out)
	return out
}

// take returns the events so far and forgets them.
func (f *fakeRouters) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ev := f.events
	f.events = nil
	return ev
}

// fakeRouter is one fake router process.
type fakeRouter struct {
	f     *fakeRouters
	index int
	pid   int
	conn  *descend.Conn
	done  chan struct{}
	app   string

	killed   chan struct{} // closed by Signal: a held Restart gives up
	killOnce sync.Once
}

func (p *fakeRouter) Pid() int { return p.pid }

// Signal ends the router, whatever the signal: it closes its side of the socket.
func (p *fakeRouter) Signal(syscall.Signal) error {
	p.killOnce.Do(func() { close(p.killed) })
	return p.conn.Close()
}

func (p *fakeRouter) Wait() error { <-p.done; return nil }

// serve says hello and answers the master until the connection closes.
func (p *fakeRouter) serve() {
	defer close(p.done)
	defer p.conn.Close()
	defer func() { // before done: a router the master waited for is no longer running
		p.f.mu.Lock()
		delete(p.f.live, p.pid)
		p.f.mu.Unlock()
	}()
	cfg, _, err := descend.Join(p.conn, &descend.Hello{Index: p.index, PID: p.pid})
	if err != nil {
		return
	}
	p.app = filepath.Base(cfg.AppPath)
	if cfg.Held {
		p.f.note("held %d", p.index)
	}
	if !p.startApp() {
		return
	}
	for {
		msg, err := p.conn.Recv()
		if err != nil {
			return
		}
		var ans descend.Message
		switch msg := msg.(type) {
		case *descend.Config:
			p.app = filepath.Base(msg.AppPath)
		case *descend.Membership:
			p.f.note("membership %d: epoch %d, %d workers", p.index, msg.Epoch, msg.Workers)
			ans = &descend.Result{ID: msg.ID}
		case *descend.Restart:
			ans = p.restart(msg)
		case *descend.Drain:
			p.f.note("drain %d", p.index)
			ans = &descend.Result{ID: msg.ID}
		case *descend.Release:
			p.f.note("release %d", p.index)
			ans = &descend.Result{ID: msg.ID}
		case *descend.StatsRequest:
			ans = &descend.Stats{ID: msg.ID, Index: p.index, State: descend.StateReady, AppPID: p.pid + 100000}
		case descend.Request:
			ans = &descend.Result{ID: msg.RequestID()}
		}
		if ans != nil && p.conn.Send(ans) != nil {
			return
		}
	}
}

// startApp reports the app ready at once, or, if the fakeRouters say it fails, one app
// starting and then another. It returns false if the connection failed.
func (p *fakeRouter) startApp() bool {
	app := p.pid + 100000
	if p.f.appFails != nil && p.f.appFails(p.index) {
		return p.conn.Send(&descend.State{Index: p.index, State: descend.StateStarting, AppPID: app}) == nil &&
			p.conn.Send(&descend.State{Index: p.index, State: descend.StateStarting, AppPID: app + 1}) == nil
	}
	return p.conn.Send(&descend.State{Index: p.index, State: descend.StateReady, AppPID: app}) == nil
}

// restart answers a Restart as the fakeRouters say.
func (p *fakeRouter) restart(msg *descend.Restart) descend.Message {
	p.f.note("restart %d onto %s", p.index, p.app)
	if p.f.hold != nil {
		select {
		case <-p.f.hold:
		case <-p.killed:
		}
	}
	r := &descend.Result{ID: msg.ID}
	if p.f.restartErr != nil {
		r.Error = p.f.restartErr(p.index, p.app)
	}
	return r
}

// startNewMaster starts a fake new master: it reads the old master's state, says it is
// ready, and waits for the old master to say it has drained.
func (f *fakeRouters) startNewMaster(cmd *monitor.Command) (monitor.Process, error) {
	var fds [3]*os.File // ready, state, drained: dups, as the old master closes its copies
	for i := range fds {
		fd, err := syscall.Dup(int(cmd.ExtraFiles[1+i].Fd()))
		if err != nil {
			return nil, err
		}
		fds[i] = os.NewFile(uintptr(fd), "upgrade pipe")
	}
	f.mu.Lock()
	f.pid++
	p := &fakeMasterProcess{pid: f.pid, ready: fds[0], state: fds[1], drained: fds[2], done: make(chan struct{})}
	f.mu.Unlock()
	go func() {
		defer close(p.done)
		defer p.Signal(syscall.SIGKILL)
		h, err := ReadHandover(p.state)
		if err != nil {
			f.note("new master: %v", err)
			return
		}
		f.note("new master: %d workers, %d configured", h.Workers, h.Configured)
		if f.newMasterFails || descend.WordReady.Say(p.ready) != nil {
			return
		}
		if err := descend.WordDrained.Await(p.drained); err != nil {
			f.note("new master: %v", err)
			return
		}
		f.note("new master: the old one has drained")
	}()
	return p, nil
}

// fakeMasterProcess is a fake new master.
type fakeMasterProcess struct {
	pid                   int
	ready, state, drained *os.File
	done                  chan struct{}
}

func (p *fakeMasterProcess) Pid() int { return p.pid }

// Signal ends the new master: it closes its pipes.
func (p *fakeMasterProcess) Signal(syscall.Signal) error {
	p.ready.Close()
	p.state.Close()
	p.drained.Close()
	return nil
}

func (p *fakeMasterProcess) Wait() error { <-p.done; return nil }

// fakeMaster runs a master with cfg whose routers are f's, until the test ends (or Run
// returns: ran is closed then). opts adds to the options fakeMaster sets. When the test
// ends it stops the master and checks that Run returns and that no router is left running.
func fakeMaster(t *testing.T, cfg Config, f *fakeRouters, opts Options) (m *Master, ran <-chan struct{}) {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	cfg.RunDir = t.TempDir()
	opts.Starter, opts.Exe, opts.DemoArgs, opts.LogOutput = f, "/olio/test", []string{"demo"}, discard{}
	m, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { defer close(done); runErr = m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			// Run waits for every router it started: one left running outside the table
			// (a scale down that stopped too few) keeps it waiting.
			t.Errorf("Run did not return within 30s of the stop; fake routers still running: %q", f.running())
			return
		}
		if runErr != nil {
			t.Errorf("Run: %v", runErr)
		}
		if left := f.running(); len(left) > 0 {
			t.Errorf("routers still running after Run returned: %q", left)
		}
		m.lnFile.Close()
	})
	start := cfg.Workers
	if opts.Running != nil {
		start = opts.Running.Workers
	}
	waitUntil(t, fmt.Sprintf("the first %d workers", start), func() bool { return len(m.snapshot().workers) == start })
	for _, w := range m.snapshot().workers {
		waitClosed(t, fmt.Sprintf("worker %d ready", w.index), w.ready)
	}
	f.take()
	return m, done
}

// waitClosed waits until ch is closed, and fails the test if it is not in time.
func waitClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
	}
}

// recvErr receives an operation's error from ch, and fails the test if none comes in time.
func recvErr(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not return within 30s", what)
		return nil
	}
}

// waitUntil polls cond until it holds, and fails the test if it does not in time.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("no %s within 10s", what)
		}
	}
}

// discard is an io.Writer that drops everything.
type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
