package listener

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
	"github.com/olio-dev/olio/router/process"
)

// worker supervises the router of one index.
type worker struct {
	m     *Master
	index int
	sup   *monitor.Supervisor

	cancel context.CancelFunc
	done   chan struct{} // closed when the supervisor has returned
	ready  chan struct{} // closed when the first router has become ready
	failed chan string   // why the worker's first app did not become ready (startFailed)

	mu          sync.Mutex
	pending     *descend.Conn // made by command, claimed by readyCheck
	pendingFile *os.File
	conn        *descend.Conn         // the live router's, nil while there is none
	conns       map[int]*descend.Conn // every running router's, by pid: a rolling restart has two
	state       descend.State
	up          bool // an app serves: see serving
	readyOnce   sync.Once
	hintOnce    sync.Once // the embedded app that never calls router.Serve is named once
	replacing   bool      // a rolling restart is starting this worker's new router
	waits       map[uint64]waiter
}

// waiter is a call waiting for its answer from the router on conn.
type waiter struct {
	conn *descend.Conn
	ch   chan descend.Message
}

// newWorker makes (does not start) the worker for index under cfg.
func (m *Master) newWorker(index int, cfg Config) *worker {
	w := &worker{
		m:      m,
		index:  index,
		done:   make(chan struct{}),
		ready:  make(chan struct{}),
		failed: make(chan string, 1),
		waits:  map[uint64]waiter{},
		conns:  map[int]*descend.Conn{},
		state:  descend.State{Index: index, State: descend.StateStarting},
	}
	w.sup = &monitor.Supervisor{
		Name:         fmt.Sprintf("router %d", index),
		Starter:      m.opts.Starter,
		Command:      w.command,
		Ready:        w.readyCheck,
		ReadyTimeout: 30 * time.Second, // to say hello: the router's app has its own
		StopTimeout:  cfg.ShutdownTimeout + 5*time.Second,
		OnExit: func(c *monitor.Child, err error) {
			m.logger.Warn("router exited; restarting it", "worker", index, "router_pid", c.Pid(), "err", err)
		},
		Logger: m.logger.With("worker", index),
	}
	if cfg.Embedded {
		// The app is the router: it is ready when its handler is, and a rolling restart
		// replaces the whole process (Restart: new one ready, Drain the old, stop it).
		w.sup.ReadyTimeout = cfg.ReadyTimeout
		w.sup.DrainTimeout = cfg.ShutdownTimeout
		w.sup.Drain = w.drainChild
	}
	return w
}

// restart is one worker's step of a rolling restart: its router restarts its app, or, in
// embedded mode, the router process itself is replaced.
func (w *worker) restart(ctx context.Context) error {
	if w.m.config().Embedded {
		w.mu.Lock()
		w.replacing = true
		w.mu.Unlock()
		defer func() {
			w.mu.Lock()
			w.replacing = false
			w.mu.Unlock()
		}()
		return w.sup.Restart(ctx)
	}
	_, err := w.call(ctx, &descend.Restart{ID: w.m.nextID()})
	return err
}

// drainChild drains the router process c, which a rolling restart has replaced: it stops
// accepting and finishes what it accepted, while its replacement takes the traffic.
func (w *worker) drainChild(ctx context.Context, c *monitor.Child) {
	w.mu.Lock()
	conn := w.conns[c.Pid()]
	w.mu.Unlock()
	if conn == nil {
		return // gone already
	}
	if _, err := w.callOn(ctx, conn, &descend.Drain{ID: w.m.nextID(), Replaced: true}); err != nil && !errors.Is(err, ErrNoRouter) {
		w.m.logger.Warn("drain the replaced router", "worker", w.index, "router_pid", c.Pid(), "err", err)
	}
	// The replacement (held under --handover exclusive) may now serve this worker's keys;
	// with a context of its own, as the drain may have used all of ctx.
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.call(rctx, &descend.Release{ID: w.m.nextID()}); err != nil {
		w.m.logger.Warn("release the new router", "worker", w.index, "err", err)
	}
}

// start runs the worker's supervisor until stop.
func (w *worker) start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.done)
		w.sup.Run(ctx)
	}()
}

// drain asks the router to stop accepting public connections and finish what it accepted;
// keysMove says its keys go on in other processes (see descend.Drain).
func (w *worker) drain(ctx context.Context, keysMove bool) {
	if _, err := w.call(ctx, &descend.Drain{ID: w.m.nextID(), KeysMove: keysMove}); err != nil && !errors.Is(err, ErrNoRouter) {
		w.m.logger.Warn("drain", "worker", w.index, "err", err)
	}
}

