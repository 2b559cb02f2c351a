package router

import (
	"path/filepath"
	"strconv"
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
