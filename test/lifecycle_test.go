package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/olio-dev/olio/listener"
)

// The end-to-end tests of the lifecycle: every signal and crash under a constant
// concurrent load (Load), with zero failed requests except the ones the design allows.
// The loads are light (2–3 workers, a handful of clients): the tests run on small machines.

// TestLifecycleHUP: a rolling restart replaces every app without failing a request, and
// every key stays on its owner throughout.
func TestLifecycleHUP(t *testing.T) {
	t.Parallel()
	const workers = 3
	c := Start(t, "--workers", strconv.Itoa(workers))
	before := appPIDs(t, c, workers)
	l := StartLoad(t, c, LoadOptions{Clients: 6, Prefix: "hup-"})
	l.ExpectOwners(workers)
	l.WaitOK(100, 20*time.Second)

	okBefore := l.OK()
	start := time.Now()
	hup(t, c, 60*time.Second)
	t.Logf("rolling restart of %d workers took %s; %d good answers meanwhile", workers, time.Since(start).Round(time.Millisecond), l.OK()-okBefore)
	l.WaitOK(100, 20*time.Second)
	st := l.Stop()
	st.Log(t)
	st.NoFailures(t, nil)

	after := appPIDs(t, c, workers)
	for i := range after {
		for _, old := range before {
			if after[i] == old {
				t.Errorf("worker %d still runs app pid %d after the rolling restart (before: %v, after: %v)", i, old, before, after)
			}
		}
	}
	// The old apps drain in the background after the roll: wait until they are gone.
	if !Eventually(20*time.Second, func() bool { return len(c.Descendants()) == 2*workers }) {
		t.Errorf("%d processes under the master after the rolling restart, want %d", len(c.Descendants()), 2*workers)
	}
}

// TestLifecycleTTIN: one worker more under load; afterwards every key is on its owner
// among 3, and the new worker takes part in full: it accepts public connections, the others
// forward it requests and hand it connections for its keys, and its app serves them. (Its
// answers alone would not tell: the other routers could be carrying it.)
func TestLifecycleTTIN(t *testing.T) {
	t.Parallel()
	c := testResize(t, 2, syscall.SIGTTIN, 3, 2)
	const newcomer = 2
	before := opStatus(t, c).Workers[newcomer]

	// It accepts: a keyless request is served by the router that accepted it.
	pinnedConn(t, c, newcomer)

	// It is forwarded to: a connection router 0 accepted, whose first request (the probe)
	// had no key, forwards its later requests.
	const forwarded = 5
	hc, _ := pinnedClient(t, c, 0)
	key := keyOwnedBy(newcomer, 3)
	for i := 0; i < forwarded; i++ {
		a, err := Do(hc, keyRequest(c, "GET", key, nil))
		if err != nil || a.Index != newcomer {
			t.Fatalf("key %s via router 0: %+v, %v; want worker %d", key, a, err, newcomer)
		}
	}

	// It is handed connections: fresh connections whose first request carries its key,
	// until one that another router accepted has been handed to it.
	handed := func(st *listener.Status) bool { return st.Workers[newcomer].HandedIn > before.HandedIn }
	if !Eventually(20*time.Second, func() bool {
		if _, err := Do(quick, keyRequest(c, "GET", key, nil)); err != nil {
			t.Fatalf("key %s on a new connection: %v", key, err)
		}
		return handed(opStatus(t, c))
	}) {
		t.Errorf("no connection for worker %d's key was handed to it within 20s", newcomer)
	}

	st := opStatus(t, c)
	w := st.Workers[newcomer]
	if !w.Member || w.State != "ready" {
		t.Errorf("worker %d: member %v, state %q; want a ready member", newcomer, w.Member, w.State)
	}
	if g := w.ForwardedIn - before.ForwardedIn; g < forwarded {
		t.Errorf("worker %d received %d forwarded requests, want at least %d", newcomer, g, forwarded)
	}
	if g := w.Served - before.Served; g < forwarded+1 {
		t.Errorf("worker %d's app served %d requests, want at least %d", newcomer, g, forwarded+1)
	}
}

// TestLifecycleTTOU: one worker fewer under load; afterwards every key is on its owner
// among 2.
func TestLifecycleTTOU(t *testing.T) {
	t.Parallel()
	testResize(t, 3, syscall.SIGTTOU, 2, 2)
}

