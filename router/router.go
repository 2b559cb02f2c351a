package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
	"github.com/olio-dev/olio/mux"
)

// membership is the cluster shape a router routes by.
type membership struct {
	epoch   uint64
	workers int
}

// Router is one worker. It is made and run by Run.
type Router struct {
	index  int
	set    atomic.Pointer[settings]
	logger *slog.Logger
	// errorLog takes net/http's and ReverseProxy's complaints into the structured log.
	errorLog *log.Logger

	ctl      *descend.Conn
	listener *os.File // the shared public listening socket
	fitProcs bool     // set GOMAXPROCS to the router's share of the CPUs (not in tests)
	pinned   bool     // --cpu-affinity pinned it to one CPU

	// handler serves this worker's own requests in-process (embedded mode, Serve); nil:
	// they go to the app child.
	handler http.Handler

	members  atomic.Pointer[membership]
	handover *handover // exclusive hand-over of moving keys
	counters *counters
	hot      *hotKeys // the keys this worker served as owner (--key-stats)
	apps     *apps
	sup      *monitor.Supervisor
	pool     *mux.Pool

	remoteTransport *peerTransport // forward's streams to the peers
	peers           *peerServer    // the private side, serving what peers forward
	private         *mux.Listener  // where peers reach this router
	handoff         *handoff       // handoff.go
	queue           *connQueue     // handed-off connections for the current public server

	alog   atomic.Pointer[accessLog] // the access log; nil while off
	alogMu sync.Mutex                // serialises opening and closing alog

	mu       sync.Mutex
	public   *publicServer  // non-nil while accepting on the public listener
	retiring sync.WaitGroup // public servers stopping since the router stopped accepting
	draining bool           // told to stop accepting for good
	stopping bool
}

// settings are the parts of the config a reload may change, swapped as one.
type settings struct {
	cfg    descend.Config
	key    KeySpec
	secret []byte
}

func newSettings(cfg *descend.Config) (*settings, error) {
	key, err := ParseKeySpec(cfg.Key)
	if err != nil {
		return nil, err
	}
	return &settings{cfg: *cfg, key: key, secret: []byte(cfg.Secret)}, nil
}

func (r *Router) settings() *settings   { return r.set.Load() }
func (r *Router) conf() *descend.Config { return &r.set.Load().cfg }

// workers is the current worker count.
func (r *Router) workers() int {
	if m := r.members.Load(); m != nil {
		return m.workers
	}
	return 0
}

// Run is the router's life: hello, config, app, routing, until the master says stop or goes
// away. ctl is the descend socket, listener the shared public socket.
func Run(ctx context.Context, index int, ctl *descend.Conn, listener *os.File, logger *slog.Logger) error {
	return run(ctx, index, ctl, listener, logger, nil)
}

// run is Run, with h serving the worker's own requests in-process when it is not nil
// (embedded mode: Serve).
func run(ctx context.Context, index int, ctl *descend.Conn, listener *os.File, logger *slog.Logger, h http.Handler) error {
	keepStdout() // before the app starts, which must not inherit the master's stdout
	defer ctl.Close()
	defer listener.Close()
	if err := ctl.Send(&descend.Hello{PID: os.Getpid(), Index: index}); err != nil {
		return err
	}
	m, err := ctl.Recv()
	if err != nil {
		return fmt.Errorf("router: waiting for config: %w", err)
	}
	cfg, ok := m.(*descend.Config)
	if !ok {
		return fmt.Errorf("%w, got %s", ErrNoConfig, m.Type())
	}
	if cfg.Index != index {
		return fmt.Errorf("router: started as worker %d, configured as %d", index, cfg.Index)
	}
	set, err := newSettings(cfg)
	if err != nil {
		return err
	}
	// The master sends the membership right after the config: apply it before the app
	// starts, so that the app's OLIO_WORKERS is right from its first run.
	m, err = ctl.Recv()
	if err != nil {
		return fmt.Errorf("router: waiting for the membership: %w", err)
	}
	if m.Type() != descend.TypeMembership {
		return fmt.Errorf("router: expected the membership after the config, got %s", m.Type())
	}
	r := newRouter(index, set, logger)
	r.ctl, r.listener, r.handler = ctl, listener, h
	r.fitProcs = h == nil // this process is the router alone: size its scheduler
	if err := r.onMembership(m); err != nil {
		return err
	}
	r.pin(cfg.CPU) // affinity.go: before the app starts, so it inherits the mask
	if h != nil {
		r.setAppEnv()
	}
	if cfg.Held {
		// Its own keys wait for the process it replaces to drain.
		r.handover.startHeld(cfg.ShutdownTimeout+cfg.ForwardTimeout, func() {
			r.logger.Warn("not released by the master in time: serving own keys")
		})
	}
	return r.run(ctx)
}

