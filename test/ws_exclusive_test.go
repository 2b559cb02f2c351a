package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/olio-dev/olio/router"
)

// Exclusive ownership for upgraded connections: under --handover exclusive a WebSocket
// whose key moves is ended (close 1012) before the key's new owner serves it; keys that do
// not move keep theirs; under --handover overlap nothing is closed.

// wsAppArg, as the test binary's first argument, makes it run wsApp: a WebSocket echo that
// logs each session's start and end.
const wsAppArg = "olio-ws-session-app"

func init() {
	if len(os.Args) > 2 && os.Args[1] == wsAppArg {
		os.Exit(wsApp(os.Args[2]))
	}
}

// monotonic is CLOCK_MONOTONIC in nanoseconds: one clock for every process of the host.
func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// wsApp serves on $PORT: /ws is a WebSocket echo that answers each message with
// "PID INDEX MESSAGE"; it appends "START|END KEY PID NANOS" to DIR/sessions.<pid> at a
// session's start and end (CLOCK_MONOTONIC), and a hand-over notice POSTed to
// /olio/handover as "PID REASON WORKERS NEW UPGRADES" to DIR/notices.<pid>.
func wsApp(dir string) int {
	pid := os.Getpid()
	index := os.Getenv("OLIO_INDEX")
	sessions, err := os.OpenFile(filepath.Join(dir, "sessions."+strconv.Itoa(pid)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 1
	}
	var mu sync.Mutex
	logf := func(f *os.File, format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(f, format, a...)
	}
	notices, err := os.OpenFile(filepath.Join(dir, "notices."+strconv.Itoa(pid)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 1
	}
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Olio-Key")
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		logf(sessions, "START %s %d %d\n", key, pid, monotonic())
		defer func() { logf(sessions, "END %s %d %d\n", key, pid, monotonic()) }()
		for {
			typ, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if conn.WriteMessage(typ, []byte(fmt.Sprintf("%d %s %s", pid, index, msg))) != nil {
				return
			}
		}
	})
	mux.HandleFunc("/olio/handover", func(w http.ResponseWriter, r *http.Request) {
		var h router.Handover
		json.NewDecoder(r.Body).Decode(&h)
		logf(notices, "%d %s %d %d %d\n", pid, h.Reason, h.Workers, h.NewWorkers, h.Upgrades)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"index":%s,"pid":%d}`, index, pid)
	})
	// A stop ends every session still open: its time bounds their ends.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		logf(sessions, "TERM - %d %d\n", pid, monotonic())
		os.Exit(0)
	}()
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: mux}
	srv.ListenAndServe()
	return 0
}

// wsStart starts olio with the WebSocket session app; dir holds its logs.
func wsStart(t *testing.T, workers int, flags ...string) (*Cluster, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := append([]string{"--workers", strconv.Itoa(workers), "--handover-path", "/olio/handover"}, flags...)
	args = append(args, "--", exe, wsAppArg, dir)
	return Start(t, args...), dir
}

// wsClient is one WebSocket client of a key.
type wsClient struct {
	key    string
	conn   *websocket.Conn
	pid    int // the app process serving it
	index  int
	closed chan error // the read loop's end (a *websocket.CloseError for a close frame)
	echo   chan string
}

// wsDial connects a client for key and checks who serves it with a first echo; it returns
// how long the connection took (a hold counts in it).
func wsDial(t *testing.T, c *Cluster, key string) (*wsClient, time.Duration) {
	t.Helper()
	cl, took, err := wsTryDial(c, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.conn.Close() })
	return cl, took
}

// wsDialVia is wsDial over a connection that router index accepted.
func wsDialVia(t *testing.T, c *Cluster, key string, index int) *wsClient {
	t.Helper()
	nc, _ := pinnedConn(t, c, index)
	cl, _, err := wsTryDial(c, key, nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.conn.Close() })
	return cl
}

// wsTryDial connects a client for key (over nc when not nil) and checks who serves it with
// a first echo; it returns how long the connection took (a hold counts in it). The caller
// closes the client.
func wsTryDial(c *Cluster, key string, nc net.Conn) (*wsClient, time.Duration, error) {
	start := time.Now()
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	if nc != nil {
		d.NetDialContext = func(context.Context, string, string) (net.Conn, error) { return nc, nil }
	}
	conn, resp, err := d.Dial("ws://"+c.Addr+"/ws", http.Header{"X-Olio-Key": {key}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, 0, fmt.Errorf("WebSocket for key %q: %v (status %d)", key, err, status)
	}
	took := time.Since(start)
	cl := &wsClient{key: key, conn: conn, closed: make(chan error, 1), echo: make(chan string, 4)}
	go func() {
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				cl.closed <- err
				return
			}
			cl.echo <- string(msg)
		}
	}()
	pid, index, err := cl.ask("hello")
	if err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("WebSocket for key %q: no echo: %v", key, err)
	}
	cl.pid, cl.index = pid, index
	return cl, took, nil
}

// ask sends msg and waits for its echo: which process and worker answered.
func (cl *wsClient) ask(msg string) (pid, index int, err error) {
	cl.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := cl.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return 0, 0, err
	}
	select {
	case e := <-cl.echo:
		f := strings.Fields(e)
		if len(f) < 3 || f[2] != msg {
			return 0, 0, fmt.Errorf("echo %q for %q", e, msg)
		}
		pid, _ = strconv.Atoi(f[0])
		index, _ = strconv.Atoi(f[1])
		return pid, index, nil
	case err := <-cl.closed:
		cl.closed <- err
		return 0, 0, fmt.Errorf("closed: %w", err)
	case <-time.After(10 * time.Second):
		return 0, 0, errors.New("no echo within 10s")
	}
}

// waitClose waits for the client's connection to end and returns its close code (-1: no
// close frame).
func (cl *wsClient) waitClose(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case err := <-cl.closed:
		cl.closed <- err
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		return -1
	case <-time.After(d):
		t.Fatalf("key %q: the connection was not closed within %s", cl.key, d)
		return 0
	}
}

// session is one WebSocket session an app logged.
type session struct {
	key        string
	pid        int
	start, end int64 // CLOCK_MONOTONIC; end 0: still open
}

// readSessions reads every session the apps in dir logged; one its process did not see end
// ends when the process was stopped (TERM), or never.
func readSessions(t *testing.T, dir string) []session {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "sessions.*"))
	type id struct {
		key string
		pid int
	}
	open := map[id][]int{} // indexes into out of the sessions not yet ended
	var out []session
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var what, key string
			var pid int
			var at int64
			if n, _ := fmt.Sscanf(line, "%s %s %d %d", &what, &key, &pid, &at); n != 4 {
				continue
			}
			k := id{key, pid}
			if what == "TERM" {
				for k, l := range open {
					if k.pid == pid {
						for _, i := range l {
							out[i].end = at
						}
						delete(open, k)
					}
				}
				continue
			}
			if what == "START" {
				open[k] = append(open[k], len(out))
				out = append(out, session{key: key, pid: pid, start: at})
			} else if l := open[k]; len(l) > 0 {
				out[l[0]].end = at
				open[k] = l[1:]
			}
		}
	}
	return out
}

// overlaps counts the pairs of sessions of one key on two processes that were open at the
// same time, and describes the first few.
func overlaps(ss []session) (int, []string) {
	byKey := map[string][]session{}
	for _, s := range ss {
		byKey[s.key] = append(byKey[s.key], s)
	}
	n := 0
	var what []string
	const open = int64(1) << 62
	for key, l := range byKey {
		sort.Slice(l, func(i, j int) bool { return l[i].start < l[j].start })
		for i := range l {
			for j := i + 1; j < len(l); j++ {
				a, b := l[i], l[j]
				ae, be := a.end, b.end
				if ae == 0 {
					ae = open
				}
				if be == 0 {
					be = open
				}
				if a.pid != b.pid && a.start < be && b.start < ae {
					n++
					if len(what) < 5 {
						what = append(what, fmt.Sprintf("key %s: pid %d [%d,%d] and pid %d [%d,%d]", key, a.pid, a.start, a.end, b.pid, b.start, b.end))
					}
				}
			}
		}
	}
	return n, what
}

// wsKeys are the test's keys.
func wsKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "room-" + strconv.Itoa(i)
	}
	return keys
}

// waitNotice waits until an app in dir has had a notice starting with prefix, and returns
// its line.
func waitNotice(t *testing.T, dir, prefix string) string {
	t.Helper()
	var found string
	if !Eventually(30*time.Second, func() bool {
		files, _ := filepath.Glob(filepath.Join(dir, "notices.*"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(b), "\n") {
				if _, rest, ok := strings.Cut(line, " "); ok && strings.HasPrefix(rest, prefix) {
					found = line
					return true
				}
			}
		}
		return false
	}) {
		t.Fatalf("no app got a hand-over notice %q within 30s", prefix)
	}
	return found
}

// TestWSExclusiveScaleUp: a scale from 2 to 3 workers ends, with close 1012, exactly the
// WebSockets whose key moved (after the app's notice, which counts them), keeps the others
// open, holds a client that reconnects during the grace and sends it to the new owner, and
// no key has two live sessions on two processes. A reload (HUP) then ends and re-homes
// every one of them.
func TestWSExclusiveScaleUp(t *testing.T) {
	// Not in parallel: it checks, by the apps' own clocks, that a moved key's sessions never
	// overlap; a busy machine delays an app's noticing its connection's end (see the note
	// in docs/design.md on exclusive ownership).
	const grace = 2 * time.Second
	access := filepath.Join(t.TempDir(), "access.log")
	c, dir := wsStart(t, 2, "--upgrade-grace", grace.String(), "--forward-timeout", "20s", "--access-log", access, "--log-format", "json")
	keys := wsKeys(24)
	clients := map[string]*wsClient{}
	var moving []string
	for _, k := range keys {
		cl, _ := wsDial(t, c, k)
		if cl.index != Owner(k, 2) {
			t.Fatalf("key %q served by worker %d, want %d", k, cl.index, Owner(k, 2))
		}
		clients[k] = cl
		if Owner(k, 3) != Owner(k, 2) {
			moving = append(moving, k)
		}
	}
	if len(moving) == 0 || len(moving) == len(keys) {
		t.Fatalf("the test did not test anything: %d of %d keys move on 2→3", len(moving), len(keys))
	}

	scaled := make(chan error, 1)
	go func() {
		out, err := opCLI(t, "scale", "--control", c.Control, "3")
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		scaled <- err
	}()
	// The notices come first, with the count of each app's moving connections; during the
	// grace, a second client of a moving key is held, then served by the new owner.
	notice := waitNotice(t, dir, "scale 2 3 ")
	var upgrades int
	fmt.Sscanf(notice, "%d scale 2 3 %d", new(int), &upgrades)
	if upgrades == 0 {
		t.Errorf("the notice %q counts no upgraded connection of moving keys", notice)
	}
	late, hold := wsDial(t, c, moving[0])
	if g, e := late.index, Owner(moving[0], 3); g != e {
		t.Errorf("a client reconnecting during the grace was served by worker %d, want the new owner %d", g, e)
	}
	select {
	case err := <-scaled:
		if err != nil {
			t.Fatalf("olio scale 3: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("olio scale 3 did not return within 60s")
	}
	t.Logf("a client of a moving key that connected during the grace was held %s", hold.Round(time.Millisecond))

	ended := 0
	for _, k := range moving {
		if code := clients[k].waitClose(t, 30*time.Second); code != websocket.CloseServiceRestart {
			t.Errorf("key %q moved: close code %d, want 1012", k, code)
		}
		ended++
	}
	for _, k := range keys {
		if Owner(k, 3) != Owner(k, 2) {
			continue
		}
		if _, _, err := clients[k].ask("still-there"); err != nil {
			t.Errorf("key %q did not move, yet its connection ended: %v", k, err)
		}
	}
	t.Logf("scale 2→3 ended %d of %d WebSockets (%.2f; a grow to 3 should move 1/3 of the keys: %.2f)",
		ended, len(keys), float64(ended)/float64(len(keys)), 1.0/3)
	// Reconnected clients land on the new owner.
	for _, k := range moving {
		cl, _ := wsDial(t, c, k)
		if cl.index != Owner(k, 3) {
			t.Errorf("key %q reconnected to worker %d, want %d", k, cl.index, Owner(k, 3))
		}
		clients[k] = cl
	}
	if n, what := overlaps(readSessions(t, dir)); n != 0 {
		t.Errorf("%d overlapping sessions of one key on two processes after the scale: %v", n, what)
	}
	st := opStatus(t, c)
	var stEnded uint64
	for _, w := range st.Workers {
		stEnded += w.UpgradesEnded
	}
	if stEnded != uint64(len(moving)) {
		t.Errorf("olio status: %d upgraded connections ended by hand-overs, want %d", stEnded, len(moving))
	}
	// Those served where they were accepted or handed off are logged by the owner; a
	// forwarded one by the accepting router, which does not know why it ended.
	var logged int
	Eventually(10*time.Second, func() bool {
		b, _ := os.ReadFile(access)
		logged = strings.Count(string(b), `"ended_by":"handover"`)
		return logged == len(moving)
	})
	if logged == 0 || logged > len(moving) {
		t.Errorf("%d access log lines say ended by a hand-over, want 1 to %d", logged, len(moving))
	}
	t.Logf("%d of %d ended connections logged as ended by a hand-over", logged, len(moving))
	if out, err := opCLI(t, "status", "--control", c.Control); err != nil || !strings.Contains(out, "ended by hand-overs") {
		t.Errorf("olio status does not show the ended connections (%v):\n%s", err, out)
	}

	// A reload replaces every app: every WebSocket ends and comes back on the new app.
	hup(t, c, 90*time.Second)
	for _, k := range keys {
		if code := clients[k].waitClose(t, 30*time.Second); code != websocket.CloseServiceRestart {
			t.Errorf("key %q after HUP: close code %d, want 1012", k, code)
		}
	}
	for _, k := range keys[:6] {
		old := clients[k].pid
		cl, _ := wsDial(t, c, k)
		if cl.pid == old || cl.index != Owner(k, 3) {
			t.Errorf("key %q after HUP: served by pid %d (worker %d), was pid %d; want a new app of worker %d", k, cl.pid, cl.index, old, Owner(k, 3))
		}
	}
	if n, what := overlaps(readSessions(t, dir)); n != 0 {
		t.Errorf("%d overlapping sessions of one key on two processes after the reload: %v", n, what)
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			t.Logf("%s:\n%s", f, b)
		}
	}
}

// TestWSOverlapKeepsConnections: under --handover overlap a scale closes nothing: the
// moving keys' old connections stay with their old process while new ones go to the new
// owner (the overlap this mode accepts, counted here).
func TestWSOverlapKeepsConnections(t *testing.T) {
	t.Parallel()
	c, dir := wsStart(t, 2, "--handover", "overlap")
	keys := wsKeys(24)
	clients := map[string]*wsClient{}
	for _, k := range keys {
		clients[k], _ = wsDial(t, c, k)
	}
	if out, err := opCLI(t, "scale", "--control", c.Control, "3"); err != nil {
		t.Fatalf("olio scale 3: %v\n%s", err, out)
	}
	moved := 0
	for _, k := range keys {
		if _, _, err := clients[k].ask("after"); err != nil {
			t.Errorf("key %q: its connection ended under --handover overlap: %v", k, err)
		}
		if Owner(k, 3) != Owner(k, 2) {
			moved++
			wsDial(t, c, k) // a second client of the key: on the new owner
		}
	}
	n, _ := overlaps(readSessions(t, dir))
	if n != moved {
		t.Errorf("%d overlapping sessions under --handover overlap, want one per moved key (%d)", n, moved)
	}
	t.Logf("under --handover overlap: %d overlapping sessions for %d moved keys", n, moved)
}

// TestWSExclusivePeerTunnel: a WebSocket that one router accepted and forwarded through the
// peer tunnel to its key's owner (--handoff=false) ends on the client's side too when the
// owner ends it on a scale (close 1012 through the tunnel); one whose key does not move
// stays open through the tunnel; no key has two live sessions on two processes.
func TestWSExclusivePeerTunnel(t *testing.T) {
	// Not in parallel: it checks, by the apps' own clocks, that a moved key's sessions never
	// overlap; a busy machine delays an app's noticing its connection's end (see the note
	// in docs/design.md on exclusive ownership).
	c, dir := wsStart(t, 2, "--handoff=false", "--upgrade-grace", "500ms", "--forward-timeout", "20s")
	var moving, staying []*wsClient
	for _, k := range wsKeys(40) {
		if len(moving) >= 3 && len(staying) >= 3 {
			break
		}
		moves := Owner(k, 3) != Owner(k, 2)
		if (moves && len(moving) >= 3) || (!moves && len(staying) >= 3) {
			continue
		}
		// The other router accepts it: it reaches its owner through the peer tunnel.
		cl := wsDialVia(t, c, k, 1-Owner(k, 2))
		if cl.index != Owner(k, 2) {
			t.Fatalf("key %q served by worker %d, want its owner %d", k, cl.index, Owner(k, 2))
		}
		if moves {
			moving = append(moving, cl)
		} else {
			staying = append(staying, cl)
		}
	}
	if len(moving) == 0 || len(staying) == 0 {
		t.Fatalf("the test did not test anything: %d moving and %d staying keys", len(moving), len(staying))
	}
	if out, err := opCLI(t, "scale", "--control", c.Control, "3"); err != nil {
		t.Fatalf("olio scale 3: %v\n%s", err, out)
	}
	for _, cl := range moving {
		if code := cl.waitClose(t, 20*time.Second); code != websocket.CloseServiceRestart {
			t.Errorf("key %q moved: the forwarded connection ended with close code %d, want 1012", cl.key, code)
		}
	}
	for _, cl := range staying {
		if _, _, err := cl.ask("still-there"); err != nil {
			t.Errorf("key %q did not move, yet its forwarded connection ended: %v", cl.key, err)
		}
	}
	for _, cl := range moving {
		again := wsDialVia(t, c, cl.key, (Owner(cl.key, 3)+1)%3)
		if again.index != Owner(cl.key, 3) {
			t.Errorf("key %q reconnected to worker %d, want %d", cl.key, again.index, Owner(cl.key, 3))
		}
	}
	if n, what := overlaps(readSessions(t, dir)); n != 0 {
		t.Errorf("%d overlapping sessions of one key on two processes: %v", n, what)
	}
	t.Logf("peer tunnel: %d forwarded connections of moving keys ended with 1012, %d of staying keys kept", len(moving), len(staying))
}

// wsKeeper keeps one client of a key connected: whenever its connection ends it records
// how (the close code) and connects again at once, as a chat client does, until stopped.
type wsKeeper struct {
	t    testing.TB
	key  string
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	cur     *wsClient       // the connection now open, nil between two
	first   *wsClient       // the first connection
	codes   []int           // close codes of the connections that ended (-1: no close frame)
	holds   []time.Duration // how long each reconnection took
	served  []int           // the worker that served each connection
	dialErr error           // the last failed dial
}

// keepConnected starts a wsKeeper for key; its first connection is open on return.
func keepConnected(t *testing.T, c *Cluster, key string) *wsKeeper {
	t.Helper()
	cl, _, err := wsTryDial(c, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := &wsKeeper{t: t, key: key, stop: make(chan struct{}), done: make(chan struct{}), cur: cl, first: cl, served: []int{cl.index}}
	go k.run(c, cl)
	t.Cleanup(k.halt)
	return k
}

func (k *wsKeeper) run(c *Cluster, cl *wsClient) {
	defer close(k.done)
	for dials := 0; ; {
		select {
		case err := <-cl.closed:
			code := -1
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			cl.conn.Close()
			k.mu.Lock()
			k.cur = nil
			k.codes = append(k.codes, code)
			k.mu.Unlock()
		case <-k.stop:
			cl.conn.Close()
			return
		}
		for cl = nil; cl == nil; {
			if dials++; dials > 20 { // bounded: a broken cluster does not spin
				return
			}
			next, took, err := wsTryDial(c, k.key, nil)
			k.mu.Lock()
			if err != nil {
				k.dialErr = err
			} else {
				k.cur, cl = next, next
				k.holds = append(k.holds, took)
				k.served = append(k.served, next.index)
			}
			k.mu.Unlock()
			if err != nil {
				pause := time.NewTimer(100 * time.Millisecond) // a 503 after a hold: try again
				select {
				case <-pause.C:
				case <-k.stop:
					pause.Stop()
					return
				}
			}
		}
	}
}

// halt stops the keeper and closes its connection.
func (k *wsKeeper) halt() {
	select {
	case <-k.stop:
	default:
		close(k.stop)
	}
	waitDone(k.t, k.done, 30*time.Second, "the WebSocket keeper of "+k.key+" to stop")
}

// state is the keeper's current connection (nil between two) and the close codes so far.
func (k *wsKeeper) state() (*wsClient, []int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur, append([]int(nil), k.codes...)
}

// longestHold is the longest reconnection among keepers.
func longestHold(ks []*wsKeeper) time.Duration {
	var m time.Duration
	for _, k := range ks {
		k.mu.Lock()
		for _, h := range k.holds {
			m = max(m, h)
		}
		k.mu.Unlock()
	}
	return m
}

// TestWSExclusiveScaleDown: a scale from 3 to 2 workers ends, with close 1012, the
// WebSockets of the keys that move (those of the worker that goes away) and no other;
// clients that reconnect at once land on the new owner, and no key has two live sessions
// on two processes.
func TestWSExclusiveScaleDown(t *testing.T) {
	// Not in parallel: it checks, by the apps' own clocks, that a moved key's sessions never
	// overlap; a busy machine delays an app's noticing its connection's end (see the note
	// in docs/design.md on exclusive ownership).
	c, dir := wsStart(t, 3, "--upgrade-grace", "1s", "--forward-timeout", "20s")
	var keepers []*wsKeeper
	moving := 0
	for _, key := range wsKeys(24) {
		k := keepConnected(t, c, key)
		if k.first.index != Owner(key, 3) {
			t.Fatalf("key %q served by worker %d, want %d", key, k.first.index, Owner(key, 3))
		}
		keepers = append(keepers, k)
		if Owner(key, 2) != Owner(key, 3) {
			moving++
		}
	}
	if moving == 0 || moving == len(keepers) {
		t.Fatalf("the test did not test anything: %d of %d keys move on 3→2", moving, len(keepers))
	}
	if out, err := opCLI(t, "scale", "--control", c.Control, "2"); err != nil {
		t.Fatalf("olio scale 2: %v\n%s", err, out)
	}
	var waiting string
	if !Eventually(30*time.Second, func() bool {
		for _, k := range keepers {
			cur, codes := k.state()
			if Owner(k.key, 2) != Owner(k.key, 3) && (len(codes) == 0 || cur == nil) {
				waiting = fmt.Sprintf("key %q (moving): closes %v, connected %v", k.key, codes, cur != nil)
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the moving keys' clients did not end and reconnect within 30s: %s", waiting)
	}
	ended, again := 0, 0
	for _, k := range keepers {
		cur, codes := k.state()
		moves := Owner(k.key, 2) != Owner(k.key, 3)
		switch {
		case !moves && len(codes) > 0:
			t.Errorf("key %q did not move, yet its connection ended (close codes %v)", k.key, codes)
		case !moves:
			if _, _, err := cur.ask("still-there"); err != nil {
				t.Errorf("key %q did not move, yet its connection does not answer: %v", k.key, err)
			}
		case slices.ContainsFunc(codes, func(c int) bool { return c != websocket.CloseServiceRestart }):
			// A reconnection that the leaving router accepted (and forwarded to the new
			// owner) ends with that router: with 1012 too, never cut.
			t.Errorf("key %q moved: close codes %v, want 1012 (served by workers %v)", k.key, codes, k.served)
		case cur.index != Owner(k.key, 2):
			t.Errorf("key %q reconnected to worker %d, want %d", k.key, cur.index, Owner(k.key, 2))
		}
		if moves && len(codes) > 0 {
			ended++
			again += len(codes) - 1
		}
	}
	for _, k := range keepers {
		k.halt()
	}
	n, what := overlaps(readSessions(t, dir))
	if n != 0 {
		t.Errorf("%d overlapping sessions of one key on two processes: %v", n, what)
	}
	t.Logf("scale 3→2 ended %d WebSockets of %d; %d keys move (those of worker 2); %d reconnections ended again with the leaving router; %d overlapping sessions; longest reconnection %s",
		ended, len(keepers), moving, again, n, longestHold(keepers).Round(time.Millisecond))
}

// TestWSExclusiveUSR2: a hot upgrade (USR2) ends every WebSocket of the old routers with
// close 1012 before the new master's routers serve their keys: clients that reconnect at
// once land on the new apps, and no key has two live sessions on two processes.
func TestWSExclusiveUSR2(t *testing.T) {
	// Not in parallel: it checks, by the apps' own clocks, that a moved key's sessions never
	// overlap; a busy machine delays an app's noticing its connection's end (see the note
	// in docs/design.md on exclusive ownership).
	const workers = 2
	c, dir := wsStart(t, workers, "--upgrade-grace", "500ms", "--forward-timeout", "20s")
	before := appPIDs(t, c, workers)
	var keepers []*wsKeeper
	for _, key := range wsKeys(12) {
		keepers = append(keepers, keepConnected(t, c, key))
	}
	upgradeOp(workers).run(t, c) // USR2, then waits for the new master's new apps
	var waiting string
	if !Eventually(30*time.Second, func() bool {
		for _, k := range keepers {
			if cur, codes := k.state(); len(codes) == 0 || cur == nil || slices.Contains(before, cur.pid) {
				waiting = fmt.Sprintf("key %q: closes %v, connected %v", k.key, codes, cur != nil)
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the clients did not end and reconnect to the new apps within 30s: %s", waiting)
	}
	for _, k := range keepers {
		cur, codes := k.state()
		if slices.ContainsFunc(codes, func(c int) bool { return c != websocket.CloseServiceRestart }) {
			t.Errorf("key %q: close codes %v across the upgrade, want 1012 (served by workers %v)", k.key, codes, k.served)
		}
		if cur.index != Owner(k.key, workers) {
			t.Errorf("key %q reconnected to worker %d, want %d", k.key, cur.index, Owner(k.key, workers))
		}
	}
	for _, k := range keepers {
		k.halt()
	}
	n, what := overlaps(readSessions(t, dir))
	if n != 0 {
		t.Errorf("%d overlapping sessions of one key on two processes across the upgrade: %v", n, what)
	}
	t.Logf("USR2: %d WebSockets ended and reconnected to the new apps; %d overlapping sessions; longest reconnection %s",
		len(keepers), n, longestHold(keepers).Round(time.Millisecond))
}

// TestWSExclusiveEmbedded: in the embedded mode (the handler hijacks the connection
// itself), a scale 2→3 closes, after --upgrade-grace, the WebSockets of the keys that move
// to the new worker, and only those: the handler's sessions of the other keys go on.
func TestWSExclusiveEmbedded(t *testing.T) {
	// Not in parallel: it checks, by the apps' own clocks, that a moved key's sessions never
	// overlap; a busy machine delays an app's noticing its connection's end (see the note
	// in docs/design.md on exclusive ownership).
	c := Start(t, "--workers", "2", "--embedded", "--upgrade-grace", "500ms", "--forward-timeout", "10s", "--", exampleBin)
	type session struct {
		key  string
		conn *websocket.Conn
	}
	var moving, staying []session
	for _, k := range wsKeys(16) {
		conn, resp, err := websocket.DefaultDialer.Dial("ws://"+c.Addr+"/ws", http.Header{"X-Olio-Key": {k}})
		if err != nil {
			t.Fatalf("key %q: %v", k, err)
		}
		resp.Body.Close()
		t.Cleanup(func() { conn.Close() })
		s := session{k, conn}
		if Owner(k, 3) != Owner(k, 2) {
			moving = append(moving, s)
		} else {
			staying = append(staying, s)
		}
	}
	if len(moving) == 0 || len(staying) == 0 {
		t.Fatalf("the test did not test anything: %d keys move on 2→3, %d stay", len(moving), len(staying))
	}
	echo := func(s session) error {
		s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := s.conn.WriteMessage(websocket.TextMessage, []byte("ping "+s.key)); err != nil {
			return err
		}
		_, m, err := s.conn.ReadMessage()
		if err == nil && string(m) != "ping "+s.key {
			err = fmt.Errorf("echo %q", m)
		}
		return err
	}
	for _, s := range append(moving, staying...) {
		if err := echo(s); err != nil {
			t.Fatalf("key %q before the scale: %v", s.key, err)
		}
	}
	if out, err := opCLI(t, "scale", "--control", c.Control, "3"); err != nil {
		t.Fatalf("olio scale 3: %v: %s", err, out)
	}
	for _, s := range moving {
		s.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, _, err := s.conn.ReadMessage(); err == nil {
			t.Errorf("key %q moved to worker %d: its WebSocket on the old worker is still open", s.key, Owner(s.key, 3))
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("key %q moved: its WebSocket was not closed within 20s of the scale", s.key)
		}
	}
	for _, s := range staying {
		if err := echo(s); err != nil {
			t.Errorf("key %q did not move, but its WebSocket broke: %v", s.key, err)
		}
	}
}
