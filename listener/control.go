package listener

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/olio-dev/olio/mux"
)

// The control protocol: HTTP/1.1 over the unix socket at --control (mode 0600, so only
// its owner and root may connect). Answers are JSON; errors are {"error": "..."} with a
// 4xx or 5xx status.
//
//	GET  /ping                 {"pid": N, "listen": "host:port"}
//	GET  /status               Status
//	POST /reload               = HUP: re-read the config file, rolling restart; answers when done,
//	                           with "not_applied": what the file changes that needs a restart
//	POST /scale?workers=N      change the worker count; answers when done, with "workers"
//	POST /scale?step=+N        (or step=-N) add or remove N workers to the count the master
//	                           holds when its turn comes; answers as workers=N does
//	                           (all three with &progress=1: a stream of progress events, then the answer)
//	POST /stop                 graceful stop; answers at once (202)
//	GET  /keys?top=N           KeysReport: the hottest keys (all tracked when N is 0 or absent)
//	GET  /scale/plan?workers=N ScalePlan: what POST /scale would move, changing nothing
//	GET  /top                  TopSnapshot: status and raw counters, for olio top
//
// Reload and scale, like HUP, TTIN, TTOU, WINCH and USR2, wait for a reload, scale or
// upgrade in progress to finish, then run (see Master.submit): operations never overlap,
// and none is refused for being second.
const (
	controlPing   = "/ping"
	controlStatus = "/status"
	controlReload = "/reload"
	controlScale  = "/scale"
	controlStop   = "/stop"
	controlKeys   = "/keys"
	controlPlan   = "/scale/plan"
)

// Ping is the answer to /ping: enough to tell which olio answers.
type Ping struct {
	PID    int    `json:"pid"`
	Listen string `json:"listen"`
}

// controlServer serves control commands on a unix socket.
type controlServer struct {
	path string
	srv  *http.Server
	done chan struct{}

	mu      sync.Mutex
	file    *mux.SocketFile // the socket file this server bound; only that one is removed
	pending bool            // file is a hot upgrade's, bound beside path until takeOver moves it in
}

