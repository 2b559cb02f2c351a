package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Several machines: two olio "hosts", each in its own network namespace, behind
// a front (HAProxy, nginx) in a third one, all joined by a bridge inside the front's
// namespace. Every address is in 198.18.0.0/15 and exists only inside namespaces the test
// creates and removes; no traffic leaves the machine. The fronts run the very files in
// contrib/, with the addresses filled in as their comments say.

const (
	multihostAppArg = "olio-multihost-app"
	frontIP         = "198.18.0.1" // the bridge in the front's namespace
	hostPort        = "8080"       // olio's --listen port on every host, as in contrib/
	metricsPort     = "9090"       // olio's --metrics port, where the front checks /ready
	hostWorkers     = 2
	multihostKeys   = 120
)

func init() {
	if len(os.Args) > 1 && os.Args[1] == multihostAppArg {
		os.Exit(multihostApp())
	}
}

// hostAnswer is multihostApp's answer: which host and worker served the request.
type hostAnswer struct {
	Host  string `json:"host"`
	Index int    `json:"index"`
}

func (a hostAnswer) String() string { return a.Host + "/" + strconv.Itoa(a.Index) }

// multihostApp serves on $PORT and answers {"host", "index"}, after ?sleep=MS milliseconds
// if asked; the host's name comes from $MULTIHOST_TEST_HOST, set on its olio. /call?key=K asks K's owner through
// $OLIO_CLUSTER_ADDR, as an app calling another key's owner does, and relays its answer.
func multihostApp() int {
	host := os.Getenv("MULTIHOST_TEST_HOST")
	index, _ := strconv.Atoi(os.Getenv("OLIO_INDEX"))
	cl := &http.Client{Timeout: 5 * time.Second}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if ms, err := strconv.Atoi(r.URL.Query().Get("sleep")); err == nil {
			t := time.NewTimer(time.Duration(ms) * time.Millisecond)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if r.URL.Path == "/call" {
			req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://"+os.Getenv("OLIO_CLUSTER_ADDR")+"/", nil)
			req.Header.Set("X-Olio-Key", r.URL.Query().Get("key"))
			resp, err := cl.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			w.Header().Set("X-Caller", host)
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
			return
		}
		b, _ := json.Marshal(hostAnswer{Host: host, Index: index})
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	return serveApp(h, nil)
}

// network is the namespaces of one test: the front's and one per host.
type network struct {
	t      *testing.T
	front  string   // the front's namespace
	hosts  []string // each host's namespace
	hostIP []string // each host's address
}

// ipCmd runs ip(8) and returns its error with its output.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetwork makes the front's namespace with a bridge at frontIP, and n hosts' namespaces
// joined to it by veth pairs, host i at 198.18.0.(11+i). It skips the test where namespaces
// cannot be created, and removes them all at the end of the test, whatever happens.
func newNetwork(t *testing.T, name string, n int) *network {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: network namespaces cannot be created here: no ip(8) (Debian: apt-get install iproute2)")
	}
	prefix := fmt.Sprintf("olio-%s-%d", name, os.Getpid())
	nw := &network{t: t, front: prefix + "-front"}
	if err := ipCmd("netns", "add", nw.front); err != nil {
		t.Skipf("skipped: network namespaces cannot be created here (this test needs root): %v", err)
	}
	t.Cleanup(func() { nw.remove(nw.front) })
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("-n", nw.front, "link", "set", "lo", "up")
	must("-n", nw.front, "link", "add", "br0", "type", "bridge")
	must("-n", nw.front, "addr", "add", frontIP+"/24", "dev", "br0")
	must("-n", nw.front, "link", "set", "br0", "up")
	for i := 0; i < n; i++ {
		ns := prefix + "-h" + strconv.Itoa(i+1)
		ip := "198.18.0." + strconv.Itoa(11+i)
		must("netns", "add", ns)
		t.Cleanup(func() { nw.remove(ns) })
		nw.hosts, nw.hostIP = append(nw.hosts, ns), append(nw.hostIP, ip)
		veth := "v" + strconv.Itoa(i+1)
		must("-n", ns, "link", "set", "lo", "up")
		must("-n", nw.front, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		must("-n", nw.front, "link", "set", veth, "master", "br0", "up")
		must("-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
		must("-n", ns, "link", "set", "eth0", "up")
	}
	return nw
}

// remove deletes a namespace (its veth ends go with it).
func (nw *network) remove(ns string) {
	if err := ipCmd("netns", "del", ns); err != nil {
		nw.t.Errorf("remove the test's network namespace: %v", err)
	}
}

// dialIn returns a DialContext that connects from inside namespace ns: the socket is made
// on a thread that has joined ns, and that thread goes back to its own namespace before any
// other goroutine runs on it; if it cannot, it is thrown away (the goroutine exits locked to
// it). Going back matters: the runtime does not end the main thread but parks it, and
// /proc/self/net shows the main thread's namespace to the whole test process.
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			own, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer func() {
				if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
					runtime.UnlockOSThread()
				}
				own.Close()
			}()
			f, err := os.Open("/run/netns/" + ns)
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// clientIn is a keep-alive HTTP client whose connections start in namespace ns.
func clientIn(t *testing.T, ns string) *http.Client {
	tr := &http.Transport{DialContext: dialIn(ns), MaxIdleConnsPerHost: 8}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// startHost runs `olio serve` for host i inside its namespace, on the host's address with
// --metrics, running multihostApp, and waits until every worker is ready.
func (nw *network) startHost(i int, args ...string) *Cluster {
	t := nw.t
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, nw.hostIP[i]+":"+hostPort)
	full := []string{"netns", "exec", nw.hosts[i], olioBin, "serve",
		"--listen", c.Addr, "--metrics", nw.hostIP[i] + ":" + metricsPort,
		"--control", c.Control, "--secret", c.Secret, "--workers", strconv.Itoa(hostWorkers)}
	full = append(append(full, args...), "--", exe, multihostAppArg)
	// ip netns exec execs olio in place: the process started is olio's master.
	cmd := exec.Command("ip", full...)
	cmd.Env = append(os.Environ(), "MULTIHOST_TEST_HOST="+hostName(i))
	c.start(cmd, nil)
	c.WaitLog("all workers ready", 30*time.Second)
	return c
}

func hostName(i int) string { return "host" + strconv.Itoa(i+1) }

// contribVars matches the ${OLIO_…} placeholders of the contrib/ configs.
var contribVars = regexp.MustCompile(`\$\{(OLIO_[A-Z0-9_]+)\}`)

// fillIn is a contrib/ file with its ${OLIO_…} placeholders replaced from vars, as
// `envsubst '${OLIO_…} …'` does (nginx's own $variables stay). A placeholder without a
// value fails the test.
func fillIn(t *testing.T, path string, vars map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return contribVars.ReplaceAllStringFunc(string(b), func(m string) string {
		v, ok := vars[contribVars.FindStringSubmatch(m)[1]]
		if !ok {
			t.Fatalf("%s: no value for %s", path, m)
		}
		return v
	})
}

// front is a load balancer process running in the front's namespace.
type front struct {
	cmd  *exec.Cmd
	out  string // its output file
	done chan struct{}
}

// startFront runs name (haproxy or nginx) with args in the front's namespace and env
// added to the environment; it is stopped with SIGTERM at the end of the test.
func (nw *network) startFront(name string, env []string, args ...string) *front {
	t := nw.t
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		path = "/usr/sbin/" + name
		if _, err := os.Stat(path); err != nil {
			msg := fmt.Sprintf("%s is not installed; this test needs it (Debian: apt-get install %s; .ci/run installs it)", name, name)
			if os.Getenv("CI") != "" {
				t.Fatal(msg) // CI installs it: missing there is a broken set-up, not a skip
			}
			t.Skip("skipped: " + msg)
		}
	}
	f := &front{out: filepath.Join(t.TempDir(), name+".out"), done: make(chan struct{})}
	out, err := os.Create(f.out)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	f.cmd = exec.Command("ip", append([]string{"netns", "exec", nw.front, path}, args...)...)
	f.cmd.Env = append(os.Environ(), env...)
	f.cmd.Stdout, f.cmd.Stderr = out, out
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.cmd.Wait(); close(f.done) }()
	t.Cleanup(func() {
		syscall.Kill(-f.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-f.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
			waitDone(t, f.done, 20*time.Second, "the front to exit after kill -9 of its process group")
		}
		if t.Failed() {
			b, _ := os.ReadFile(f.out)
			t.Logf("%s output:\n%s", name, b)
		}
	})
	return f
}

