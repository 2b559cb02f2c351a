package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/internal/accesslog"
)

// Embedded mode: the app is the router. A Go service calls Serve(handler) from its main;
// `olio serve --embedded -- ./app` starts it as each worker's router process, with the same
// descend socket (fd 3) and shared listener (fd 4) the hidden `olio router` command gets,
// and the router serves the worker's own keys by calling the handler in-process: no app
// child, no loopback leg.

// The environment through which `olio serve --embedded` tells a program it is one of its
// workers. Serve reads them and removes them, so that a program the app starts does not
// take itself for a router.
const (
	// EnvEmbedded is "1" in a worker started by `olio serve --embedded`.
	EnvEmbedded = "OLIO_EMBEDDED"
	// EnvLogFormat is the master's --log-format ("text" or "json") for the router's log.
	EnvLogFormat = "OLIO_LOG_FORMAT"
)

// Inherited descriptors of a router process, embedded or not.
const (
	FDDescend  = 3 // the router's end of the descend socketpair
	FDListener = 4 // the shared public listening socket
)

// standaloneShutdown bounds a standalone Serve's graceful stop.
const standaloneShutdown = 30 * time.Second

// workersNow is this process's embedded worker's live count (EmbeddedWorkers).
var workersNow atomic.Int64

// EmbeddedWorkers returns the number of workers that own keys right now in this process's
// embedded worker (package router's Workers): 1 when it serves on its own, 0 while its
// membership is not known yet.
func EmbeddedWorkers() int { return int(workersNow.Load()) }

// EmbeddedIndex returns this process's worker index (package router's Index): $OLIO_INDEX,
// which olio sets before the process starts; 0 without it.
func EmbeddedIndex() int {
	i, err := strconv.Atoi(os.Getenv("OLIO_INDEX"))
	if err != nil || i < 0 {
		return 0
	}
	return i
}

// Embed is how a Go service runs as an olio worker: package router's Server, handed
// down. The zero value works.
type Embed struct {
	Logger     *slog.Logger                                // nil: text (or the master's --log-format) on stderr
	OnHandover func(ctx context.Context, h Handover) error // nil: nothing to tell
	OnShutdown func()                                      // nil: nothing to call; called at most once
	Addr       string                                      // standalone: "" is $OLIO_LISTEN, else 127.0.0.1:$PORT
}

// shutdown calls e.OnShutdown, at most once for the process.
func (e *Embed) shutdown() {
	if e != nil && e.OnShutdown != nil {
		shutdownOnce.Do(e.OnShutdown)
	}
}

var shutdownOnce sync.Once

