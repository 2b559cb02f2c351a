package process

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/olio-dev/olio/router/keys"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
	"github.com/olio-dev/olio/mux"
	"github.com/olio-dev/olio/router/internal/accesslog"
	"github.com/olio-dev/olio/router/internal/appleg"
	"github.com/olio-dev/olio/router/internal/hotkeys"
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
	// takingOver is what a request held for this replacement's own keys is told if the hold
	// times out (written once: serveLocal passes it on every request).
	takingOver string

	ctl      *descend.Conn
	listener *os.File // the shared public listening socket
	fitProcs bool     // set GOMAXPROCS to the router's share of the CPUs (not in tests)
	pinned   bool     // --cpu-affinity pinned it to one CPU

	// handler serves this worker's own requests in-process (embedded mode, Serve); nil:
	// they go to the app child.
	handler http.Handler
	embed   *Embed // the embedded service's options; nil: not embedded

	members  atomic.Pointer[membership]
	handover *handover // exclusive hand-over of moving keys
	live     upgrades  // the upgraded connections this router's app serves
	passing  upgrades  // the upgraded connections this router forwards to a peer's app
	counters *counters
	hot      *hotkeys.Counter // the keys this worker served as owner (--key-stats)
	apps     *apps
	appLeg   *appleg.Leg // the app leg's hooks into this router (appserve.go)
	sup      *monitor.Supervisor
	pool     *mux.Pool

	remoteTransport *peerTransport // forward's streams to the peers
	peers           *peerServer    // the private side, serving what peers forward
	private         *mux.Listener  // where peers reach this router
	accept          *acceptor      // the public side; nil until run makes it

	alog   atomic.Pointer[accesslog.Log] // the access log; nil while off
	alogMu sync.Mutex                    // serialises opening and closing alog

	tasks tasks // the master's requests still running (spawn)
}

// settings are the parts of the config a reload may change, swapped as one.
type settings struct {
	cfg          descend.Config
	key          keys.Spec
	secret       []byte
	forwardAllow ForwardedAllowIPs // --forwarded-allow-ips
}

// keyHeader is the header the key is read from, "" for a key of another kind.
func (s *settings) keyHeader() string {
	if s.key.Kind == keys.Header {
		return s.key.Name
	}
	return ""
}

// newSettings makes cfg the router's settings, with the defaults where it leaves a value
// 0 that must not be (--header-timeout, --idle-timeout).
func newSettings(cfg *descend.Config) (*settings, error) {
	key, err := keys.Parse(cfg.Key)
	if err != nil {
		return nil, err
	}
	allow, err := ParseForwardedAllowIPs(cfg.ForwardedAllowIPs)
	if err != nil {
		return nil, err
	}
	set := &settings{cfg: *cfg, key: key, secret: []byte(cfg.Secret), forwardAllow: allow}
	set.cfg.HeaderTimeout = cmp.Or(cfg.HeaderTimeout, DefaultHeaderTimeout)
	set.cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	return set, nil
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
	return run(ctx, index, ctl, listener, logger, nil, nil)
}

// run is Run, with h serving the worker's own requests in-process when it is not nil
// (embedded mode: Serve).
func run(ctx context.Context, index int, ctl *descend.Conn, listener *os.File, logger *slog.Logger, h http.Handler, e *Embed) error {
	accesslog.KeepStdout() // before the app starts, which must not inherit the master's stdout
	defer ctl.Close()
	defer listener.Close()
	// The master sends the membership right after the config: it is applied before the app
	// starts, so that the app's OLIO_WORKERS is right from its first run.
	cfg, mem, err := descend.Join(ctl, &descend.Hello{PID: os.Getpid(), Index: index})
	if err != nil {
		return fmt.Errorf("router: joining the master: %w", err)
	}
	set, err := newSettings(cfg)
	if err != nil {
		return err
	}
	r := newRouter(index, set, logger)
	r.ctl, r.listener, r.handler, r.embed = ctl, listener, h, e
	r.fitProcs = h == nil // this process is the router alone: size its scheduler
	if err := r.onMembership(mem); err != nil {
		return err
	}
	r.pin(cfg.CPU) // before the app starts, so it inherits the mask
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
		index:      index,
		logger:     logger,
		errorLog:   slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		counters:   newCounters(),
		handover:   newHandover(),
		hot:        hotkeys.New(time.Now()),
		pool:       mux.NewPool(nil),
		takingOver: fmt.Sprintf("worker %d is taking over from the process it replaces", index),
	}
	r.set.Store(set)
	r.apps = newApps(r, r.logger, &r.counters.held)
	r.appLeg = newAppLeg(r.errorLog)
	r.remoteTransport = newPeerTransport(r)
	return r
}

