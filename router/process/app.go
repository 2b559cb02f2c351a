package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
	"github.com/olio-dev/olio/router/internal/appleg"
)

// Ready modes: how a router learns its app is ready.
const (
	ReadyPort   = "port"   // the app accepts connections on PORT
	ReadyNotify = "notify" // the app sends READY=1 to $NOTIFY_SOCKET
)

// instance is one run of the app: its port, its transport and its in-flight count. A rolling
// restart has two at once, the old draining while the new takes traffic.
type instance struct {
	port      int
	notify    *monitor.Notify
	transport *appleg.App
	inFlight  atomic.Int64
	upgraded  atomic.Int64 // of inFlight, upgraded connections (WebSocket): not waited for by a hand-over
	child     *monitor.Child
	retired   bool // drained as an old instance (apps.mu): counted in apps.draining until it exits
}

// appHost is what the app's instances need of their router.
type appHost interface {
	conf() *descend.Config
	workers() int
	exclusive() bool // --handover exclusive
	// appOutput passes one of an app's output streams into the log.
	appOutput(stream string) io.Writer
	report(s *descend.State) // to the master
	appReady()               // an instance became current
	// appReplaced tells the app of old, which a new instance replaces, that every key of
	// the worker leaves it; its requests have been waited for since start.
	appReplaced(ctx context.Context, old *instance, start time.Time)
}

// apps tracks the app's instances and which one is current.
type apps struct {
	host      appHost
	logger    *slog.Logger
	heldTotal *atomic.Uint64 // the router's count of requests that waited

	current atomic.Pointer[instance]
	mu      sync.Mutex
	changed chan struct{}     // closed and replaced at every change of current
	pending *instance         // made by command, claimed by ready
	byPid   map[int]*instance // started instances
	gen     int               // instances made so far
	held    atomic.Int64      // requests waiting in wait for an instance

	// stopping is the router's stop deadline once it is stopping: a drain then ends with
	// it, so that the whole graceful stop fits in --shutdown-timeout and the app still gets
	// its SIGTERM before the master's patience runs out.
	stopping atomic.Pointer[context.Context]

	// draining counts the old instances draining or stopping after a rolling restart, which
	// runs on without waiting for them (monitor.Supervisor.RetireInBackground).
	draining atomic.Int64

	// forgetting counts the forget goroutines, which end once their process has exited.
	forgetting sync.WaitGroup

	// explained is set once the router has logged why its app is not ready; cleared when
	// an instance becomes ready.
	explained atomic.Bool
}

func newApps(host appHost, logger *slog.Logger, heldTotal *atomic.Uint64) *apps {
	return &apps{host: host, logger: logger, heldTotal: heldTotal, changed: make(chan struct{}), byPid: map[int]*instance{}}
}

// setCurrent makes inst (possibly nil) the target of local requests and wakes the
// requests waiting for a change.
func (a *apps) setCurrent(inst *instance) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.current.Store(inst)
	close(a.changed)
	a.changed = make(chan struct{})
}

// clearCurrent stops routing to inst if it is still the current instance.
func (a *apps) clearCurrent(inst *instance) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current.Load() == inst {
		a.current.Store(nil)
		close(a.changed)
		a.changed = make(chan struct{})
	}
}