// newRouter makes a router with its settings; Run adds the master connection and the
// public listener.
func newRouter(index int, set *settings, logger *slog.Logger) *Router {
	logger = logger.With("worker", index)
	r := &Router{
		index:    index,
		logger:   logger,
		errorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		counters: newCounters(),
		handover: newHandover(),
		hot:      newHotKeys(time.Now()),
		pool:     mux.NewPool(nil),
	}
	r.set.Store(set)
	r.apps = newApps(r)
	r.remoteTransport = newPeerTransport(r)
	return r
}

func (r *Router) run(ctx context.Context) error {
	defer r.pool.Close()
	if err := r.setAccessLog(r.conf()); err != nil {
		return err
	}
	defer r.closeAccessLog()
	defer r.hot.run(func() string { return r.conf().KeyStats })()
	h, err := newHandoff(r)
	if err != nil {
		return err
	}
	r.handoff = h
	defer h.shutdown()
	private, err := mux.Listen(r.peerPath(), nil)
	if err != nil {
		return err
	}
	peers := r.newPeerServer()
	go peers.Serve(private)
	r.peers, r.private = peers, private
	r.updateAccepting() // from the start, before the app is ready

	// The app: a supervised child, or the embedded handler, ready from the start.
	var stopApp func()
	if r.handler == nil {
		stopApp = r.startApp()
	} else {
		stopApp = r.startEmbedded()
	}

	recvErr := make(chan error, 1)
	go func() { recvErr <- r.recvLoop() }()

	var exitErr error
	select {
	case err := <-recvErr:
		exitErr = err
	case <-ctx.Done():
		// SIGTERM from the master's supervisor: a graceful stop.
	}

	// Shut down: stop accepting, finish what peers sent, stop the app.
	timeout := r.conf().ShutdownTimeout
	if errors.Is(exitErr, ErrMasterGone) {
		timeout = 2 * time.Second // the master is gone: be quick
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r.apps.stopping.Store(&sctx) // the app's last drain ends with this deadline too
	if r.handler != nil {
		runShutdownHooks() // hijacked connections are the handler's to end
	}
	r.stopPublic(sctx)
	peers.Shutdown(sctx)
	private.Close()
	stopApp()
	r.remoteTransport.CloseIdleConnections()
	return exitErr
}

// startApp supervises the app child, and its health checks, until the returned stop is
// called; stop returns once the app has been drained and stopped.
func (r *Router) startApp() (stop func()) {
	r.sup = &monitor.Supervisor{
		Name:         fmt.Sprintf("app %d", r.index),
		Command:      r.apps.command,
		Ready:        r.apps.readyCheck,
		ReadyTimeout: r.conf().ReadyTimeout,
		StopTimeout:  r.conf().ShutdownTimeout,
		DrainTimeout: r.conf().ShutdownTimeout, // a WebSocket that stays open holds a drain this long at most
		OnReady:      r.apps.onReady,
		Drain:        r.apps.drain,
		// A rolling restart goes on to the next worker once this one's new app is ready;
		// the old app drains meanwhile, reported in Stats.Draining.
		RetireInBackground: true,
		OnExit:             r.onAppExit,
		Logger:             r.logger,
	}
	appCtx, stopApp := context.WithCancel(context.Background())
	supDone := make(chan struct{})
	go func() {
		defer close(supDone)
		r.sup.Run(appCtx)
	}()
	healthDone := make(chan struct{}) // health.go
	go func() {
		defer close(healthDone)
		r.checkHealth(appCtx)
	}()
	return func() {
		stopApp()
		<-supDone
		<-healthDone
	}
}

// appStatus is the app's supervisor's status; an embedded worker's app is this process.
func (r *Router) appStatus() monitor.Status {
	if r.sup != nil {
		return r.sup.Status()
	}
	return monitor.Status{State: monitor.StateReady, Pid: os.Getpid(), StartedAt: processStart}
}

// recvLoop reads the master's messages until the connection fails; EOF means the master
// is gone.
func (r *Router) recvLoop() error {
	h := descend.Handlers{
		descend.TypeMembership:   r.onMembership,
		descend.TypeRestart:      r.onRestart,
		descend.TypeDrain:        r.onDrain,
		descend.TypeStatsRequest: r.onStats,
		descend.TypeConfig:       r.onConfig,
		descend.TypePrepare:      r.onPrepare,
		descend.TypeRelease:      r.onRelease,
		descend.TypeKeysRequest:  r.onKeys,
		descend.TypeReopen:       r.onReopen,
	}
	for {
		m, err := r.ctl.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return ErrMasterGone
			}
			return fmt.Errorf("router: from master: %w", err)
		}
		if err := h.Dispatch(m); err != nil {
			r.logger.Error("message from master", "type", m.Type(), "err", err)
		}
	}
}