// testResize sends sig to a cluster of from workers, started with extra, under load, and
// checks it ends with to workers of perWorker processes each.
func testResize(t *testing.T, from int, sig syscall.Signal, to, perWorker int, extra ...string) *Cluster {
	c := Start(t, append([]string{"--workers", strconv.Itoa(from)}, extra...)...)
	l := StartLoad(t, c, LoadOptions{Clients: 6, Prefix: "resize-"})
	l.ExpectOwners(from)
	l.WaitOK(100, 20*time.Second)

	// While the count changes, a key may be answered by its old or its new owner.
	l.ExpectOwners(0)
	start := time.Now()
	c.Signal(sig)
	c.WaitLog("msg=scaled workers="+strconv.Itoa(to), 60*time.Second)
	t.Logf("%v: %d → %d workers in %s", sig, from, to, time.Since(start).Round(time.Millisecond))
	// From now on every router routes by the new count.
	l.ExpectOwners(to)
	l.WaitOK(200, 20*time.Second)
	st := l.Stop()
	st.Log(t)
	st.NoFailures(t, nil)

	checkOwners(t, c, l.Keys(), to)
	if !Eventually(10*time.Second, func() bool { return len(c.Descendants()) == perWorker*to }) {
		t.Errorf("%d processes under the master, want %d", len(c.Descendants()), perWorker*to)
	}
	return c
}

// TestLifecycleWinchThenTTIN: WINCH scales to zero workers; while there are none, every
// request gets 503 with Retry-After; TTIN brings one worker back and everything is good
// again.
func TestLifecycleWinchThenTTIN(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	l := StartLoad(t, c, LoadOptions{Clients: 4, Prefix: "winch-"})
	l.ExpectOwners(2)
	l.WaitOK(100, 20*time.Second)

	l.ExpectOwners(0)
	winch := time.Now()
	c.Signal(syscall.SIGWINCH)
	c.WaitLog("msg=scaled workers=0", 60*time.Second)
	t.Logf("WINCH at %s, zero workers at %s", winch.Format("15:04:05.000000"), time.Now().Format("15:04:05.000000"))
	if !Eventually(10*time.Second, func() bool { return len(c.Descendants()) == 0 }) {
		t.Errorf("processes under the master after scaling to zero: %v", c.Descendants())
	}
	// The load gets its 503s; so does a request of our own.
	n503 := l.Count(http.StatusServiceUnavailable)
	if !Eventually(10*time.Second, func() bool { return l.Count(http.StatusServiceUnavailable) >= n503+20 }) {
		t.Errorf("the load got %d answers of 503 while there were no workers, want 20 more than %d (statuses %v)",
			l.Count(http.StatusServiceUnavailable), n503, l.statusesCopy())
	}
	status, body, hdr := rawDo(t, keyRequest(c, "GET", "alice", nil))
	if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Errorf("with zero workers: status %d, Retry-After %q (body %q); want 503 with Retry-After", status, hdr.Get("Retry-After"), body)
	}

	c.Signal(syscall.SIGTTIN)
	c.WaitLog("msg=scaled workers=1", 60*time.Second)
	back := time.Now()
	t.Logf("TTIN: back to one worker at %s", back.Format("15:04:05.000000"))
	l.ExpectOwners(1)
	l.WaitOK(200, 20*time.Second)
	st := l.Stop()
	st.Log(t)
	st.NoFailures(t, func(r Result) bool {
		// The expected answer while the cluster has no workers: to a request answered after
		// the WINCH (one sent a moment before it may be routed after the scale) and sent
		// before the TTIN's worker was back.
		return r.Status == http.StatusServiceUnavailable && r.RetryAfter != "" &&
			r.End.After(winch) && r.Start.Before(back)
	})
	checkOwners(t, c, l.Keys(), 1)
}