// wait returns the current instance, other than avoid, waiting up to d for one.
func (a *apps) wait(ctx context.Context, d time.Duration, avoid *instance) *instance {
	if inst := a.current.Load(); inst != nil && inst != avoid {
		return inst
	}
	a.heldTotal.Add(1)
	a.held.Add(1)
	defer a.held.Add(-1)
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		a.mu.Lock()
		ch, inst := a.changed, a.current.Load()
		a.mu.Unlock()
		if inst != nil && inst != avoid {
			return inst
		}
		select {
		case <-ch:
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// acquire returns the current instance (other than avoid) with its in-flight count taken,
// waiting up to d. The re-check after taking the count closes the race with a rolling
// restart's drain, which switches first and then waits for the count to reach zero.
func (a *apps) acquire(ctx context.Context, d time.Duration, avoid *instance) *instance {
	for {
		inst := a.wait(ctx, d, avoid)
		if inst == nil {
			return nil
		}
		inst.inFlight.Add(1)
		if a.current.Load() == inst {
			return inst
		}
		inst.inFlight.Add(-1)
	}
}

// command makes the Command for the next app instance: a fresh private port, and a fresh
// notify socket in notify mode.
func (a *apps) command() (*monitor.Command, error) {
	cfg := a.host.conf()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.gen++
	gen := a.gen
	a.mu.Unlock()
	inst := &instance{port: port}
	env := ChildEnv(os.Environ(),
		"PORT="+strconv.Itoa(port),
		"OLIO_INDEX="+strconv.Itoa(cfg.Index),
		"OLIO_WORKERS="+strconv.Itoa(a.host.workers()),
		"OLIO_SECRET="+cfg.Secret,
		"OLIO_ADDR="+cfg.PublicAddr,
		// The front's address: where the owner of a key is reached across hosts.
		"OLIO_CLUSTER_ADDR="+cfg.ClusterAddr,
	)
	if cfg.ReadyMode == ReadyNotify {
		path := RunDir(cfg.RunDir).NotifySocket(cfg.Index, gen)
		n, err := monitor.ListenNotify(path)
		if err != nil {
			return nil, err
		}
		inst.notify = n
		env = append(env, "NOTIFY_SOCKET="+path)
	}
	inst.transport = appleg.New(port)
	a.mu.Lock()
	unstarted := a.pending // made for a start that failed: never claimed by readyCheck
	a.pending = inst
	a.mu.Unlock()
	if unstarted != nil && unstarted.notify != nil {
		unstarted.notify.Close()
	}
	return &monitor.Command{
		Name:   fmt.Sprintf("app %d", cfg.Index),
		Path:   cfg.AppPath,
		Args:   cfg.AppArgs,
		Env:    env,
		Dir:    cfg.AppDir,
		Stdout: a.host.appOutput("stdout"),
		Stderr: a.host.appOutput("stderr"),
	}, nil
}

// readyCheck waits until the app instance c is ready, by port or by notify.
func (a *apps) readyCheck(ctx context.Context, c *monitor.Child) error {
	a.mu.Lock()
	inst := a.pending
	a.pending = nil
	if inst != nil {
		inst.child = c
		a.byPid[c.Pid()] = inst
	}
	a.mu.Unlock()
	if inst == nil {
		return errors.New("router: app started without a command")
	}
	a.host.report(stateStarting(c))
	err := a.waitReady(ctx, inst, c)
	if err != nil {
		a.explainNotReady(inst, c, err)
		// The supervisor stops an app that did not become ready and never hands it to
		// onReady, drain or onExit: release the instance (its notify socket, its
		// transport) once the process is gone.
		a.goForget(c)
	}
	return err
}

func (a *apps) waitReady(ctx context.Context, inst *instance, c *monitor.Child) error {
	if inst.notify != nil {
		select {
		case <-inst.notify.Ready():
			return nil
		case <-c.Done():
			return monitor.ErrExited
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer a.appPortWatch(ctx, c, inst.port)() // an app listening elsewhere is reported within seconds
	return monitor.WaitDial(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(inst.port)), c)
}

// explainNotReady logs, once until an instance becomes ready, why the app is not ready and
// what to check; the supervisor logs every failed start, this says what it means.
func (a *apps) explainNotReady(inst *instance, c *monitor.Child, err error) {
	if a.stopping.Load() != nil || a.explained.Swap(true) {
		return
	}
	exited := errors.Is(err, monitor.ErrExited)
	select {
	case <-c.Done():
		exited = true
	default:
	}
	var why string
	switch {
	case inst.notify != nil && exited:
		why = "the app exited before it sent READY=1 to $NOTIFY_SOCKET (--ready notify)"
	case inst.notify != nil:
		why = "the app did not send READY=1 to $NOTIFY_SOCKET within --ready-timeout (--ready notify)"
	case exited:
		why = fmt.Sprintf("the app exited before it accepted connections on $PORT (127.0.0.1:%d): an app must serve HTTP on $PORT until it is stopped", inst.port)
	default:
		why = fmt.Sprintf("the app did not accept connections on $PORT (127.0.0.1:%d) within --ready-timeout: does it listen on $PORT, on 127.0.0.1?", inst.port)
	}
	a.logger.Error("app not ready: "+why+"; its keys get 503 after --forward-timeout until it is",
		"app_pid", c.Pid(), "err", err)
}

// onReady switches local traffic to the app instance c. Under --handover exclusive, the
// instance it replaces first finishes its requests (new ones wait, up to the forward
// timeout) and is told its keys leave it, so that no key is served by both at once.
func (a *apps) onReady(c *monitor.Child) {
	inst := a.lookup(c)
	if inst == nil {
		return
	}
	a.explained.Store(false)
	if old := a.current.Load(); old != nil && old != inst && a.host.exclusive() {
		a.handOver(old)
	}
	a.setCurrent(inst)
	a.logger.Info("app ready", "app_pid", c.Pid(), "port", inst.port)
	a.host.appReady()
}

// handOver takes local traffic off old and waits until its requests (but upgraded
// connections) are done, up to the forward timeout, then sends the app's hand-over notice.
func (a *apps) handOver(old *instance) {
	a.clearCurrent(old)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), a.host.conf().ForwardTimeout)
	defer cancel()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for old.inFlight.Load()-old.upgraded.Load() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
			a.logger.Warn("hand-over: the old app instance still has requests running; the new one starts", "in_flight", old.inFlight.Load())
		case <-t.C:
		}
	}
	a.host.appReplaced(ctx, old, start)
}