// run serves until ctx is done (a graceful stop) or the master goes away, then stops what it
// started, in order (actors), and returns once all of it has ended.
func (r *Router) run(ctx context.Context) error {
	defer r.pool.Close()
	if err := r.setAccessLog(r.conf()); err != nil {
		return err
	}
	defer r.closeAccessLog()
	h, err := newHandoff(r.conf().RunDir, r.index, r.logger, &r.counters.handedIn)
	if err != nil {
		return err
	}
	h.maxWait = func() time.Duration { return r.conf().ForwardTimeout }
	private, err := mux.Listen(r.peerPath(), nil)
	if err != nil {
		h.shutdown()
		return err
	}
	r.peers, r.private = r.newPeerServer(), private
	r.accept = &acceptor{listener: r.listener, server: func() *http.Server { return r.newPublicServer(r) },
		conf: r.conf, logger: r.logger, handoff: h}
	r.accept.start(func() bool { return r.index < r.workers() })
	var stop stopDeadline
	defer stop.end()
	err = r.actors(ctx, &stop).run()
	r.remoteTransport.CloseIdleConnections()
	return err
}

// actors are what run starts, in the order the group stops them:
//
//   - ctx, the master's supervisor's SIGTERM: a graceful stop. Its interrupt sets the stop's
//     deadline (short when the master is gone) for the actors stopped after it;
//   - the public side, which stops accepting and finishes its requests;
//   - the peers' side (peers.Serve), which finishes what peers forwarded;
//   - the app: its supervisor and its health checks, or the embedded handler's calls;
//   - the master's requests still running (onRestart, onDrain, onPrepare), each answered;
//   - recvLoop, the master's messages, until the master goes away; interrupted by closing
//     the connection, so the master hears from the router until everything else is done;
//   - the hot keys' drain.
func (r *Router) actors(ctx context.Context, stop *stopDeadline) *group {
	g := &group{}
	quit := make(chan struct{})
	g.add(func() error {
		select {
		case <-ctx.Done():
		case <-quit:
		}
		return nil
	}, func(err error) {
		r.beginStop(stop, err)
		close(quit)
	})
	g.addStop(func(error) {
		r.accept.drain(stop.ctx)
		r.accept.stop()
	})
	peersDone := make(chan struct{})
	g.add(func() error {
		r.peers.Serve(r.private)
		<-peersDone // a drain for a replacement (onDrain) may end Serve before the group stops
		return nil
	}, func(error) {
		r.peers.Shutdown(stop.ctx)
		r.private.Close()
		close(peersDone)
	})
	r.addApp(g)
	g.addStop(func(error) { r.tasks.wait() })
	g.add(r.recvLoop, func(error) { r.ctl.Close() })
	stopHot := r.hot.Run(func() string { return r.conf().KeyStats })
	g.addStop(func(error) { stopHot() })
	return g
}

// stopDeadline bounds a graceful stop; beginStop sets it.
type stopDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func (d *stopDeadline) end() {
	if d.cancel != nil {
		d.cancel()
	}
}

// beginStop begins a graceful stop caused by err (nil: the master's SIGTERM): its deadline
// is --shutdown-timeout from now, or 2s when the master is gone.
func (r *Router) beginStop(d *stopDeadline, err error) {
	timeout := r.conf().ShutdownTimeout
	if errors.Is(err, ErrMasterGone) {
		timeout = 2 * time.Second // the master is gone: be quick
	}
	d.ctx, d.cancel = context.WithTimeout(context.Background(), timeout)
	r.apps.stopping.Store(&d.ctx) // the app's last drain ends with this deadline too
	if r.handler != nil {
		r.embed.shutdown() // hijacked connections are the handler's to end
	}
}