// ask sends GET path with X-Olio-Key: key to the front and decodes the answer.
func ask(cl *http.Client, path, key string) (hostAnswer, *http.Response, error) {
	var a hostAnswer
	req, _ := http.NewRequest("GET", "http://"+frontIP+":"+hostPort+path, nil)
	req.Header.Set("X-Olio-Key", key)
	resp, err := cl.Do(req)
	if err != nil {
		return a, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return a, resp, err
	}
	if resp.StatusCode != http.StatusOK {
		return a, resp, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return a, resp, fmt.Errorf("decode %q: %w", body, err)
	}
	return a, resp, nil
}

func multihostKey(i int) string { return "user-" + strconv.Itoa(i) }

// round asks the front for every key once and returns who answered each.
func round(cl *http.Client) (map[string]hostAnswer, error) {
	got := make(map[string]hostAnswer, multihostKeys)
	for i := 0; i < multihostKeys; i++ {
		a, _, err := ask(cl, "/", multihostKey(i))
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", multihostKey(i), err)
		}
		got[multihostKey(i)] = a
	}
	return got, nil
}

// settle waits until the front sends keys to every host in want (its checks have seen
// them all up) and two rounds in a row agree, and returns that assignment.
func settle(t *testing.T, f *front, cl *http.Client, want int, within time.Duration) map[string]hostAnswer {
	t.Helper()
	var last map[string]hostAnswer
	var lastErr error
	ok := Eventually(within, func() bool {
		select {
		case <-f.done:
			t.Fatalf("the front exited: %v", f.cmd.ProcessState)
		default:
		}
		got, err := round(cl)
		if err != nil {
			lastErr = err
			return false
		}
		hosts := map[string]bool{}
		for _, a := range got {
			hosts[a.Host] = true
		}
		stable := last != nil && sameAnswers(last, got)
		last = got
		return stable && len(hosts) == want
	})
	if !ok {
		t.Fatalf("the front did not settle on %d hosts within %s (last error: %v; last round: %v)", want, within, lastErr, last)
	}
	return last
}