// TestLifecycleKillApp: kill -9 of an app costs nothing but that app's own in-flight
// requests, which get 502; its keys wait for the replacement.
func TestLifecycleKillApp(t *testing.T) {
	t.Parallel()
	const workers, victim = 3, 1
	c := Start(t, "--workers", strconv.Itoa(workers))
	l := StartLoad(t, c, LoadOptions{Clients: 6, Prefix: "killapp-"})
	l.ExpectOwners(workers)
	l.WaitOK(100, 20*time.Second)

	old := appPIDs(t, c, workers)[victim]
	c.Descendants()
	// A POST in flight inside the app when it dies cannot be repeated, with a body or
	// without: it gets a clear 502.
	posts := []string{"payload", ""}
	post := make(chan *http.Response, len(posts))
	for _, body := range posts {
		go func() {
			req := keyRequest(c, "POST", "", strings.NewReader(body))
			req.URL.RawQuery = "sleep=20000"
			req.Header.Set("X-Olio-Index", strconv.Itoa(victim))
			req.Header.Set("X-Olio-Secret", c.Secret)
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("in-flight POST of %d bytes: %v", len(body), err)
			}
			post <- resp
		}()
	}
	// A GET in flight inside the app when it dies is repeated on the replacement: it gets
	// its answer from the new app. It takes as long as the wait below for all three to be
	// in flight, so that it cannot end before the kill however slowly the others come.
	get := make(chan *Answer, 1)
	go func() {
		req := keyRequest(c, "GET", "", nil)
		req.URL.RawQuery = "sleep=10000"
		req.Header.Set("X-Olio-Index", strconv.Itoa(victim))
		req.Header.Set("X-Olio-Secret", c.Secret)
		a, err := Do(&http.Client{Timeout: 60 * time.Second}, req) // twice 10s, and the replacement's start
		if err != nil {
			t.Errorf("in-flight GET in a killed app: %v, want it repeated on the new app", err)
		}
		get <- a
	}()
	if !Eventually(10*time.Second, func() bool { return inFlight(t, c, victim) >= 3 }) {
		t.Fatal("the POSTs and the GET never all reached the app")
	}
	killed := time.Now()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range posts {
		if resp := <-post; resp != nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "app failed") {
				t.Errorf("in-flight POST in a killed app: %d %q, want a 502 that says the app failed", resp.StatusCode, body)
			}
		}
	}
	if a := <-get; a != nil && a.PID == old {
		t.Errorf("the in-flight GET was answered by the killed app %d", old)
	}
	// The router learns of the death when it reaps the process, a few milliseconds after
	// the kill; requests it sends the dying app until then fail like the ones in flight in it.
	exited := fmt.Sprintf(`msg="app exited" worker=%d app_pid=%d`, victim, old)
	noticed := loggedAt(t, c, exited)
	t.Logf("app %d killed at %s, reaped by its router at %s", old, killed.Format("15:04:05.000000"), noticed.Format("15:04:05.000"))
	var now int
	if !Eventually(30*time.Second, func() bool {
		a, err := direct(c, victim)
		if err == nil {
			now = a.PID
		}
		return err == nil && a.PID != old
	}) {
		t.Fatalf("worker %d's app was not replaced within 30s of kill -9 %d", victim, old)
	}
	t.Logf("app %d: pid %d killed, pid %d answering %s later", victim, old, now, time.Since(killed).Round(time.Millisecond))
	l.WaitOK(200, 20*time.Second)
	st := l.Stop()
	st.Log(t)
	inFlight, _ := st.Split(killedAppInFlight(victim, killed))
	window, _ := st.Split(killedAppInFlight(victim, noticed))
	t.Logf("502s: %d requests sent before the kill, %d more until the router reaped the app", len(inFlight), len(window)-len(inFlight))
	// The load is idempotent GETs without a body: the router repeats them on the
	// replacement app, so none may fail.
	st.NoFailures(t, func(Result) bool { return false })
}

// inFlight is worker i's in-flight count from olio status --json.
func inFlight(t testing.TB, c *Cluster, i int) int64 {
	t.Helper()
	out, err := exec.Command(olioBin, "status", "--json", "--control", c.Control).Output()
	if err != nil {
		return 0
	}
	var st struct {
		Workers []struct {
			Index    int   `json:"index"`
			InFlight int64 `json:"in_flight"`
		} `json:"workers"`
	}
	json.Unmarshal(out, &st)
	for _, w := range st.Workers {
		if w.Index == i {
			return w.InFlight
		}
	}
	return 0
}

// killedAppInFlight allows the 502 of a request to worker victim's app sent before until.
func killedAppInFlight(victim int, until time.Time) func(Result) bool {
	return func(r Result) bool {
		return r.Status == http.StatusBadGateway && r.Worker == victim && r.Start.Before(until)
	}
}

// loggedAt waits for a log line containing s and returns when olio logged it.
func loggedAt(t testing.TB, c *Cluster, s string) time.Time {
	t.Helper()
	c.WaitLog(s, 10*time.Second)
	line := c.lines(s)[0]
	at, ok := logTime(line)
	if !ok {
		t.Fatalf("no time in %q", line)
	}
	return at
}

// logTime returns the time of an olio log line (text format, millisecond precision) as
// the end of its millisecond, so that "before it" holds for everything that happened
// before the line was logged.
func logTime(line string) (time.Time, bool) {
	_, rest, ok := strings.Cut(line, "time=")
	if !ok {
		return time.Time{}, false
	}
	v, _, _ := strings.Cut(rest, " ")
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false
	}
	return t.Add(time.Millisecond), true
}