func (r *Router) onMembership(m descend.Message) error {
	mm := m.(*descend.Membership)
	if cur := r.members.Load(); cur != nil && cur.epoch > mm.Epoch {
		return r.ctl.Send(&descend.Result{ID: mm.ID})
	}
	r.pool.SetPeers(mm.Peers)
	r.members.Store(&membership{epoch: mm.Epoch, workers: mm.Workers})
	r.handover.commit()     // held requests go on by the new count
	r.shareCPUs(mm.Workers) // affinity.go
	workersNow.Store(int64(mm.Workers))
	if r.handler != nil {
		os.Setenv("OLIO_WORKERS", strconv.Itoa(mm.Workers))
	}
	r.logger.Debug("membership", "epoch", mm.Epoch, "workers", mm.Workers)
	r.updateAccepting()
	return r.ctl.Send(&descend.Result{ID: mm.ID})
}

func (r *Router) onRestart(m descend.Message) error {
	id := m.(*descend.Restart).ID
	if r.handler != nil {
		return r.ctl.Send(&descend.Result{ID: id, Error: "an embedded worker has no app to restart: the master replaces the whole process"})
	}
	go func() {
		res := &descend.Result{ID: id}
		if err := r.sup.Restart(context.Background()); err != nil {
			res.Error = err.Error()
		}
		r.sendOrLog(res)
	}()
	return nil
}

func (r *Router) onDrain(m descend.Message) error {
	d := m.(*descend.Drain)
	id := d.ID
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.conf().ShutdownTimeout)
		defer cancel()
		r.stopPublic(ctx)
		if d.Replaced {
			// An embedded worker drained for its replacement (which holds its keys until
			// this answer): finish what peers forwarded too, so that nothing of its keys
			// is running here when the replacement starts serving them. Peers re-dial the
			// replacement, which has bound the same socket path.
			r.peers.Shutdown(ctx)
			r.private.Close()
			r.notifyApp(ctx, Handover{Index: r.index, Epoch: r.members.Load().epoch, Workers: r.workers(), NewWorkers: r.workers(), Reason: "restart"}, nil)
		}
		r.sendOrLog(&descend.Result{ID: id})
	}()
	return nil
}

// onConfig applies a reloaded config. Routing settings (key, secret, timeouts) take effect
// for the next request; the app's command line at the app's next (rolling) restart.
func (r *Router) onConfig(m descend.Message) error {
	cfg := m.(*descend.Config)
	if cfg.Index != r.index {
		return fmt.Errorf("router: config for worker %d sent to worker %d", cfg.Index, r.index)
	}
	set, err := newSettings(cfg)
	if err != nil {
		return err
	}
	r.set.Store(set)
	return r.setAccessLog(cfg) // a reload may turn the access log on, off or elsewhere
}