// drain waits until the old instance has no request in flight (or ctx ends).
func (a *apps) drain(ctx context.Context, c *monitor.Child) {
	inst := a.lookup(c)
	if inst == nil {
		return
	}
	a.clearCurrent(inst)
	a.mu.Lock()
	if !inst.retired {
		inst.retired = true
		a.draining.Add(1)
	}
	a.mu.Unlock()
	// However the drain ends (done, timed out, stopping), the instance is released once its
	// process has exited: the supervisor stops it next.
	defer func() { a.goForget(c) }()
	// Close the idle keep-alive connections once the last request is done: the transport may
	// hold one it dialed and never used, and net/http's graceful Shutdown in the app waits up
	// to 5s for such a connection, which would delay every stop and rolling restart.
	defer inst.transport.CloseIdleConnections()
	var stopping <-chan struct{}
	if sc := a.stopping.Load(); sc != nil {
		stopping = (*sc).Done()
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	cut := func(why string) {
		a.logger.Warn("drain ended by "+why+": stopping the old app with its connections open",
			"app_pid", c.Pid(), "connections", inst.inFlight.Load(), "shutdown_timeout", a.host.conf().ShutdownTimeout)
	}
	for inst.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			cut("--shutdown-timeout")
			return
		case <-stopping:
			cut("the router's stop")
			return
		case <-t.C:
		}
	}
}

// goForget forgets c on a goroutine of its own, counted in forgetting: the supervisor, which
// stops every process before its Run returns, calls it.
func (a *apps) goForget(c *monitor.Child) {
	a.forgetting.Add(1)
	go func() {
		defer a.forgetting.Done()
		a.forget(c)
	}()
}

// forget releases an instance once its process has exited.
func (a *apps) forget(c *monitor.Child) {
	<-c.Done()
	a.mu.Lock()
	inst := a.byPid[c.Pid()]
	delete(a.byPid, c.Pid())
	if inst != nil && inst.retired {
		a.draining.Add(-1)
	}
	a.mu.Unlock()
	if inst != nil {
		inst.transport.CloseIdleConnections()
		if inst.notify != nil {
			inst.notify.Close()
		}
	}
}

// onExit handles an app exit the supervisor did not ask for: new local requests wait for
// the replacement; the ones in flight get 502.
func (a *apps) onExit(c *monitor.Child, err error) {
	if inst := a.lookup(c); inst != nil {
		a.clearCurrent(inst)
	}
	a.logger.Warn("app exited", "app_pid", c.Pid(), "err", err)
	a.goForget(c)
}

func (a *apps) lookup(c *monitor.Child) *instance {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byPid[c.Pid()]
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("router: find a free port for the app: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
