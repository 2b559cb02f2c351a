package process

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/mux"
)

// RunDir is the master's private run directory (mode 0700, made by package listener), and
// the one place that names the files in it. The master names the peer sockets in every
// Membership; each router binds its own peer and hand-off sockets, and a notify socket for
// each start of its app in notify mode (all with mode 0600, see mux.ListenUnix).
type RunDir string

// PeerSocket is where router index accepts the requests its peers forward (mux.Listen).
func (d RunDir) PeerSocket(index int) string {
	return filepath.Join(string(d), "router-"+strconv.Itoa(index)+".sock")
}

// PeerSockets returns the peer sockets in the directory now.
func (d RunDir) PeerSockets() []string { return d.glob("router-*.sock") }

// HandoffSocket is where router index receives the client connections its peers hand off.
func (d RunDir) HandoffSocket(index int) string {
	return filepath.Join(string(d), "handoff-"+strconv.Itoa(index)+".sock")
}

// NotifySocket is where start gen of worker index's app says READY=1 ($NOTIFY_SOCKET).
func (d RunDir) NotifySocket(index, gen int) string {
	return filepath.Join(string(d), "notify-"+strconv.Itoa(index)+"-"+strconv.Itoa(gen)+".sock")
}

// NotifySockets returns the notify sockets in the directory now.
func (d RunDir) NotifySockets() []string { return d.glob("notify-*.sock") }

func (d RunDir) glob(pattern string) []string {
	paths, _ := filepath.Glob(filepath.Join(string(d), pattern)) // the pattern is well formed
	return paths
}

// onRunDir moves the router to the master's new run directory (the old one was removed or
// replaced): its peer and hand-off sockets are bound there, and its app's next start gets
// its notify socket there. It answers once both listen; the Membership the master sends
// next names the peers' sockets there. Streams and connections on the way through the old
// sockets are not cut.
func (r *Router) onRunDir(m descend.Message) error {
	msg := m.(*descend.RunDir)
	res := &descend.Result{ID: msg.ID}
	if err := r.moveRunDir(msg.Dir); err != nil {
		res.Error = err.Error()
		r.logger.Error("move to the new run directory", "run_dir", msg.Dir, "err", err)
	} else {
		r.logger.Info("moved to a new run directory", "run_dir", msg.Dir)
	}
	return r.ctl.Send(res)
}

// moveRunDir makes dir the run directory. Like onConfig, it runs on recvLoop's goroutine,
// which alone swaps the settings.
func (r *Router) moveRunDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("router: the run directory %q is not an absolute path", dir)
	}
	if dir == r.conf().RunDir {
		return nil
	}
	set := *r.settings()
	set.cfg.RunDir = dir
	r.set.Store(&set)
	var errs []error
	if err := r.private.Rebind(r.peerPath()); err != nil && !errors.Is(err, mux.ErrClosed) {
		errs = append(errs, fmt.Errorf("router: peer socket: %w", err)) // closed: draining, peers go elsewhere
	}
	if err := r.accept.moveHandoff(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// moveHandoff moves the hand-off socket into the run directory dir: bound there at once if
// the side accepts now, else when it next does. Connections peers sent to the old socket
// are taken first.
func (a *acceptor) moveHandoff(dir string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.handoff
	if a.queue != nil {
		h.close()
	}
	h.mu.Lock()
	h.dir = dir
	h.mu.Unlock()
	if a.queue != nil {
		return h.open(a.queue)
	}
	return nil
}

// runDir is the run directory the handoff sends into.
func (h *handoff) runDir() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dir
}