// TestLifecycleKillRouter: kill -9 of a router. The master restarts it, its peers re-dial,
// its keys wait. Nothing fails but the requests on that router's own connections and the
// ones it was serving.
func TestLifecycleKillRouter(t *testing.T) {
	t.Parallel()
	const workers, victim = 3, 1
	c := Start(t, "--workers", strconv.Itoa(workers))
	l := StartLoad(t, c, LoadOptions{Clients: 6, Fresh: 2, Prefix: "killrouter-"})
	l.ExpectOwners(workers)
	l.WaitOK(100, 20*time.Second)

	old := c.routers()[victim]
	oldApp := appPIDs(t, c, workers)[victim]
	if old == 0 {
		t.Fatalf("no router %d under the master", victim)
	}
	killed := time.Now()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// A killed process shows as a zombie while its other threads are still exiting, with
	// its sockets open: it is dead for sure when the master has reaped it.
	exited := fmt.Sprintf(`msg="router exited; restarting it" worker=%d router_pid=%d`, victim, old)
	dead := loggedAt(t, c, exited)
	t.Logf("router %d killed at %s, reaped at %s", old, killed.Format("15:04:05.000000"), dead.Format("15:04:05.000"))
	var now int
	if !Eventually(30*time.Second, func() bool {
		now = c.routers()[victim]
		return now != 0 && now != old
	}) {
		t.Fatalf("router %d was not restarted within 30s of kill -9 %d", victim, old)
	}
	if !Eventually(30*time.Second, func() bool {
		a, err := direct(c, victim)
		return err == nil && a.PID != oldApp && a.Index == victim
	}) {
		t.Fatalf("worker %d does not answer with a new app within 30s of its router's restart", victim)
	}
	t.Logf("router %d: pid %d killed, pid %d serving %s later", victim, old, now, time.Since(killed).Round(time.Millisecond))
	l.WaitOK(200, 20*time.Second)
	st := l.Stop()
	st.Log(t)
	onKilled := func(r Result) bool {
		// No answer on a connection the killed router held: accepted by it (labelled), or
		// an unlabelled one opened before the kill.
		if r.ConnError() && (r.Router == victim || (r.Router < 0 && r.Start.Before(dead))) {
			return true
		}
		// Forwarded to the killed router before it died.
		return r.Status == http.StatusBadGateway && r.Worker == victim && r.Start.Before(dead)
	}
	allowed, _ := st.Split(onKilled)
	conns := 0
	for _, r := range allowed {
		if r.ConnError() {
			conns++
		}
	}
	t.Logf("on the killed router: %d connection errors, %d forwarded requests in flight (502)", conns, len(allowed)-conns)
	st.NoFailures(t, onKilled)
	checkOwners(t, c, l.Keys(), workers)
}

// TestLifecycleKillMaster: kill -9 of the master takes every router and app with it within
// a few seconds, and frees the port.
func TestLifecycleKillMaster(t *testing.T) {
	t.Parallel()
	testKillMaster(t, 2)
}

// testKillMaster is TestLifecycleKillMaster for a cluster of 2 workers of perWorker
// processes each, started with extra flags.
func testKillMaster(t *testing.T, perWorker int, extra ...string) {
	c := Start(t, append([]string{"--workers", "2"}, extra...)...)
	l := StartLoad(t, c, LoadOptions{Clients: 4, Prefix: "killmaster-", Timeout: 5 * time.Second})
	l.WaitOK(100, 20*time.Second)
	pids := c.Descendants()
	if len(pids) != 2*perWorker {
		t.Errorf("%d processes under the master, want %d: %v", len(pids), 2*perWorker, pids)
	}
	killed := time.Now()
	syscall.Kill(c.Pid(), syscall.SIGKILL)
	c.WaitExit(10*time.Second, "SIGKILL")
	if !Eventually(5*time.Second, func() bool { return len(alive(pids)) == 0 }) {
		t.Fatalf("still running 5s after kill -9 of the master: %v", alive(pids))
	}
	t.Logf("every router and app gone %s after kill -9 of the master", time.Since(killed).Round(time.Millisecond))
	if !Eventually(5*time.Second, func() bool {
		ln, err := net.Listen("tcp", c.Addr)
		if err == nil {
			ln.Close()
		}
		return err == nil
	}) {
		t.Errorf("the port is still bound after every olio process died")
	}
	l.Stop().Log(t)
}