// addApp adds the app's actors: the supervisor of the app child and its health checks, or
// the embedded handler, ready from the start, whose calls still running are waited for.
func (r *Router) addApp(g *group) {
	if r.handler != nil {
		stop := r.startEmbedded()
		g.addStop(func(error) { stop() })
		return
	}
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
	ctx, stop := context.WithCancel(context.Background())
	g.add(func() error {
		err := r.sup.Run(ctx) // drains and stops the app once ctx is done
		r.apps.forgetting.Wait()
		return err
	}, func(error) { stop() })
	g.add(func() error {
		r.checkHealth(ctx)
		return nil
	}, func(error) { stop() })
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
		descend.TypeRunDir:       r.onRunDir,
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
	r.handover.commit() // held requests go on by the new count
	r.shareCPUs(mm.Workers)
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
	r.spawn(func() {
		res := &descend.Result{ID: id}
		if err := r.sup.Restart(context.Background()); err != nil {
			res.Error = err.Error()
		}
		r.sendOrLog(res)
	})
	return nil
}

func (r *Router) onDrain(m descend.Message) error {
	d := m.(*descend.Drain)
	id := d.ID
	r.accept.refuse()
	r.spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.conf().ShutdownTimeout)
		defer cancel()
		if d.Replaced {
			// Peers open their next streams to the replacement (held until this drain is
			// done) while this process finishes the ones already open.
			r.private.GoAway()
		}
		r.accept.drain(ctx)
		goesOn := d.KeysMove || d.Replaced // the cluster serves this router's keys elsewhere next
		// The connections this router accepted and forwards end with it: end them cleanly
		// (a WebSocket gets close 1012 between two of the owner's frames) rather than cut.
		// On a plain stop they are the owner's app's to end. One whose request the server
		// finished (hijacked) but that is not tracked yet is waited for first.
		if goesOn {
			r.passing.settled(ctx)
		}
		if fw := r.passing.matching(func(*liveUpgrade) bool { return true }); len(fw) > 0 && goesOn {
			n := r.passing.end(ctx, fw, 0)
			r.logger.Info("drain: ended forwarded upgraded connections", "connections", n)
		}
		if ups := r.live.matching(func(*liveUpgrade) bool { return true }); len(ups) > 0 && r.exclusive() && goesOn {
			// Every key leaves (a hot upgrade's new routers, or the replacement, serve them
			// once this drain is done): the upgraded connections end first. On a plain stop
			// they are the app's to end.
			r.notifyApp(ctx, Handover{Index: r.index, Epoch: r.members.Load().epoch, Workers: r.workers(), NewWorkers: r.workers(), Reason: "restart", Upgrades: len(ups)}, r.apps.current.Load())
			r.endLeaving(ctx, ups)
		}
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
	})
	return nil
}

// spawn runs f, a master's request that takes time, on a goroutine of its own that run
// waits for before it closes the master's connection.
func (r *Router) spawn(f func()) { r.tasks.spawn(f) }

// tasks are goroutines waited for as a whole.
type tasks struct {
	mu      sync.Mutex
	wg      sync.WaitGroup
	waiting bool
}

// spawn runs f on a goroutine of its own; once wait has begun, on the caller's.
func (t *tasks) spawn(f func()) {
	t.mu.Lock()
	if t.waiting {
		t.mu.Unlock()
		f()
		return
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		f()
	}()
}

// wait waits for the goroutines spawn started.
func (t *tasks) wait() {
	t.mu.Lock()
	t.waiting = true
	t.mu.Unlock()
	t.wg.Wait()
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
		State:         descend.WorkerState(st.State),
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
		UpgradesEnded: r.live.ended.Load(),
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

var _ appHost = (*Router)(nil)

// appReplaced tells the app of old, replaced by a new instance, that every key of this
// worker leaves it, and records how long the hand-over held requests since start.
func (r *Router) appReplaced(ctx context.Context, old *instance, start time.Time) {
	ups := r.instanceUpgrades(old) // only called under --handover exclusive
	r.notifyApp(ctx, Handover{Index: r.index, Epoch: r.members.Load().epoch, Workers: r.workers(), NewWorkers: r.workers(), Reason: "restart", Upgrades: len(ups)}, old)
	r.endLeaving(ctx, ups)
	r.handover.setLastHold(time.Since(start))
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

// updateAccepting has the public side follow the membership, once run has made it (Run
// applies the first membership before).
func (r *Router) updateAccepting() {
	if r.accept != nil {
		r.accept.update()
	}
}

// appOutput passes one of the app's output streams into the log, line by line.
func (r *Router) appOutput(stream string) io.Writer {
	return &lineLogger{logger: r.logger, stream: stream, secret: []byte(r.conf().Secret)}
}

func (r *Router) peerPath() string {
	return RunDir(r.conf().RunDir).PeerSocket(r.index)
}