// ServeEmbedded runs this process as an olio worker whose app is h, and blocks until it
// stops (package router's Server.Serve).
//
// Started by `olio serve --embedded`, it is that worker's router: key routing, forwarding
// to and from peers, connection handoff, the secret headers (stripped before h sees the
// request), fan-out, drain, limits and timeouts, all as for any app, with h called
// in-process for the requests this worker owns. OLIO_INDEX, OLIO_WORKERS, OLIO_SECRET and
// OLIO_ADDR are set in the process environment as for an app child; Workers follows the
// live count. It returns nil after a graceful stop.
//
// Started any other way, it serves h on 127.0.0.1:$PORT (8080 without PORT) until TERM or
// INT, then stops gracefully; so the same binary runs in development, in tests and behind
// any other balancer.
//
// A panic in h answers 500 to that request (or cuts its connection when the answer had
// begun) and is logged with its stack; the worker goes on.
func ServeEmbedded(h http.Handler, e Embed) error {
	if h == nil {
		return errors.New("router: Serve needs a handler")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if os.Getenv(EnvEmbedded) == "" {
		return serveStandalone(ctx, h, &e)
	}
	return serveEmbedded(ctx, h, &e)
}

// serveEmbedded is Serve in a worker of `olio serve --embedded`.
func serveEmbedded(ctx context.Context, h http.Handler, e *Embed) error {
	index, err := strconv.Atoi(os.Getenv("OLIO_INDEX"))
	if err != nil {
		return fmt.Errorf("router: %s is set but OLIO_INDEX %q is not a worker index: start this program with olio serve --embedded", EnvEmbedded, os.Getenv("OLIO_INDEX"))
	}
	format := os.Getenv(EnvLogFormat)
	for _, k := range []string{EnvEmbedded, EnvLogFormat} {
		os.Unsetenv(k)
	}
	logger := e.Logger
	if logger == nil {
		var lh slog.Handler = slog.NewTextHandler(os.Stderr, nil)
		if format == "json" {
			lh = slog.NewJSONHandler(os.Stderr, nil)
		}
		logger = slog.New(lh)
	}
	for _, fd := range []int{FDDescend, FDListener} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("router: started as an embedded worker without descriptor %d (%w): start this program with olio serve --embedded", fd, err)
		}
		unix.CloseOnExec(fd) // not for the programs the app starts
	}
	ctl, listener := os.NewFile(FDDescend, "descend"), os.NewFile(FDListener, "listener")
	conn, err := descend.FileConn(ctl)
	if err != nil {
		listener.Close()
		return fmt.Errorf("router: started as an embedded worker without its descend socket on fd %d (%w): start this program with olio serve --embedded", FDDescend, err)
	}
	// Only TERM (the master's) stops a worker: a terminal's Ctrl-C reaches the master
	// alone, which decides the order of shutdown. The others are caught and dropped.
	ctx, stop := signal.NotifyContext(context.WithoutCancel(ctx), syscall.SIGTERM)
	defer stop()
	dropped := make(chan os.Signal, 1)
	signal.Notify(dropped, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGTTIN,
		syscall.SIGTTOU, syscall.SIGWINCH, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(dropped)
	err = run(ctx, index, conn, listener, logger, h, e)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// serveStandalone serves h at e.Addr, $OLIO_LISTEN or 127.0.0.1:$PORT until ctx is done,
// then stops gracefully.
func serveStandalone(ctx context.Context, h http.Handler, e *Embed) error {
	addr, err := standaloneAddr(e.Addr, os.Getenv(EnvListen), os.Getenv("PORT"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	workersNow.Store(1)
	logger := e.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	srv := &http.Server{
		Handler:           &embeddedHandler{h: h, logger: logger},
		ReadHeaderTimeout: DefaultHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(e.shutdown)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("serving on its own (not started by olio serve --embedded)", "addr", ln.Addr().String())
	select {
	case err := <-served:
		return fmt.Errorf("router: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), standaloneShutdown)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-served
	if err != nil {
		srv.Close()
		return fmt.Errorf("router: requests still running after %s: %w", standaloneShutdown, err)
	}
	return nil
}

// EnvListen names the address (host:port) a standalone embedded service listens on, for
// one that runs behind a balancer on another host; without it, 127.0.0.1:$PORT.
const EnvListen = "OLIO_LISTEN"

// standaloneAddr is where a standalone embedded service listens: addr (Server.Addr), else
// listen ($OLIO_LISTEN), else 127.0.0.1:port ($PORT, 8080 without it).
func standaloneAddr(addr, listen, port string) (string, error) {
	switch {
	case addr != "":
		return addr, nil
	case listen != "":
		if _, _, err := net.SplitHostPort(listen); err != nil {
			return "", fmt.Errorf("router: %s=%q: want host:port, e.g. 0.0.0.0:8080 (%w)", EnvListen, listen, err)
		}
		return listen, nil
	}
	if port == "" {
		port = "8080"
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("router: PORT=%q: want a port number from 0 to 65535", port)
	}
	return net.JoinHostPort("127.0.0.1", port), nil
}

// embeddedHandler calls h with panics turned into a 500 (see guardWriter).
type embeddedHandler struct {
	h      http.Handler
	logger *slog.Logger
}

func (e *embeddedHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	g := &guardWriter{ResponseWriter: w}
	defer e.recover(g, req)
	e.h.ServeHTTP(g, req)
}

// recover answers a request whose handler panicked: 500 when it had not begun its answer,
// else the connection is cut (http.ErrAbortHandler), as net/http does for any panic.
func (e *embeddedHandler) recover(g *guardWriter, req *http.Request) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler { //nolint:errorlint // net/http's sentinel is compared so too
		panic(p)
	}
	e.logger.Error("handler panicked", "method", req.Method, "path", req.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	if g.wrote.Load() {
		panic(http.ErrAbortHandler)
	}
	h := g.Header()
	clear(h)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Connection", "close")
	g.ResponseWriter.WriteHeader(http.StatusInternalServerError)
	io.WriteString(g.ResponseWriter, "olio: the handler failed (internal error)\n")
}

// guardWriter notes whether the handler began its answer, and stops the answer timer then.
// It passes on Flush, Hijack and ReadFrom, and Unwrap serves http.ResponseController.
type guardWriter struct {
	http.ResponseWriter
	wrote    atomic.Bool // atomic: a handler may write from another goroutine
	answered func()      // called once at the first write; nil for none
}

func (g *guardWriter) begin() {
	if !g.wrote.Swap(true) && g.answered != nil {
		g.answered()
	}
}

func (g *guardWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		g.begin()
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *guardWriter) Write(b []byte) (int, error) {
	g.begin()
	return g.ResponseWriter.Write(b)
}

// ReadFrom keeps net/http's sendfile path for io.Copy into the answer.
func (g *guardWriter) ReadFrom(r io.Reader) (int64, error) {
	g.begin()
	return io.Copy(g.ResponseWriter, r)
}

// Flush implements http.Flusher.
func (g *guardWriter) Flush() {
	g.begin()
	http.NewResponseController(g.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker (WebSocket libraries assert it).
func (g *guardWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	g.begin()
	return http.NewResponseController(g.ResponseWriter).Hijack()
}

// Unwrap returns the writer beneath, for http.ResponseController.
func (g *guardWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// serveHandler serves a request this worker owns with the embedded handler: the in-process
// counterpart of the app proxy, with the same counters and --request-timeout (a handler
// that has written nothing by then has its context cancelled, and its request gets 504).
func (r *Router) serveHandler(w http.ResponseWriter, req *http.Request) {
	r.counters.inFlight.Add(1)
	start := time.Now()
	defer func() {
		r.counters.inFlight.Add(-1)
		r.counters.served.Add(1)
		r.counters.duration.Observe(time.Since(start).Seconds())
	}()
	g := &guardWriter{ResponseWriter: w}
	if d := r.conf().RequestTimeout; d > 0 {
		ctx, cancel := context.WithCancelCause(req.Context())
		t := time.AfterFunc(d, func() { cancel(errAppTimeout) })
		defer func() { t.Stop(); cancel(nil) }()
		g.answered = func() { t.Stop() }
		req = req.WithContext(ctx)
	}
	defer func() {
		if !g.wrote.Load() && errors.Is(context.Cause(req.Context()), errAppTimeout) {
			r.fail(w, http.StatusGatewayTimeout, fmt.Sprintf("olio: worker %d's handler did not answer within %s", r.index, r.conf().RequestTimeout))
		}
	}()
	e := embeddedHandler{h: r.handler, logger: r.logger}
	defer e.recover(g, req)
	accesslog.StartApp(w) // the handler's share of the time starts here
	r.handler.ServeHTTP(g, req)
}

// setAppEnv sets the OLIO_* variables an app child would get, in this process's own
// environment (embedded mode).
func (r *Router) setAppEnv() {
	cfg := r.conf()
	for k, v := range map[string]string{
		"OLIO_INDEX":        strconv.Itoa(cfg.Index),
		"OLIO_WORKERS":      strconv.Itoa(r.workers()),
		"OLIO_SECRET":       cfg.Secret,
		"OLIO_ADDR":         cfg.PublicAddr,
		"OLIO_CLUSTER_ADDR": cfg.ClusterAddr,
	} {
		os.Setenv(k, v)
	}
}

// processStart is when this process started, as far as it knows: an embedded worker's
// app start.
var processStart = time.Now()

// startEmbedded makes the embedded handler this worker's app: ready at once, so the router
// accepts as soon as it is a member, and says so to the master, which waits for that
// before it drains the process this one replaces. stop waits, up to the stop deadline, for
// the handler calls still running (hijacked connections the handler keeps).
func (r *Router) startEmbedded() (stop func()) {
	r.report(&descend.State{State: descend.StateReady, AppPID: os.Getpid()})
	r.logger.Info("embedded worker ready", "pid", os.Getpid())
	return func() {
		var deadline <-chan struct{}
		if sc := r.apps.stopping.Load(); sc != nil {
			deadline = (*sc).Done()
		}
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for r.counters.inFlight.Load() > 0 {
			select {
			case <-deadline:
				r.logger.Warn("stopping with handler calls still running", "in_flight", r.counters.inFlight.Load())
				return
			case <-t.C:
			}
		}
	}
}