// TestLifecycleGracefulStop: SIGTERM while requests are in flight, accepted by every
// router, some served locally and some forwarded: they all complete with 200, and olio
// exits 0 leaving nothing behind. The apps hold every request until every router has begun
// its drain, seen as each closing an idle keep-alive connection of its own (a condition, not
// a time window: a fixed one failed under the race detector).
func TestLifecycleGracefulStop(t *testing.T) {
	t.Parallel()
	const workers = 2
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := Start(t, "--workers", strconv.Itoa(workers), "--", exe, round3AppArg)
	var calls []*stopCall
	for from := 0; from < workers; from++ {
		for to := 0; to < workers; to++ {
			for k := 0; k < 2; k++ {
				calls = append(calls, &stopCall{from: from, to: to})
			}
		}
	}
	idle := make([]net.Conn, workers) // one idle keep-alive connection on each router
	for i := range idle {
		idle[i], _ = pinnedConn(t, c, i)
	}
	gate := filepath.Join(t.TempDir(), "release")
	signalWith(t, c, syscall.SIGTERM, calls, "gate="+gate, 10*time.Second, func() {
		for i, nc := range idle {
			nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			var ne net.Error
			if _, err := nc.Read(make([]byte, 1)); errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("router %d did not close an idle connection within 30s of SIGTERM: its drain did not begin", i)
			}
		}
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}, func(st *listener.Status) error {
		for i, w := range st.Workers {
			if w.InFlight != int64(2*workers) {
				return fmt.Errorf("worker %d: %d requests in its app, want %d", i, w.InFlight, 2*workers)
			}
		}
		return nil
	})
}

// TestLifecycleGracefulStopForwardedOnly: SIGTERM while slow requests are in flight that
// router 0 accepted and sent on to worker 1, by key and by X-Olio-Index (--handoff=false,
// so the keyed ones are forwarded rather than handed off), with no request in worker 0's
// own app: router 0 must still wait for what it forwarded. TestLifecycleGracefulStop gives
// every router local work, which hides a router that waits for its app's requests alone.
func TestLifecycleGracefulStopForwardedOnly(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2", "--handoff=false")
	var calls []*stopCall
	for k := 0; k < 3; k++ {
		calls = append(calls, &stopCall{from: 0, to: 1}, &stopCall{from: 0, to: 1, keyed: true})
	}
	signalWithInFlight(t, c, syscall.SIGTERM, calls, 6*time.Second, func(st *listener.Status) error {
		if w := st.Workers[0]; w.InFlight != 0 || w.Forwarded < uint64(len(calls)) {
			return fmt.Errorf("worker 0: %d in flight and %d forwarded, want 0 and at least %d", w.InFlight, w.Forwarded, len(calls))
		}
		if w := st.Workers[1]; w.InFlight != int64(len(calls)) {
			return fmt.Errorf("worker 1: %d in flight, want %d", w.InFlight, len(calls))
		}
		return nil
	})
}

// TestLifecycleTTOUFinishesForwarded: TTOU while slow requests are in flight that the
// leaving router accepted and forwarded to worker 0, with none in its own app: it must
// finish them before it exits, as in a full stop (where the other routers' drains would
// keep it up anyway). Under --handover exclusive the prepare phase already waits for
// requests routed before the change (up to --forward-timeout), so the leaving router's
// drain finds them done; under overlap there is no prepare, and only the drain keeps the
// leaving router up until they are answered.
func TestLifecycleTTOUFinishesForwarded(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"exclusive", "overlap"} {
		t.Run(mode, func(t *testing.T) {
			c := Start(t, "--workers", "3", "--handoff=false", "--handover", mode)
			const leaving = 2
			var calls []*stopCall
			for k := 0; k < 2; k++ {
				calls = append(calls, &stopCall{from: leaving, to: 0}, &stopCall{from: leaving, to: 0, keyed: true})
			}
			signalWithInFlight(t, c, syscall.SIGTTOU, calls, 6*time.Second, func(st *listener.Status) error {
				if w := st.Workers[leaving]; w.InFlight != 0 || w.Forwarded < uint64(len(calls)) {
					return fmt.Errorf("worker %d: %d in flight and %d forwarded, want 0 and at least %d", leaving, w.InFlight, w.Forwarded, len(calls))
				}
				return nil
			})
			c.WaitLog("msg=scaled workers=2", 30*time.Second)
		})
	}
}