// command makes the router's command line: the olio binary's hidden router subcommand with
// fd 3 its end of a fresh descend socketpair and fd 4 the public listener.
func (w *worker) command() (*monitor.Command, error) {
	conn, child, err := descend.Pair()
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	if w.pendingFile != nil {
		w.pending.Close()
		w.pendingFile.Close()
	}
	w.pending, w.pendingFile = conn, child
	w.mu.Unlock()
	m := w.m
	cmd := &monitor.Command{
		Name:       fmt.Sprintf("router %d", w.index),
		Path:       m.routerExe,
		Argv0:      m.exe,
		Args:       []string{"router", "--index", strconv.Itoa(w.index), "--log-format", m.opts.LogFormat},
		Env:        process.ChildEnv(os.Environ()),
		Stdout:     m.routerOutput(),
		Stderr:     m.routerOutput(),
		ExtraFiles: []*os.File{child, m.lnFile},
	}
	if _, err := os.Stdout.Stat(); err == nil {
		// process.FDStdout: where the access log goes when it is "-" (now or after a reload).
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.Stdout)
	}
	if cfg := m.config(); cfg.Embedded {
		// The app itself, which calls router.Serve: the same descriptors, and its place in
		// the environment instead of flags (its command line is the user's).
		cmd.Name = fmt.Sprintf("worker %d", w.index)
		cmd.Path, cmd.Args = m.routerExe, m.opts.DemoArgs // olio's demo, as olio's own binary
		if len(cfg.App) > 0 {
			// The user's app, from its file as it is now, as an app child is: a new build
			// put there runs in workers started from now on; a reload rolls every worker
			// onto it.
			cmd.Path, cmd.Argv0, cmd.Args = cfg.App[0], "", cfg.App[1:]
		}
		cmd.Dir = cfg.AppDir
		cmd.Env = append(cmd.Env, process.EnvEmbedded+"=1", process.EnvLogFormat+"="+m.opts.LogFormat,
			"OLIO_INDEX="+strconv.Itoa(w.index))
	}
	return cmd, nil
}

// readyCheck owns the new router's descend connection from here on and waits until the
// router has said hello and taken its config (its app's readiness is the router's to watch).
func (w *worker) readyCheck(ctx context.Context, c *monitor.Child) error {
	w.mu.Lock()
	conn, f := w.pending, w.pendingFile
	w.pending, w.pendingFile = nil, nil
	w.mu.Unlock()
	if conn == nil {
		return errors.New("listener: router started without a command")
	}
	f.Close()
	hello, ready := make(chan struct{}), make(chan struct{})
	w.mu.Lock()
	w.conns[c.Pid()] = conn
	w.mu.Unlock()
	w.m.wg.Add(1)
	go func() {
		defer w.m.wg.Done()
		w.read(conn, c, hello, ready)
	}()
	var err error
	select {
	case <-ready:
		return nil
	case <-c.Done():
		err = monitor.ErrExited
	case <-ctx.Done():
		conn.Close()
		err = ctx.Err()
	}
	select {
	case <-hello:
		return err
	default:
	}
	if cfg := w.m.config(); cfg.Embedded {
		app := "the built-in demo"
		if len(cfg.App) > 0 {
			app = cfg.App[0]
		}
		why := fmt.Sprintf("it did not start olio's router within --ready-timeout (%s)", cfg.ReadyTimeout)
		if errors.Is(err, monitor.ErrExited) {
			why = "it exited without starting olio's router"
		}
		hint := fmt.Sprintf("%s: does %s call router.Serve?", why, app)
		err = fmt.Errorf("%w: %s", err, hint)
		w.hintOnce.Do(func() {
			w.m.logger.Error("embedded worker not started: "+hint+" Retrying with backoff.", "worker", w.index, "app", app)
		})
	}
	return err
}

// read handles one router's messages until its connection closes. It closes hello when
// the router has said hello and been configured, and ready when it is up: at hello, or,
// in embedded mode, when it reports its handler ready (it then accepts).
func (w *worker) read(conn *descend.Conn, c *monitor.Child, hello, ready chan struct{}) {
	embedded := w.m.config().Embedded
	defer w.closed(conn, c.Pid())
	var once sync.Once
	for {
		msg, err := conn.Recv()
		if err != nil {
			return
		}
		switch msg := msg.(type) {
		case *descend.Hello:
			if err := w.hello(conn, msg); err != nil {
				w.m.logger.Error("configure router", "worker", w.index, "err", err)
				return
			}
			// The router is up once configured: from here it supervises its app, with
			// its own backoff. Waiting for the app here too would restart a healthy
			// router whenever its app cannot get ready, resetting the app's backoff
			// and hiding its crash loop.
			close(hello)
			if !embedded {
				once.Do(func() { close(ready) })
			}
		case *descend.State:
			if w.onState(msg) {
				once.Do(func() { close(ready) })
				w.readyOnce.Do(func() { close(w.ready) })
				w.m.workerReady()
			}
		case descend.Reply: // Result, Stats, Keys
			w.deliver(msg.ReplyTo(), msg)
		default:
			w.m.logger.Warn("unexpected message from router", "worker", w.index, "type", msg.Type())
		}
	}
}