func (r *Router) onStats(m descend.Message) error {
	id := m.(*descend.StatsRequest).ID
	st := r.appStatus()
	s := &descend.Stats{
		ID:            id,
		Index:         r.index,
		State:         string(st.State),
		AppPID:        st.Pid,
		AppStarted:    st.StartedAt,
		Restarts:      st.Restarts,
		CrashLooping:  st.CrashLooping,
		InFlight:      r.counters.inFlight.Load(),
		Served:        r.counters.served.Load(),
		ForwardedOut:  r.counters.forwardedOut.Load(),
		ForwardedIn:   r.counters.forwardedIn.Load(),
		HandedOut:     r.counters.handedOut.Load(),
		HandedIn:      r.counters.handedIn.Load(),
		Draining:      int(r.apps.draining.Load()),
		Upgraded:      r.counters.upgraded.Load(),
		UpgradesOpen:  r.counters.upgradesOpen.Load(),
		BodyTimeouts:  r.counters.bodyTimeouts.Load(),
		WriteTimeouts: r.counters.writeTimeouts.Load(),
		Goroutines:    goroutines(),
		OpenFDs:       openFDs(),
		Duration:      r.counters.histogram(),
		LastHold:      r.handover.lastHoldTime(),
	}
	s.AccessLogDropped = r.counters.accessDropped.Load()
	s.Held = r.counters.held.Load()
	return r.ctl.Send(s)
}

func (r *Router) sendOrLog(m descend.Message) {
	if err := r.ctl.Send(m); err != nil {
		r.logger.Warn("report to master", "type", m.Type(), "err", err)
	}
}

// appReady is called when an app instance becomes current.
func (r *Router) appReady() {
	st := r.sup.Status()
	r.report(&descend.State{Index: r.index, State: descend.StateReady, AppPID: st.Pid, Restarts: st.Restarts})
}

func (r *Router) onAppExit(c *monitor.Child, err error) {
	r.apps.onExit(c, err)
	st := r.sup.Status()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	r.report(&descend.State{Index: r.index, State: descend.StateBackoff, AppPID: c.Pid(),
		Restarts: st.Restarts, CrashLooping: st.CrashLooping, Error: msg})
}

func stateStarting(c *monitor.Child) *descend.State {
	return &descend.State{State: descend.StateStarting, AppPID: c.Pid()}
}

func (r *Router) report(s *descend.State) {
	s.Index = r.index
	r.sendOrLog(s)
}

// updateAccepting starts or stops accepting on the public listener: a router accepts while
// it is a member and has not been told to drain. It accepts before its app is ready, and
// whether or not it ever is: a request for its keys waits up to --forward-timeout for the
// app, then gets 503, instead of sitting unanswered in the kernel's backlog.
func (r *Router) updateAccepting() {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Before run has made the handoff socket (Run applies the first membership before
	// that), nothing starts: run calls this again once it can serve.
	want := r.handoff != nil && !r.draining && r.index < r.workers()
	switch {
	case want && r.public == nil:
		ln, err := net.FileListener(r.listener)
		if err != nil {
			r.logger.Error("public listener", "err", err)
			return
		}
		srv := r.newPublicServer(r) // limits.go
		srv.ConnContext = connContext
		r.queue = newConnQueue()
		r.public = startPublic(srv, limitConns(ln, r.conf().MaxConns), r.queue) // drain.go
		if err := r.handoff.open(r.queue); err != nil {
			r.logger.Warn("handoff disabled", "err", err)
		}
	case !want && r.public != nil:
		r.handoff.close()
		p := r.public
		r.public, r.queue = nil, nil
		// stopPublic waits for this one too, so that the router does not exit with
		// requests of it in flight.
		r.retiring.Add(1)
		go func() {
			defer r.retiring.Done()
			ctx, cancel := context.WithTimeout(context.Background(), r.conf().ShutdownTimeout)
			defer cancel()
			p.stop(ctx)
		}()
	}
}

// stopPublic stops accepting and waits for the public side's requests to finish.
func (r *Router) stopPublic(ctx context.Context) {
	r.mu.Lock()
	r.draining = true
	srv := r.public
	r.public, r.queue = nil, nil
	r.mu.Unlock()
	r.handoff.close()
	if srv != nil {
		srv.stop(ctx)
	}
	r.retiring.Wait() // bounded by the shutdown timeout
}

// appOutput passes one of the app's output streams into the log, line by line.
func (r *Router) appOutput(stream string) io.Writer {
	return &lineLogger{logger: r.logger, stream: stream, secret: []byte(r.conf().Secret)}
}

func (r *Router) peerPath() string {
	return filepath.Join(r.conf().RunDir, "router-"+strconv.Itoa(r.index)+".sock")
}