// stopCall is one slow request of signalWithInFlight: sent over a connection that router from
// accepted, for worker to, by X-Olio-Index or (keyed) by a key that worker owns.
type stopCall struct {
	from, to int
	keyed    bool
	local    net.Addr
	wrote    chan struct{}
	end      time.Time
	status   int
	body     string
	err      error
	index    int
}

// signalWithInFlight sends calls, each asking the app to take d, waits until every router
// has read its requests (and, if given, until the status satisfies each check, within d/2:
// d is long enough for a loaded machine to get every request in flight), sends sig,
// and checks that every call is answered 200 by its worker after the signal, and, for
// SIGTERM, that olio exits 0.
func signalWithInFlight(t *testing.T, c *Cluster, sig syscall.Signal, calls []*stopCall, d time.Duration, checks ...func(*listener.Status) error) {
	t.Helper()
	signalWith(t, c, sig, calls, "sleep="+strconv.Itoa(int(d.Milliseconds())), d/2, nil, checks...)
}

// signalWith is signalWithInFlight for requests of the query q, whose checks must hold
// within checkWithin; release, if not nil, lets the requests end once the signal is sent (an
// app that holds its requests until a condition).
func signalWith(t *testing.T, c *Cluster, sig syscall.Signal, calls []*stopCall, q string, checkWithin time.Duration, release func(), checks ...func(*listener.Status) error) {
	t.Helper()
	workers := 0
	for _, cl := range calls {
		workers = max(workers, cl.from+1, cl.to+1)
	}
	// Every connection first: finding one that a given router accepted can take a while on
	// a loaded machine, and the first requests must not end before the last is sent.
	clients := make([]*http.Client, len(calls))
	for i, cl := range calls {
		clients[i], _ = pinnedClient(t, c, cl.from)
	}
	var wg sync.WaitGroup
	for i, cl := range calls {
		cl.wrote = make(chan struct{})
		hc := clients[i]
		req := keyRequest(c, "GET", "", nil)
		if cl.keyed {
			req.Header.Set("X-Olio-Key", keyOwnedBy(cl.to, workers))
		} else {
			req.Header.Set("X-Olio-Index", strconv.Itoa(cl.to))
			req.Header.Set("X-Olio-Secret", c.Secret)
		}
		req.URL.RawQuery = q
		trace := &httptrace.ClientTrace{
			GotConn:      func(info httptrace.GotConnInfo) { cl.local = info.Conn.LocalAddr() },
			WroteRequest: func(httptrace.WroteRequestInfo) { close(cl.wrote) },
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Do(req)
			cl.end = time.Now()
			if err != nil {
				cl.err = err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cl.status, cl.body = resp.StatusCode, string(b)
			if a, err := decodeAnswer(resp.StatusCode, b); err == nil {
				cl.index = a.Index
			}
		}()
	}
	// In flight: every request is written, and its router has read it (nothing unread on
	// the server's side of its connection).
	server, _ := net.ResolveTCPAddr("tcp", c.Addr)
	for i, cl := range calls {
		select {
		case <-cl.wrote:
		case <-time.After(30 * time.Second):
			t.Fatalf("request %d not written within 30s", i)
		}
		if !Eventually(30*time.Second, func() bool {
			n, ok := unreadByServer(server, cl.local.(*net.TCPAddr))
			return ok && n == 0
		}) {
			t.Fatalf("request %d (%v) not read by router %d within 30s", i, cl.local, cl.from)
		}
	}
	for _, check := range checks {
		var err error
		if !Eventually(checkWithin, func() bool { err = check(opStatus(t, c)); return err == nil }) {
			t.Fatalf("before %v: %v: the test would not test what it means to", sig, err)
		}
	}
	term := time.Now()
	c.Signal(sig)
	if release != nil {
		release()
	}
	waitGroup(t, &wg, 60*time.Second, fmt.Sprintf("the answers to %d requests in flight when %v came", len(calls), sig))
	for i, cl := range calls {
		switch {
		case cl.err != nil:
			t.Errorf("request %d (router %d → worker %d): %v", i, cl.from, cl.to, cl.err)
		case cl.status != http.StatusOK || cl.index != cl.to:
			t.Errorf("request %d (router %d → worker %d): status %d from %d: %s", i, cl.from, cl.to, cl.status, cl.index, cl.body)
		case !cl.end.After(term):
			t.Errorf("request %d ended before %v was sent: the test did not test anything", i, sig)
		}
	}
	if sig != syscall.SIGTERM {
		return
	}
	select {
	case <-c.Exited():
		if c.exitErr != nil {
			t.Errorf("olio exited with %v after SIGTERM, want 0", c.exitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("olio did not exit within 30s of SIGTERM")
	}
	t.Logf("stopped %s after SIGTERM with %d requests (%s) in flight", time.Since(term).Round(time.Millisecond), len(calls), q)
}

// TestLifecycleUSR2: a hot upgrade under load. Afterwards exactly one master remains, every
// app pid is new, no request failed, and the same port keeps answering.
func TestLifecycleUSR2(t *testing.T) {
	t.Parallel()
	testUSR2(t)
}

// testUSR2 is TestLifecycleUSR2 for a cluster started with extra flags.
func testUSR2(t *testing.T, extra ...string) {
	const workers = 2
	metrics := freeAddr(t) // the new master takes the address over from the old one
	c := Start(t, append([]string{"--workers", strconv.Itoa(workers), "--metrics", metrics}, extra...)...)
	before := appPIDs(t, c, workers)
	l := StartLoad(t, c, LoadOptions{Clients: 4, Prefix: "usr2-"})
	l.ExpectOwners(workers)
	l.WaitOK(100, 20*time.Second)

	oldMaster := c.Pid()
	// If the upgrade hands over to a new master process, that one must be stopped at the
	// end of the test too, and its children checked (this runs before the harness's own
	// cleanup, which knows the old master only).
	t.Cleanup(func() { stopOtherMasters(t, c, oldMaster) })
	start := time.Now()
	c.Signal(syscall.SIGUSR2)
	var masters []int
	var after []int
	failed := func() bool { return c.CountLog("upgrade failed") > 0 }
	upgraded := func() bool {
		masters = mastersOf(c)
		if len(masters) != 1 {
			return false
		}
		pids := make([]int, workers)
		for i := range pids {
			a, err := direct(c, i)
			if err != nil {
				return false
			}
			pids[i] = a.PID
		}
		for i := range pids {
			for _, old := range before {
				if pids[i] == old {
					return false
				}
			}
		}
		after = pids
		return true
	}
	if !Eventually(60*time.Second, func() bool { return failed() || upgraded() }) {
		t.Fatalf("no upgrade within 60s of SIGUSR2: masters %v, app pids before %v", masters, before)
	}
	if failed() {
		t.Fatalf("hot upgrade failed: %s", strings.Join(c.lines("upgrade failed"), "\n"))
	}
	t.Logf("USR2: master %d → %d, app pids %v → %v in %s", oldMaster, masters[0], before, after, time.Since(start).Round(time.Millisecond))
	l.WaitOK(200, 20*time.Second)
	st := l.Stop()
	st.Log(t)
	st.NoFailures(t, nil)
	if a, err := c.getKey(client, "/k", "after-upgrade"); err != nil || a.Index != Owner("after-upgrade", workers) {
		t.Errorf("after the upgrade, %s: %+v, %v", c.Addr, a, err)
	}
	var scrape string
	if !Eventually(20*time.Second, func() bool {
		resp, err := client.Get("http://" + metrics + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		scrape = string(b)
		return resp.StatusCode == 200 && strings.Contains(scrape, "olio_workers")
	}) {
		t.Errorf("no metrics at %s after the upgrade: %.300s", metrics, scrape)
	}
	if masters := mastersOf(c); len(masters) != 1 {
		t.Errorf("%d masters after the upgrade: %v", len(masters), masters)
	}
}

// hup sends the master SIGHUP and waits up to timeout for the rolling restart it starts to
// be done. The master's log line is the one sign of that: no status or metric says that a
// roll has ended.
func hup(t testing.TB, c *Cluster, timeout time.Duration) {
	t.Helper()
	done := c.CountLog("rolling restart done")
	c.Signal(syscall.SIGHUP)
	if !Eventually(timeout, func() bool { return c.CountLog("rolling restart done") > done }) {
		t.Fatalf("no rolling restart done within %s of SIGHUP", timeout)
	}
}

// direct asks worker i with X-Olio-Index and the secret.
func direct(c *Cluster, i int) (*Answer, error) {
	req := keyRequest(c, "GET", "", nil)
	req.Header.Set("X-Olio-Index", strconv.Itoa(i))
	req.Header.Set("X-Olio-Secret", c.Secret)
	return Do(client, req)
}

// appPIDs returns the app pid of every worker, asked directly.
func appPIDs(t testing.TB, c *Cluster, workers int) []int {
	t.Helper()
	pids := make([]int, workers)
	for i := range pids {
		a, err := direct(c, i)
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		if a.Index != i {
			t.Fatalf("X-Olio-Index %d answered by worker %d", i, a.Index)
		}
		pids[i] = a.PID
	}
	c.Descendants()
	return pids
}

// checkOwners checks that every key is answered by Owner(key, workers).
func checkOwners(t testing.TB, c *Cluster, keys []string, workers int) {
	t.Helper()
	wrong := 0
	for _, key := range keys {
		a, err := c.getKey(client, "/k", key)
		if err != nil {
			t.Fatalf("key %s: %v", key, err)
		}
		if want := Owner(key, workers); a.Index != want {
			if wrong++; wrong <= 10 {
				t.Errorf("key %s answered by worker %d, owner among %d is %d", key, a.Index, workers, want)
			}
		}
	}
	if wrong > 10 {
		t.Errorf("… %d keys of %d on the wrong worker in all", wrong, len(keys))
	}
}

// mastersOf returns the live `olio serve` processes of c's cluster (its control socket is
// unique to the test).
func mastersOf(c *Cluster) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		args := procArgs(pid)
		if len(args) > 1 && args[1] == "serve" && strings.Contains(strings.Join(args, " "), c.Control) && len(alive([]int{pid})) > 0 {
			out = append(out, pid)
		}
	}
	return out
}

// stopOtherMasters stops, with SIGTERM, any master of c's cluster other than the one the
// harness started, and checks that it and its children exit.
func stopOtherMasters(t testing.TB, c *Cluster, started int) {
	for _, pid := range mastersOf(c) {
		if pid == started {
			continue
		}
		pids := append(descendantsOf(pid), pid)
		syscall.Kill(pid, syscall.SIGTERM)
		if !Eventually(40*time.Second, func() bool { return len(alive(pids)) == 0 }) {
			left := alive(pids)
			for _, p := range left {
				syscall.Kill(p, syscall.SIGKILL)
			}
			t.Errorf("the upgraded master %d left processes running 40s after SIGTERM: %v", pid, left)
		}
	}
}

// unreadByServer returns how many bytes the server side of the TCP connection between
// client and server has received and not yet read (tcpLookup); ok is false if there is no
// such connection.
func unreadByServer(server, client *net.TCPAddr) (n int, ok bool) {
	s, found, err := tcpLookup(server, client)
	return int(s.unread), found && err == nil
}

// TestLifecycleSecondSignalKills: a second TERM during a graceful stop stops at once, even
// with a request in flight that would hold the graceful stop for its whole duration.
func TestLifecycleSecondSignalKills(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "1", "--shutdown-timeout", "60s")
	go func() {
		req := keyRequest(c, "GET", "", nil)
		req.URL.RawQuery = "sleep=30000"
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	opWaitStatus(t, c, 10*time.Second, "a request in flight", func(st *listener.Status) bool {
		return len(st.Workers) == 1 && st.Workers[0].InFlight > 0
	})
	c.Signal(syscall.SIGTERM)
	c.WaitLog("stopping", 10*time.Second)
	c.Signal(syscall.SIGTERM)
	c.WaitExit(10*time.Second, "a second SIGTERM")
	if c.CountLog("second stop signal") != 1 {
		t.Errorf("no \"second stop signal\" line in the log")
	}
}

// TestLifecycleStopDuringUpgrade: a stop that comes while a hot upgrade waits for its new
// master abandons the upgrade: the new master is stopped too, and nothing keeps serving.
func TestLifecycleStopDuringUpgrade(t *testing.T) {
	t.Parallel()
	script := `sleep 2; exec "$0" demo` // every app takes 2s to get ready: the upgrade waits
	c := Start(t, "--workers", "1", "--shutdown-timeout", "2s", "--", "/bin/sh", "-c", script, olioBin)
	oldMaster := c.Pid()
	t.Cleanup(func() { stopOtherMasters(t, c, oldMaster) })
	c.Signal(syscall.SIGUSR2)
	if !Eventually(10*time.Second, func() bool { return len(mastersOf(c)) == 2 }) {
		t.Fatalf("no new master within 10s of USR2")
	}
	c.Signal(syscall.SIGTERM)
	c.WaitExit(20*time.Second, "SIGTERM during the upgrade")
	if !Eventually(10*time.Second, func() bool { return len(mastersOf(c)) == 0 }) {
		t.Errorf("masters %v still running after a stop during the upgrade", mastersOf(c))
	}
	if _, err := c.getKey(client, "/k", "after-stop"); err == nil {
		t.Errorf("olio still answers after a stop during the upgrade")
	}
}