func sameAnswers(a, b map[string]hostAnswer) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// checkHostOwners checks that each key's worker is its jump-hash owner on its host, and that
// both hosts own a fair share (else the test would not test anything).
func checkHostOwners(t *testing.T, owners map[string]hostAnswer) {
	t.Helper()
	perHost := map[string]int{}
	for k, a := range owners {
		perHost[a.Host]++
		if g, e := a.Index, Owner(k, hostWorkers); g != e {
			t.Errorf("key %s: answered by %s, want worker %d of that host (jump hash)", k, a, e)
		}
	}
	for i := 0; i < 2; i++ {
		if perHost[hostName(i)] < multihostKeys/10 {
			t.Fatalf("%s owns %d of %d keys: the test did not test anything", hostName(i), perHost[hostName(i)], multihostKeys)
		}
	}
}

// load sends requests for every key to the front from a few connections, paced, until
// stop is closed; it records every answer per key and every failure. One more connection
// sends requests that take 200ms in the app, so that one is nearly always in flight.
type load struct {
	mu       sync.Mutex
	answers  map[string][]hostAnswer
	failures []string
	sent     atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(t *testing.T, ns string, conns int) *load {
	l := &load{answers: map[string][]hostAnswer{}, stop: make(chan struct{})}
	for g := 0; g <= conns; g++ {
		slow := g == conns
		stride := conns
		if slow {
			stride = 1
		}
		cl := clientIn(t, ns)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(4 * time.Millisecond) // pacing: at most 250 req/s per connection
			defer tick.Stop()
			for i := g; ; i += stride {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				key := multihostKey(i % multihostKeys)
				path := "/"
				if slow {
					path = "/?sleep=200"
				}
				a, _, err := ask(cl, path, key)
				l.sent.Add(1)
				l.mu.Lock()
				if err != nil {
					l.failures = append(l.failures, key+": "+err.Error())
				} else {
					l.answers[key] = append(l.answers[key], a)
				}
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(l.end)
	return l
}

// end stops the load and waits for it; safe twice.
func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// readyStatus is GET /ready's status on host i's metrics address, 0 when it does not answer.
func (nw *network) readyStatus(cl *http.Client, i int) int {
	resp, err := cl.Get("http://" + nw.hostIP[i] + ":" + metricsPort + "/ready")
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestMultihostHAProxy: two olio hosts behind HAProxy running contrib/haproxy/haproxy.cfg.
// Every key is answered by one (host, worker), round after round; an app's call through
// OLIO_CLUSTER_ADDR reaches the owner the front picks; stopping a host with --drain-delay
// under load loses no request and moves only its keys, and HAProxy takes the host out
// before it stops accepting (HAProxy's own counters show no refused connection, retry or
// bad response for it); its return moves exactly those keys back.
//
// The two several-hosts tests do not run in parallel: HAProxy's health checks and the
// drain delay are timed.
func TestMultihostHAProxy(t *testing.T) {
	const drainDelay = 4 * time.Second // > the config's inter 1s × fall 2
	nw := newNetwork(t, "mhap", 2)
	// contrib's file as it is, and a second one of the test's own that adds HAProxy's
	// statistics page, where the test reads what HAProxy met on the way to each host.
	stats := filepath.Join(t.TempDir(), "stats.cfg")
	if err := os.WriteFile(stats, []byte(haproxyStats), 0o600); err != nil {
		t.Fatal(err)
	}
	noErrors := func(when string) func(*http.Client) {
		return func(cl *http.Client) {
			for name, n := range haproxyServerStats(t, cl, "host2", "wretr", "wredis", "econ", "eresp") {
				if n != 0 {
					t.Errorf("HAProxy counted %s=%d for host2 %s: it sent host2 requests it could not take", name, n, when)
				}
			}
		}
	}
	hostScenario(t, nw, scenario{
		drainDelay: drainDelay,
		start: func() *front {
			return nw.startFront("haproxy", []string{
				"OLIO_FRONT=" + frontIP + ":" + hostPort, "OLIO_HOST1=" + nw.hostIP[0], "OLIO_HOST2=" + nw.hostIP[1],
			}, "-db", "-f", "../contrib/haproxy/haproxy.cfg", "-f", stats)
		},
		// HAProxy took host2 out before it stopped accepting: it never had to retry or
		// redispatch a request (which hides a refused connection from the client) nor
		// met a connection or response error there.
		afterStop: noErrors("while it stopped with --drain-delay " + drainDelay.String()),
		// and sent it nothing before its /ready said 200.
		afterReturn: noErrors("after it came back"),
	})
}

// TestMultihostNginx: the same two hosts behind nginx running contrib/nginx/olio.conf.
// nginx has no active health check, so there is no drain delay here: a stopped host is
// taken out when a connection to it fails, and the request goes to the key's next host.
func TestMultihostNginx(t *testing.T) {
	nw := newNetwork(t, "mhng", 2)
	dir := t.TempDir()
	conf := fillIn(t, "../contrib/nginx/olio.conf", map[string]string{
		"OLIO_FRONT": frontIP + ":" + hostPort, "OLIO_HOST1": nw.hostIP[0], "OLIO_HOST2": nw.hostIP[1],
	})
	if err := os.WriteFile(filepath.Join(dir, "olio.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// nginx.conf around it, as Debian's includes conf.d/*.conf in its http block.
	main := `daemon off;
worker_processes 1;
pid ` + dir + `/nginx.pid;
error_log stderr warn;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path ` + dir + `/body;
    proxy_temp_path ` + dir + `/proxy;
    include ` + dir + `/olio.conf;
}
`
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	hostScenario(t, nw, scenario{
		start: func() *front {
			return nw.startFront("nginx", nil, "-e", "stderr", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
		},
	})
}

// scenario is what differs between fronts in hostScenario.
type scenario struct {
	drainDelay  time.Duration      // the hosts' --drain-delay
	start       func() *front      // starts the front at frontIP:hostPort
	afterStop   func(*http.Client) // checks after host2 stopped under load, if not nil
	afterReturn func(*http.Client) // checks after host2 came back, if not nil
}

// hostScenario runs two olio hosts behind the front sc starts and checks: affinity over
// rounds, app calls through OLIO_CLUSTER_ADDR, host2 stopped under load (no failure, only
// its keys move), host2's return (exactly its keys move back, no failure).
func hostScenario(t *testing.T, nw *network, sc scenario) {
	cluster := []string{"--cluster-addr", frontIP + ":" + hostPort, "--drain-delay", sc.drainDelay.String()}
	hosts := []*Cluster{nw.startHost(0, cluster...), nw.startHost(1, cluster...)}
	f := sc.start()
	cl := clientIn(t, nw.front)
	// Affinity across hosts: one (host, worker) per key, the same in every round.
	owners := settle(t, f, cl, 2, 30*time.Second)
	checkHostOwners(t, owners)
	for r := 0; r < 3; r++ {
		got, err := round(cl)
		if err != nil {
			t.Fatal(err)
		}
		for k, a := range got {
			if a != owners[k] {
				t.Errorf("round %d: key %s answered by %s, before by %s", r, k, a, owners[k])
			}
		}
	}

	// An app calling OLIO_CLUSTER_ADDR with key K reaches the owner the front picks for a
	// client, also from the other host.
	crossHost := 0
	for i := 0; i < 40; i++ {
		key := multihostKey(i)
		a, resp, err := ask(cl, "/call?key="+key, "caller-"+strconv.Itoa(i))
		if err != nil {
			t.Fatalf("call for key %s: %v", key, err)
		}
		if a != owners[key] {
			t.Errorf("an app's call for key %s through OLIO_CLUSTER_ADDR reached %s; the front sends clients to %s", key, a, owners[key])
		}
		if resp.Header.Get("X-Caller") != a.Host {
			crossHost++
		}
	}
	if crossHost == 0 {
		t.Fatal("no app called a key owned by the other host: the test did not test anything")
	}

	// Stop host2 under load: /ready goes 503 at once, the front takes it out (HAProxy by
	// its check; nginx once a connection fails), host2 serves on for the drain delay, then
	// drains and exits. No request may fail.
	l := startLoad(t, nw.front, 4)
	if !Eventually(10*time.Second, func() bool { return l.sent.Load() > 200 }) {
		t.Fatal("the load did not start")
	}
	hosts[1].Signal(syscall.SIGTERM)
	stopped := time.Now()
	if sc.drainDelay > 0 && !Eventually(2*time.Second, func() bool { return nw.readyStatus(cl, 1) == http.StatusServiceUnavailable }) {
		t.Errorf("host2's /ready did not answer 503 after TERM with --drain-delay")
	}
	hosts[1].WaitExit(sc.drainDelay+30*time.Second, "TERM")
	if time.Since(stopped) < sc.drainDelay {
		t.Errorf("host2 exited %s after TERM, before its drain delay of %s", time.Since(stopped), sc.drainDelay)
	}
	atExit := l.sent.Load()
	if !Eventually(10*time.Second, func() bool { return l.sent.Load() > atExit+2*multihostKeys }) {
		t.Fatal("the load stalled after host2 exited")
	}
	l.end()
	if len(l.failures) > 0 {
		t.Errorf("%d of %d requests failed while host2 stopped with --drain-delay %s; first: %s", len(l.failures), l.sent.Load(), sc.drainDelay, l.failures[0])
	}
	if sc.afterStop != nil {
		sc.afterStop(cl)
	}
	moved := 0
	for k, as := range l.answers {
		for _, a := range as {
			switch {
			case owners[k].Host == hostName(0) && a != owners[k]:
				t.Errorf("key %s of host1 answered by %s while host2 stopped: only host2's keys may move", k, a)
			case a.Host == hostName(1) && a != owners[k]:
				t.Errorf("key %s answered by %s, a host that did not own it", k, a)
			case a.Host == hostName(0) && a.Index != Owner(k, hostWorkers):
				t.Errorf("key %s answered by %s, not its worker on host1", k, a)
			}
		}
		if last := as[len(as)-1]; owners[k].Host == hostName(1) && last.Host == hostName(0) {
			moved++
		}
	}
	if want := countHost(owners, hostName(1)); moved != want {
		t.Errorf("%d of host2's %d keys moved to host1 once it stopped", moved, want)
	}
	t.Logf("host2 stopped under load: %d requests, %d failed, %d keys moved to host1", l.sent.Load(), len(l.failures), moved)

	// host2 returns: exactly its keys move back, under load, with no failure.
	l = startLoad(t, nw.front, 4)
	nw.startHost(1, cluster...)
	if !Eventually(30*time.Second, func() bool {
		got, err := round(cl)
		return err == nil && sameAnswers(got, owners)
	}) {
		got, err := round(cl)
		t.Fatalf("after host2's return the keys are not back where they were (err %v):\n%v\nwant\n%v", err, got, owners)
	}
	l.end()
	if len(l.failures) > 0 {
		t.Errorf("%d of %d requests failed while host2 came back; first: %s", len(l.failures), l.sent.Load(), l.failures[0])
	}
	for k, as := range l.answers {
		for _, a := range as {
			if owners[k].Host == hostName(0) && a != owners[k] {
				t.Errorf("key %s of host1 answered by %s while host2 came back", k, a)
			}
		}
	}
	if sc.afterReturn != nil {
		sc.afterReturn(cl)
	}
}

// haproxyStats is the test's own addition to contrib/haproxy/haproxy.cfg: the statistics
// page, for haproxyServerStats.
const haproxyStats = `
frontend stats
    bind ` + frontIP + `:8404
    stats enable
    stats uri /stats
`

// haproxyServerStats reads the named counters of server srv of backend olio_hosts from
// HAProxy's statistics (CSV).
func haproxyServerStats(t *testing.T, cl *http.Client, srv string, names ...string) map[string]int {
	t.Helper()
	resp, err := cl.Get("http://" + frontIP + ":8404/stats;csv")
	if err != nil {
		t.Fatalf("HAProxy's statistics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	header := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	for _, line := range lines[1:] {
		f := strings.Split(line, ",")
		if len(f) < len(header) || f[0] != "olio_hosts" || f[1] != srv {
			continue
		}
		out := map[string]int{}
		for _, name := range names {
			for i, h := range header {
				if h == name {
					out[name], _ = strconv.Atoi(f[i])
				}
			}
			if _, ok := out[name]; !ok {
				t.Fatalf("HAProxy's statistics have no %s column: %s", name, lines[0])
			}
		}
		return out
	}
	t.Fatalf("HAProxy's statistics have no server %s in olio_hosts:\n%s", srv, b)
	return nil
}

func countHost(owners map[string]hostAnswer, host string) int {
	n := 0
	for _, a := range owners {
		if a.Host == host {
			n++
		}
	}
	return n
}

// TestDrainDelay (on loopback): on TERM with --drain-delay, /ready answers 503 at once while
// requests are still served; a second TERM stops olio at once, drain delay or not.
func TestDrainDelay(t *testing.T) {
	t.Parallel()
	metrics := freeAddr(t)
	c := Start(t, "--workers", "2", "--metrics", metrics, "--drain-delay", "1h")
	ready := func() (int, string) {
		resp, err := client.Get("http://" + metrics + "/ready")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, body := ready(); code != http.StatusOK || body != "ready: 2 workers ready" {
		t.Fatalf("/ready before TERM: %d %q, want 200 \"ready: 2 workers ready\"", code, body)
	}
	c.Signal(syscall.SIGTERM)
	if !Eventually(5*time.Second, func() bool { code, _ := ready(); return code == http.StatusServiceUnavailable }) {
		code, body := ready()
		t.Fatalf("/ready after TERM with --drain-delay: %d %q, want 503", code, body)
	}
	if _, body := ready(); body != "not ready: olio is stopping" {
		t.Errorf("/ready's reason while stopping: %q", body)
	}
	for i := 0; i < 20; i++ {
		key := multihostKey(i)
		a, err := c.getKey(client, "/k", key)
		if err != nil {
			t.Fatalf("key %s during the drain delay: %v", key, err)
		}
		if a.Index != Owner(key, 2) {
			t.Errorf("key %s during the drain delay answered by worker %d, want %d", key, a.Index, Owner(key, 2))
		}
	}
	if c.hasExited() {
		t.Fatal("olio exited during its drain delay")
	}
	c.Signal(syscall.SIGTERM)
	c.WaitExit(15*time.Second, "a second TERM during the drain delay")
}

// TestReadyDuringReload (on loopback): a rolling restart keeps /ready at 200, since each
// worker's old app serves until its new one is ready, so a front keeps the host in
// rotation through a reload. The app takes half a second to start, so each new app is
// "starting" for a while.
func TestReadyDuringReload(t *testing.T) {
	t.Parallel()
	metrics := freeAddr(t)
	c := Start(t, "--workers", "2", "--metrics", metrics, "--", "/bin/sh", "-c", `sleep 0.5; exec "$0" demo`, olioBin)
	var polls, bad atomic.Int64
	var firstBad atomic.Value
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond) // pacing of the health check
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			resp, err := client.Get("http://" + metrics + "/ready")
			polls.Add(1)
			if err != nil {
				bad.Add(1)
				firstBad.CompareAndSwap(nil, err.Error())
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				bad.Add(1)
				firstBad.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b))))
			}
		}
	}()
	before := polls.Load()
	c.Signal(syscall.SIGHUP)
	c.WaitLog("rolling restart done", 30*time.Second)
	close(stop)
	waitDone(t, done, 30*time.Second, "the /ready poller to stop")
	if n := polls.Load() - before; n < 20 {
		t.Fatalf("/ready was asked %d times during the reload: the test did not test anything", n)
	}
	if n := bad.Load(); n > 0 {
		t.Errorf("/ready was not 200 in %d of %d checks during a rolling restart; first: %v", n, polls.Load(), firstBad.Load())
	}
}