// closed forgets the connection of the router with pid, which has closed: a call waiting
// for its answer gets none, and the worker has no live router unless another one runs.
func (w *worker) closed(conn *descend.Conn, pid int) {
	conn.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.conns, pid)
	if w.conn == conn {
		w.conn = nil
		// A replacement that failed: the router it was to replace is still live.
		for _, other := range w.conns {
			w.conn = other
		}
	}
	if w.conn == nil {
		w.state.State = descend.StateStarting
		w.up = false
	}
	for id, wt := range w.waits {
		if wt.conn == conn {
			close(wt.ch)
			delete(w.waits, id)
		}
	}
}

// onState notes a router's report on its app, and says whether the app is ready.
func (w *worker) onState(msg *descend.State) (ready bool) {
	w.mu.Lock()
	prev := w.state
	w.state = *msg
	w.noteStateLocked(msg.State)
	w.mu.Unlock()
	if msg.State == descend.StateStarting && prev.AppPID != 0 && msg.AppPID != prev.AppPID {
		w.startFailed(prev.AppPID)
	}
	if msg.Error != "" {
		w.m.logger.Warn("app exited", "worker", w.index, "app_pid", msg.AppPID,
			"restarts", msg.Restarts, "crash_looping", msg.CrashLooping, "err", msg.Error)
	}
	return msg.State == descend.StateReady
}

// startFailed notes that the router, not yet ready, starts another app: the one with pid
// appPID did not become ready. Only the first such note is kept, for grow.
func (w *worker) startFailed(appPID int) {
	select {
	case <-w.ready:
		return
	default:
	}
	select {
	case w.failed <- fmt.Sprintf("its app (pid %d) did not become ready (olio's log says why)", appPID):
	default:
	}
}

// hello answers a router's Hello with its config and the current membership, and makes its
// connection the live one. It reads the view and sets the connection under w.mu, which
// every call takes to find the connection: an operation that publishes a new view and then
// calls the worker either finds this connection (and sends the new config or membership
// on it) or finds none, and then this hello reads the new view.
func (w *worker) hello(conn *descend.Conn, h *descend.Hello) error {
	if h.Index != w.index {
		return fmt.Errorf("router says it is worker %d, started as %d", h.Index, w.index)
	}
	m := w.m
	w.mu.Lock()
	defer w.mu.Unlock()
	v := m.snapshot()
	cfg := m.routerConfig(v.cfg, w.index)
	// An embedded worker that replaces a live one serves its keys only once that one has
	// drained (drainChild releases it); so do a hot upgrade's routers, once the old master
	// has drained (cluster.release).
	replacing := w.conn != nil && w.replacing
	exclusive := cfg.Handover == process.HandoverExclusive
	cfg.Held = exclusive && (v.held || replacing && v.cfg.Embedded)
	if err := descend.Welcome(conn, cfg, m.membership(v, 0)); err != nil {
		return err
	}
	w.conn = conn
	return nil
}

func (w *worker) deliver(id uint64, msg descend.Message) {
	w.mu.Lock()
	wt, ok := w.waits[id]
	delete(w.waits, id)
	w.mu.Unlock()
	if ok {
		wt.ch <- msg
	}
}

// call sends msg to the live router and waits for its answer: a Result (whose Error
// becomes the returned error) or Stats.
func (w *worker) call(ctx context.Context, msg descend.Request) (descend.Message, error) {
	return w.callOn(ctx, nil, msg)
}

// callOn is call to the router on conn; nil means the live one.
func (w *worker) callOn(ctx context.Context, conn *descend.Conn, msg descend.Request) (descend.Message, error) {
	id := msg.RequestID()
	ch := make(chan descend.Message, 1)
	w.mu.Lock()
	if conn == nil {
		conn = w.conn
	}
	if conn != nil {
		w.waits[id] = waiter{conn: conn, ch: ch}
	}
	w.mu.Unlock()
	if conn == nil {
		return nil, fmt.Errorf("worker %d: %w", w.index, ErrNoRouter)
	}
	if err := conn.Send(msg); err != nil {
		w.mu.Lock()
		delete(w.waits, id)
		w.mu.Unlock()
		return nil, fmt.Errorf("worker %d: %w", w.index, err)
	}
	select {
	case ans, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("worker %d: router exited: %w", w.index, ErrNoRouter)
		}
		if r, isResult := ans.(*descend.Result); isResult && r.Error != "" {
			return ans, fmt.Errorf("worker %d: %s", w.index, r.Error)
		}
		return ans, nil
	case <-ctx.Done():
		w.mu.Lock()
		delete(w.waits, id)
		w.mu.Unlock()
		return nil, fmt.Errorf("worker %d: %w", w.index, ctx.Err())
	}
}

// send sends a message that has no answer to the live router, if any.
func (w *worker) send(msg descend.Message) error {
	w.mu.Lock()
	conn := w.conn
	w.mu.Unlock()
	if conn == nil {
		return fmt.Errorf("worker %d: %w", w.index, ErrNoRouter)
	}
	return conn.Send(msg)
}

func (w *worker) lastState() descend.State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}