// listenControl makes the control socket at path and serves it; stop is what POST /stop
// calls. It refuses a path where another olio answers, and replaces a stale socket file.
// The new master of a hot upgrade binds beside its parent's socket and moves it in with
// takeOver once it is ready, so that the old master answers until then and keeps its
// socket if the upgrade fails.
func (m *Master) listenControl(path string, stop func()) (*controlServer, error) {
	takeover, err := m.claimControl(path)
	if err != nil {
		return nil, err
	}
	s := &controlServer{path: path, done: make(chan struct{})}
	var ln *net.UnixListener
	if takeover {
		ln, s.file, err = bindBeside(path)
		s.pending = true
	} else {
		ln, s.file, err = bindControl(path)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot make the control socket %s: %w; check --control", path, err)
	}
	s.srv = &http.Server{
		Handler:           m.controlHandler(stop),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          m.errorLog(),
	}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// takeOver moves a hot upgrade's control socket into place (see listenControl). It does
// nothing when there is no pending socket.
func (s *controlServer) takeOver(logger *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.pending {
		return
	}
	dir := filepath.Dir(s.file.Path())
	if err := s.file.Rename(s.path); err != nil {
		logger.Error("upgrade: cannot take over the control socket", "path", s.path, "err", err)
		return
	}
	os.Remove(dir)
	s.pending = false
	logger.Info("took over the control socket", "path", s.path)
}

// parentPID is os.Getppid; tests replace it.
var parentPID = os.Getppid

// claimControl makes sure path is free: nothing there, or a stale socket (which binding
// replaces). A path where an olio answers is refused, unless it is the master that started
// this one for a hot upgrade: then takeover is true and the path is left as it is.
func (m *Master) claimControl(path string) (takeover bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("control socket %s: %w; check --control", path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return false, fmt.Errorf("control socket %s: the path exists and is not a socket; remove it or give another path with --control", path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ping, err := NewClient(path).Ping(ctx)
	switch {
	case errors.Is(err, ErrNoControl):
		m.logger.Info("replacing a stale control socket", "path", path)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%w: %s answers but not as an olio (%v); give this olio another path with --control", ErrControlInUse, path, err)
	case m.upgrading() && ping.PID == parentPID():
		m.logger.Info("upgrade: will take over the control socket once ready", "path", path, "old_pid", ping.PID)
		return true, nil
	default:
		return false, fmt.Errorf("%w: olio pid %d (listening on %s) uses %s; stop it with `olio stop --control %s`, or give this one its own --control PATH",
			ErrControlInUse, ping.PID, ping.Listen, path, path)
	}
}

// maxSocketPath is the longest path a unix socket address holds (sun_path less its NUL).
const maxSocketPath = 107

// bindControl binds a unix socket at path with mode 0600: bound beside it (bindBeside),
// then renamed into place, so there is no moment when the socket exists with the umask's
// mode; a stale socket at path is replaced.
func bindControl(path string) (*net.UnixListener, *mux.SocketFile, error) {
	ln, file, err := bindBeside(path)
	if errors.Is(err, errLongPath) && len(path) <= maxSocketPath {
		return mux.ListenUnix(path) // no room for the detour
	}
	if err != nil {
		return nil, nil, err
	}
	dir := filepath.Dir(file.Path())
	if err := file.Rename(path); err != nil {
		ln.Close()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	os.Remove(dir)
	return ln, file, nil
}

// errLongPath means a socket path beside the control path would be too long.
var errLongPath = errors.New("the path is too long for a unix socket")

// bindBeside binds a unix socket with mode 0600 in a fresh private directory (mode 0700)
// beside path, on the same file system.
func bindBeside(path string) (*net.UnixListener, *mux.SocketFile, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".olio-control-")
	if err != nil {
		return nil, nil, err
	}
	tmp := filepath.Join(dir, "s")
	if len(tmp) > maxSocketPath {
		os.Remove(dir)
		return nil, nil, fmt.Errorf("%w: it holds %d bytes, and olio binds %d bytes more beside it first", errLongPath, maxSocketPath, len(tmp)-len(path))
	}
	ln, file, err := mux.ListenUnix(tmp)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return ln, file, nil
}

// close stops serving (giving running commands a moment), waits, and removes the socket
// file unless another master has put its own there since.
func (s *controlServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending {
		os.RemoveAll(filepath.Dir(s.file.Path())) // never taken over: the old master's stays
		s.pending = false
		return
	}
	s.file.Remove()
}

// controlHandler serves the control protocol.
func (m *Master) controlHandler(stop func()) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+controlPing, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, Ping{PID: os.Getpid(), Listen: m.addr.String()})
	})
	mux.HandleFunc("GET "+controlStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, m.Status(r.Context()))
	})
	mux.HandleFunc("POST "+controlReload, m.serveReload)
	mux.HandleFunc("POST "+controlScale, m.serveScale)
	mux.HandleFunc("GET "+controlKeys, m.serveKeys)
	mux.HandleFunc("GET "+controlPlan, m.servePlan)
	mux.HandleFunc("GET "+controlTop, m.serveTop) // listener/top.go
	mux.HandleFunc("POST "+controlStop, func(w http.ResponseWriter, r *http.Request) {
		m.logger.Info("control: stop")
		stop()
		writeJSON(w, http.StatusAccepted, controlAnswer{Message: "stopping"})
	})
	return mux
}

// serveReload answers the reload command.
func (m *Master) serveReload(w http.ResponseWriter, r *http.Request) {
	m.logger.Info("control: reload")
	m.runOperation(w, r, func(ctx context.Context) (int, controlAnswer) {
		notApplied, err := m.reload(ctx)
		code, a := outcome("reloaded", err)
		if err == nil {
			a.NotApplied = notApplied
			// The roll went on to the next worker as soon as each new app was ready: old
			// apps may still be draining (each bounded by --shutdown-timeout).
			for _, ws := range m.Status(ctx).Workers {
				a.Draining += ws.Draining
			}
		}
		return code, a
	})
}

// serveScale answers the scale command: workers=N, or step=+N or step=-N. A master from
// before step refuses step (it finds no workers=), rather than misreading it.
func (m *Master) serveScale(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Has("step") {
		if q.Has("workers") {
			m.answer(w, "", fmt.Errorf("%w: scale: give workers=N or step=+N, not both", ErrConfig))
			return
		}
		delta, err := parseStep(q.Get("step"))
		if err != nil {
			m.answer(w, "", err)
			return
		}
		m.logger.Info("control: scale", "step", fmt.Sprintf("%+d", delta))
		m.runOperation(w, r, func(ctx context.Context) (int, controlAnswer) {
			n, err := m.ScaleBy(ctx, delta)
			code, a := outcome(fmt.Sprintf("scaled by %+d to %d workers", delta, n), err)
			if err == nil {
				a.Workers = &n
			}
			return code, a
		})
		return
	}
	n, err := parseCount(q.Get("workers"))
	if err != nil {
		m.answer(w, "", err)
		return
	}
	m.logger.Info("control: scale", "workers", n)
	m.runOperation(w, r, func(ctx context.Context) (int, controlAnswer) {
		err := m.Scale(ctx, n)
		code, a := outcome(fmt.Sprintf("scaled to %d workers", n), err)
		if err == nil {
			a.Workers = &n
		}
		return code, a
	})
}

// parseCount reads scale's workers=N: digits only. A sign means a relative count, which
// goes in step= (strconv.Atoi would read "+1" as 1: a cluster of 3 asked for one more
// would go down to one); a '+' sent unescaped arrives as a space.
func parseCount(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: scale: give workers=N, a whole number 0 or more (or step=+N to add N)", ErrConfig)
	}
	if s[0] == '+' || s[0] == '-' || s[0] == ' ' {
		return 0, fmt.Errorf("%w: scale: workers=%q has a sign: workers= is the number of workers to run; to add or remove some, give step=+N or step=-N (a + in a query is written %%2B)", ErrConfig, s)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%w: scale: workers=%q is not a whole number", ErrConfig, s)
	}
	return n, nil
}

// parseStep reads scale's step=+N or step=-N: a sign, then digits, not zero.
func parseStep(s string) (int, error) {
	if s != "" && s[0] == ' ' {
		return 0, fmt.Errorf("%w: scale: step=%q: write the + of a step as %%2B in a query (an unescaped + reads as a space)", ErrConfig, s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || len(s) < 2 || (s[0] != '+' && s[0] != '-') || !isDigits(s[1:]) {
		return 0, fmt.Errorf("%w: scale: step=%q is not a signed whole number like +1 or -2", ErrConfig, s)
	}
	if n < -MaxWorkers || n > MaxWorkers {
		return 0, fmt.Errorf("%w: scale: step=%q: the count must stay between 0 and %d", ErrConfig, s, MaxWorkers)
	}
	return n, nil
}

// isDigits reports whether s is ASCII digits only.
func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// runOperation runs a reload or a scale and writes its answer, streaming progress first
// if the client asked for it. The operation runs to the end even if the client goes away:
// a roll stopped halfway helps nobody.
func (m *Master) runOperation(w http.ResponseWriter, r *http.Request, op func(context.Context) (int, controlAnswer)) {
	ctx, ps := context.WithoutCancel(r.Context()), streamProgress(w, r) // nil unless the client asked for progress
	var before map[int]uint64
	if ps != nil {
		ctx, before = withProgress(ctx, ps.progress), m.heldCounts(ctx)
	}
	code, a := op(ctx)
	if ps != nil {
		ps.result(code, a, m.opSummary(ctx, before))
		return
	}
	writeJSON(w, code, a)
}

// serveKeys answers the keys command.
func (m *Master) serveKeys(w http.ResponseWriter, r *http.Request) {
	top := 0
	if s := r.URL.Query().Get("top"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			m.answer(w, "", fmt.Errorf("%w: keys: top=%q is not a whole number, 0 or more", ErrConfig, s))
			return
		}
		top = n
	}
	writeJSON(w, http.StatusOK, m.Keys(r.Context(), top))
}

// servePlan answers the scale plan command.
func (m *Master) servePlan(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("workers"))
	if err != nil {
		m.answer(w, "", fmt.Errorf("%w: scale plan: workers=%q is not a whole number", ErrConfig, r.URL.Query().Get("workers")))
		return
	}
	plan, err := m.PlanScale(r.Context(), n)
	if err != nil {
		m.answer(w, "", err)
		return
	}
	writeJSON(w, http.StatusOK, plan)
}

// controlAnswer is the body of a command's answer.
type controlAnswer struct {
	Message    string   `json:"message,omitempty"`
	Error      string   `json:"error,omitempty"`
	NotApplied []string `json:"not_applied,omitempty"` // reload: see ReloadReport
	Workers    *int     `json:"workers,omitempty"`     // scale: the count it scaled to
	Draining   int      `json:"draining,omitempty"`    // reload: see ReloadReport
}

// answer writes a command's outcome: 200 with msg, or the error with a status that says
// what kind it is.
func (m *Master) answer(w http.ResponseWriter, msg string, err error) {
	code, a := outcome(msg, err)
	writeJSON(w, code, a)
}

// outcome is a command's answer: 200 with msg, or the error with a status that says what
// kind it is.
func outcome(msg string, err error) (int, controlAnswer) {
	if err == nil {
		return http.StatusOK, controlAnswer{Message: msg}
	}
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrConfig):
		code = http.StatusBadRequest
	case errors.Is(err, ErrStopped):
		code = http.StatusServiceUnavailable
	}
	return code, controlAnswer{Error: err.Error()}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
