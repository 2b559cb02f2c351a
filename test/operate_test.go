package test

// Operating olio: the control socket and `olio status|reload|scale|stop`,
// Prometheus metrics, systemd notifications, the log file, the config file, fan-out and
// CPU affinity, each against a live cluster.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/olio-dev/olio/listener"
	"github.com/olio-dev/olio/router"
	"github.com/olio-dev/olio/router/process"
)

// opCLI runs an olio client command (status, reload, scale, stop) and returns its
// combined output and exit error.
func opCLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, olioBin, args...).CombinedOutput()
	return string(out), err
}

// opStatus asks the cluster for its status over the control socket.
func opStatus(t testing.TB, c *Cluster) *listener.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := listener.NewClient(c.Control).Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// opAppPIDs is every worker's app pid, by index.
func opAppPIDs(st *listener.Status) []int {
	pids := make([]int, len(st.Workers))
	for i, w := range st.Workers {
		pids[i] = w.AppPID
	}
	return pids
}

// opWaitStatus polls the status until cond holds.
func opWaitStatus(t testing.TB, c *Cluster, timeout time.Duration, what string, cond func(*listener.Status) bool) *listener.Status {
	t.Helper()
	var st *listener.Status
	if !Eventually(timeout, func() bool { st = opStatus(t, c); return cond(st) }) {
		t.Fatalf("status never showed %s; last: %+v", what, st)
	}
	return st
}

// configFile writes s to a config file in the test's temp dir, and returns its path and a
// function that rewrites it.
func configFile(t testing.TB, s string) (string, func(string)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "olio.json")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(s)
	return path, write
}

// opRequests sends n keyed requests and checks each lands on its owner among workers.
func opRequests(t testing.TB, c *Cluster, n, workers int, prefix string) {
	t.Helper()
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("%s-%d", prefix, i)
		a, err := c.getKey(client, "/k", key)
		if err != nil {
			t.Fatalf("key %s: %v", key, err)
		}
		if g, e := a.Index, Owner(key, workers); g != e {
			t.Errorf("key %s served by worker %d, owner among %d is %d", key, g, workers, e)
		}
	}
}

func TestStatusTableAndJSON(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	out, err := opCLI(t, "status", "--control", c.Control, "--json")
	if err != nil {
		t.Fatalf("olio status --json: %v\n%s", err, out)
	}
	var raw struct {
		Workers []map[string]any `json:"workers"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("olio status --json: %v in %q", err, out)
	}
	if len(raw.Workers) != 2 {
		t.Fatalf("%d workers in %s", len(raw.Workers), out)
	}
	fields := []string{"index", "router_pid", "app_pid", "state", "uptime_seconds", "restarts", "rss_bytes", "in_flight", "served", "forwarded"}
	for i, w := range raw.Workers {
		for _, f := range fields {
			if _, ok := w[f]; !ok {
				t.Errorf("worker %d has no %q: %v", i, f, w)
			}
		}
		routerPID, appPID := int(w["router_pid"].(float64)), int(w["app_pid"].(float64))
		if int(w["index"].(float64)) != i || w["state"] != "ready" {
			t.Errorf("worker %d: index %v state %v", i, w["index"], w["state"])
		}
		if g := parentPID(routerPID); g != c.Pid() {
			t.Errorf("worker %d: router pid %d has parent %d, not the master %d", i, routerPID, g, c.Pid())
		}
		if g := parentPID(appPID); g != routerPID {
			t.Errorf("worker %d: app pid %d has parent %d, not its router %d", i, appPID, g, routerPID)
		}
		if rss := w["rss_bytes"].(float64); rss < 1<<20 {
			t.Errorf("worker %d: rss_bytes %v, want the memory of two live processes", i, rss)
		}
		if up := w["uptime_seconds"].(float64); up <= 0 || up > 120 {
			t.Errorf("worker %d: uptime_seconds %v", i, up)
		}
	}

	out, err = opCLI(t, "status", "--control", c.Control)
	if err != nil {
		t.Fatalf("olio status: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], fmt.Sprintf("olio pid %d on %s: 2 workers, 2 ready", c.Pid(), c.Addr)) {
		t.Fatalf("olio status printed:\n%s", out)
	}
	header := strings.Fields(lines[2])
	if g, e := strings.Join(header, " "), "WORKER ROUTER PID APP PID STATE UPTIME RESTARTS RSS IN-FLIGHT SERVED FORWARDED"; g != e {
		t.Errorf("header %q, want %q", g, e)
	}
	st := opStatus(t, c)
	for i, line := range lines[3:5] {
		f := strings.Fields(line)
		w := st.Workers[i]
		if f[0] != strconv.Itoa(i) || f[1] != strconv.Itoa(w.RouterPID) || f[2] != strconv.Itoa(w.AppPID) || f[3] != "ready" || !strings.HasSuffix(f[7], "iB") {
			t.Errorf("row %d %q does not show worker %+v", i, line, w)
		}
	}
	if !strings.HasPrefix(lines[5], "TOTAL") {
		t.Errorf("no totals: %q", lines[5])
	}
}

func TestStatusServedAddsUp(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	const n = 60
	opRequests(t, c, n, 2, "served")
	st := opWaitStatus(t, c, 10*time.Second, fmt.Sprintf("%d served", n), func(st *listener.Status) bool {
		var served uint64
		for _, w := range st.Workers {
			served += w.Served
		}
		return served == n
	})
	var out, in uint64
	for _, w := range st.Workers {
		out += w.Forwarded
		in += w.ForwardedIn
		if w.Served == 0 {
			t.Errorf("worker %d served nothing of %d keys", w.Index, n)
		}
	}
	if out != in || out > n {
		t.Errorf("forwarded out %d, in %d: want equal, and at most %d", out, in, n)
	}
}

func TestScaleCommand(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	out, err := opCLI(t, "scale", "--control", c.Control, "5")
	if err != nil {
		t.Fatalf("olio scale 5: %v\n%s", err, out)
	}
	st := opStatus(t, c)
	if st.Members != 5 || st.Ready != 5 || len(st.Workers) != 5 {
		t.Fatalf("after scale 5: %d members, %d ready, %d workers", st.Members, st.Ready, len(st.Workers))
	}
	opRequests(t, c, 100, 5, "scaled")

	if out, err := opCLI(t, "scale", "--control", c.Control, "nine"); err == nil || !strings.Contains(out, `"nine"`) {
		t.Errorf("olio scale nine: %v, %q; want a failure naming the bad count", err, out)
	}
}

func TestReloadCommandReplacesEveryApp(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	before := opAppPIDs(opStatus(t, c))
	out, err := opCLI(t, "reload", "--control", c.Control)
	if err != nil {
		t.Fatalf("olio reload: %v\n%s", err, out)
	}
	after := opAppPIDs(opStatus(t, c))
	for i := range before {
		if after[i] == before[i] || after[i] == 0 {
			t.Errorf("worker %d: app pid %d before reload, %d after", i, before[i], after[i])
		}
	}
	if !Eventually(10*time.Second, func() bool { return len(alive(before)) == 0 }) {
		t.Errorf("old apps %v still running after the reload", alive(before))
	}
	opRequests(t, c, 20, 2, "reloaded")
}

func TestOperateStopCommandAndPidfile(t *testing.T) {
	t.Parallel()
	pidfile := filepath.Join(t.TempDir(), "olio.pid")
	c := Start(t, "--workers", "2", "--pidfile", pidfile)
	if pid, err := listener.ReadPIDFile(pidfile); err != nil || pid != c.Pid() {
		t.Fatalf("pidfile holds %d (%v), want the master's pid %d", pid, err, c.Pid())
	}
	c.Descendants()
	out, err := opCLI(t, "stop", "--control", c.Control)
	if err != nil {
		t.Fatalf("olio stop: %v\n%s", err, out)
	}
	c.WaitExit(30*time.Second, "olio stop returned")
	if c.exitErr != nil {
		t.Errorf("master exited with %v after olio stop, want 0", c.exitErr)
	}
	for _, p := range []string{pidfile, c.Control} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind after stop (%v)", p, err)
		}
	}
}

func TestOperateNothingAnswers(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nobody.sock")
	for _, args := range [][]string{
		{"status"}, {"status", "--json"}, {"reload"}, {"scale", "3"}, {"stop"},
	} {
		full := append([]string{args[0], "--control", path}, args[1:]...)
		out, err := opCLI(t, full...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("olio %s with nothing running: %v, want a non-zero exit", strings.Join(args, " "), err)
		}
		if !strings.Contains(out, path) || !strings.Contains(out, "--control") {
			t.Errorf("olio %s: %q does not name %s and --control", strings.Join(args, " "), out, path)
		}
	}
}

func TestOperateControlInUse(t *testing.T) {
	t.Parallel()
	first := Start(t, "--workers", "1")
	second := StartNoWait(t, "--workers", "1", "--control", first.Control)
	select {
	case <-second.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("a second olio on the same control socket kept running")
	}
	if second.exitErr == nil {
		t.Error("the second olio exited 0")
	}
	if out := second.Out.String(); !strings.Contains(out, first.Control) || !strings.Contains(out, "--control") {
		t.Errorf("the second olio's error does not name %s and --control:\n%s", first.Control, out)
	}
	if st := opStatus(t, first); st.PID != first.Pid() {
		t.Errorf("the control socket now answers for pid %d, want %d", st.PID, first.Pid())
	}
}

// opScrape fetches and parses the metrics.
func opScrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	return mfs
}

// opSum adds a family's values across workers.
func opSum(mf *dto.MetricFamily) float64 {
	var s float64
	for _, m := range mf.GetMetric() {
		switch {
		case m.Counter != nil:
			s += m.Counter.GetValue()
		case m.Gauge != nil:
			s += m.Gauge.GetValue()
		case m.Histogram != nil:
			s += float64(m.Histogram.GetSampleCount())
		}
	}
	return s
}

func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	maddr := freeAddr(t)
	c := Start(t, "--workers", "2", "--metrics", maddr)
	before := opScrape(t, maddr)
	for name := range before {
		if !strings.HasPrefix(name, "olio_") {
			t.Errorf("series %s is not named olio_…", name)
		}
	}
	perWorker := []string{
		"olio_requests_served_total", "olio_requests_forwarded_out_total", "olio_requests_forwarded_in_total",
		"olio_requests_in_flight", "olio_request_duration_seconds", "olio_restarts_total", "olio_resident_memory_bytes",
	}
	for _, name := range perWorker {
		mf := before[name]
		if mf == nil || len(mf.Metric) != 2 {
			t.Errorf("%s: %v, want one series per worker", name, mf)
			continue
		}
		for i, m := range mf.Metric {
			if l := m.GetLabel(); len(l) != 1 || l[0].GetName() != "worker" || l[0].GetValue() != strconv.Itoa(i) {
				t.Errorf("%s series %d has labels %v, want worker=%d", name, i, l, i)
			}
		}
	}
	for name, want := range map[string]float64{"olio_workers": 2, "olio_workers_ready": 2, "olio_membership_epoch": 1} {
		if mf := before[name]; mf == nil || opSum(mf) != want {
			t.Errorf("%s = %v, want %v", name, mf, want)
		}
	}
	if rss := before["olio_resident_memory_bytes"]; rss != nil && opSum(rss) < 2<<20 {
		t.Errorf("olio_resident_memory_bytes sums to %v", opSum(rss))
	}

	const n = 40
	opRequests(t, c, n, 2, "metrics")
	var after map[string]*dto.MetricFamily
	if !Eventually(10*time.Second, func() bool {
		after = opScrape(t, maddr)
		return opSum(after["olio_requests_served_total"])-opSum(before["olio_requests_served_total"]) == n
	}) {
		t.Fatalf("served rose from %v to %v after %d requests", opSum(before["olio_requests_served_total"]), opSum(after["olio_requests_served_total"]), n)
	}
	if g := opSum(after["olio_request_duration_seconds"]) - opSum(before["olio_request_duration_seconds"]); g != n {
		t.Errorf("the duration histograms counted %v more requests, want %d", g, n)
	}
	fout, fin := opSum(after["olio_requests_forwarded_out_total"]), opSum(after["olio_requests_forwarded_in_total"])
	if fout != fin || fout > n {
		t.Errorf("forwarded out %v, in %v: want equal, and at most %d", fout, fin, n)
	}
}

func TestNotifySystemd(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:n])
		}
	}()
	// waitFor reads notifications until one holds the assignment want.
	waitFor := func(want string) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case msg, ok := <-got:
				if !ok {
					t.Fatalf("notify socket closed before %s", want)
				}
				if slices.Contains(strings.Split(msg, "\n"), want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s on NOTIFY_SOCKET", want)
			}
		}
	}
	c := StartEnv(t, []string{"NOTIFY_SOCKET=" + path}, "--workers", "2")
	waitFor("READY=1")
	for _, pid := range c.Descendants() {
		if env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ"); bytes.Contains(env, []byte("NOTIFY_SOCKET="+path)) {
			t.Errorf("pid %d (a router or app) inherited the master's NOTIFY_SOCKET", pid)
		}
	}
	if out, err := opCLI(t, "reload", "--control", c.Control); err != nil {
		t.Fatalf("olio reload: %v\n%s", err, out)
	}
	waitFor("RELOADING=1")
	waitFor("READY=1")
	if err := c.Stop(60 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	waitFor("STOPPING=1")
}

func TestLogFileReopenedOnUSR1(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "olio.log")
	c := StartNoWait(t, "--workers", "2", "--log-file", logPath)
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	if !Eventually(30*time.Second, func() bool { return strings.Contains(read(logPath), "all workers ready") }) {
		t.Fatalf("the log file never said the workers were ready:\n%s\nstderr:\n%s", read(logPath), c.Out)
	}
	if !strings.Contains(read(logPath), `worker=1`) || !strings.Contains(read(logPath), "stream=std") {
		t.Errorf("app output is not in the log file with its worker index:\n%s", read(logPath))
	}
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	c.Signal(syscall.SIGUSR1)
	if !Eventually(10*time.Second, func() bool { return strings.Contains(read(logPath), "log file reopened") }) {
		t.Fatalf("no new log file after USR1; the rotated one ends:\n%s", read(rotated))
	}
	if out, err := opCLI(t, "reload", "--control", c.Control); err != nil {
		t.Fatalf("olio reload: %v\n%s", err, out)
	}
	if !Eventually(10*time.Second, func() bool { return strings.Contains(read(logPath), "rolling restart done") }) {
		t.Errorf("the reload was not logged to the new file:\n%s", read(logPath))
	}
	if strings.Contains(read(rotated), "rolling restart done") {
		t.Error("olio still writes to the rotated file")
	}
	for _, p := range []string{logPath, rotated} {
		if strings.Contains(read(p), c.Secret) {
			t.Errorf("%s holds the secret", p)
		}
	}
	if strings.Contains(c.Out.String(), "level=") {
		t.Errorf("log lines went to stderr despite --log-file:\n%s", c.Out)
	}
}

func TestConfigFileOnHUP(t *testing.T) {
	t.Parallel()
	cfgPath, write := configFile(t, `{"workers": 2, "forward-timeout": "5s"}`)
	c := Start(t, "--config", cfgPath)
	st := opStatus(t, c)
	if st.Members != 2 {
		t.Fatalf("config file says 2 workers, status shows %d", st.Members)
	}
	before := opAppPIDs(st)

	// A bad file on HUP is reported and the running config kept: same workers, same apps.
	write(`{"workers": 3, "forward-timeout": `)
	c.Signal(syscall.SIGHUP)
	c.WaitLog("keeping the running configuration", 20*time.Second)
	st = opStatus(t, c)
	if st.Members != 2 || !slices.Equal(opAppPIDs(st), before) {
		t.Fatalf("after a bad config: %d members, apps %v (were %v)", st.Members, opAppPIDs(st), before)
	}
	opRequests(t, c, 20, 2, "badconfig")

	// A good one is applied: the worker count follows, then every app is replaced.
	write(`{"workers": 3, "forward-timeout": "5s"}`)
	c.Signal(syscall.SIGHUP)
	c.WaitLog("rolling restart done", 60*time.Second)
	st = opWaitStatus(t, c, 20*time.Second, "3 ready members", func(st *listener.Status) bool {
		return st.Members == 3 && st.Ready == 3
	})
	for i, pid := range opAppPIDs(st)[:2] {
		if pid == before[i] {
			t.Errorf("worker %d kept app %d through the reload", i, pid)
		}
	}
	opRequests(t, c, 60, 3, "goodconfig")
}

// A reload whose new app does not start must not leave half the new configuration
// running: the worker count and the app come back, and every app restarted onto the new
// command is restarted onto the old one.
func TestReloadThatFailsGoesBack(t *testing.T) {
	t.Parallel()
	cfgPath, write := configFile(t, `{"workers": 2}`)
	c := Start(t, "--config", cfgPath)
	before := opAppPIDs(opStatus(t, c))

	// oldApp checks that every worker is ready, runs the demo app as olio started it (not
	// a new command) and answers for its keys.
	oldApp := func(what string) *listener.Status {
		t.Helper()
		st := opWaitStatus(t, c, 30*time.Second, "2 ready members", func(st *listener.Status) bool {
			return st.Members == 2 && st.Ready == 2 && len(st.Workers) == 2
		})
		for _, w := range st.Workers {
			cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(w.AppPID) + "/cmdline")
			env, _ := os.ReadFile("/proc/" + strconv.Itoa(w.AppPID) + "/environ")
			if g, e := string(cmdline), olioBin+"\x00demo\x00"; g != e || bytes.Contains(env, []byte("OLIO_TEST_NEW_APP=1")) {
				t.Errorf("%s: worker %d runs app %d %q (new app's marker in its environment: %v), want the old one, %q",
					what, w.Index, w.AppPID, cmdline, bytes.Contains(env, []byte("OLIO_TEST_NEW_APP=1")), e)
			}
			if w.State != "ready" || w.CrashLooping {
				t.Errorf("%s: worker %d is %s (crash-looping: %v)", what, w.Index, w.State, w.CrashLooping)
			}
		}
		opRequests(t, c, 30, 2, what)
		return st
	}

	// One worker fewer and an app that exits at once: the roll fails on worker 0.
	write(`{"workers": 1, "app": ["/bin/false"]}`)
	out, err := opCLI(t, "reload", "--control", c.Control)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("olio reload to an app that exits at once: %v, want a non-zero exit\n%s", err, out)
	}
	// Progress lines (a worker each: the scale to 1, then back to 2), then one line.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	progress := regexp.MustCompile(`^(restart|start|stop|rollback): worker \d+ .*, \d+/\d+ \(.*\)$`)
	for _, l := range lines[:len(lines)-1] {
		if !progress.MatchString(l) {
			t.Errorf("olio reload printed %q before its outcome; want progress lines only", l)
		}
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "previous configuration is back in place") {
		t.Errorf("olio reload printed %q, want its last line saying the previous configuration is back", out)
	}
	c.WaitLog("reload failed; the previous configuration is back in place", 10*time.Second)
	st := oldApp("after the failed reload")
	if st.Workers[0].AppPID != before[0] {
		t.Errorf("worker 0's app changed from %d to %d, though its new app never became ready", before[0], st.Workers[0].AppPID)
	}
	// A crash now restarts the old app, not /bin/false.
	if err := syscall.Kill(st.Workers[0].AppPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	opWaitStatus(t, c, 30*time.Second, "worker 0 on a new app", func(st *listener.Status) bool {
		return st.Workers[0].AppPID != before[0] && st.Workers[0].State == "ready"
	})
	oldApp("after worker 0's app crashed")

	// One worker more and an app that exits at once: the new worker never becomes ready;
	// that is known at its app's first exit, not after a timeout.
	write(`{"workers": 3, "app": ["/bin/false"]}`)
	start := time.Now()
	out, err = opCLI(t, "reload", "--control", c.Control, "--timeout", "30s")
	if err == nil || !strings.Contains(out, "previous configuration is back in place") {
		t.Fatalf("olio reload to 3 workers of an app that exits at once: %v, %q; want a failure saying the previous configuration is back", err, out)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the failed reload took %s", took)
	}
	oldApp("after the failed reload to 3 workers")

	// An app that starts on worker 0 but not on worker 1: worker 0, already on the new
	// app, goes back to the old one.
	write(fmt.Sprintf(`{"workers": 2, "app": ["/bin/sh", "-c", "[ \"$OLIO_INDEX\" = 0 ] && exec env OLIO_TEST_NEW_APP=1 %s demo; exit 1"]}`, olioBin))
	out, err = opCLI(t, "reload", "--control", c.Control)
	if err == nil || !strings.Contains(out, "previous configuration is back in place") {
		t.Fatalf("olio reload to an app that fails on worker 1: %v, %q; want a failure saying the previous configuration is back", err, out)
	}
	if !regexp.MustCompile(`(?m)^rollback: worker 0 back on the previous app, 1/1 \(app pid \d+, .*\)$`).MatchString(out) {
		t.Errorf("olio reload printed %q, want worker 0's rollback in its progress", out)
	}
	if len(c.lines("worker back on the previous app")) != 1 {
		t.Errorf("want worker 0 restarted back onto the old app once; the log says:\n%s", strings.Join(c.lines("reload"), "\n"))
	}
	oldApp("after the second failed reload")

	// The old configuration still reloads.
	write(`{"workers": 2}`)
	if out, err := opCLI(t, "reload", "--control", c.Control); err != nil {
		t.Fatalf("olio reload back to the first config: %v\n%s", err, out)
	}
	oldApp("after a good reload")
}

func TestFanoutEveryWorker(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "3")
	req, _ := http.NewRequest("POST", c.URL()+"/broadcast?x=1", strings.NewReader("hello"))
	req.Header.Set(router.HeaderIndex, process.FanoutIndex)
	req.Header.Set(router.HeaderSecret, c.Secret)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("fan-out: %d %s", resp.StatusCode, body)
	}
	var answers []process.FanoutAnswer
	if err := json.Unmarshal(body, &answers); err != nil {
		t.Fatalf("fan-out answer %q: %v", body, err)
	}
	if len(answers) != 3 {
		t.Fatalf("%d answers, want 3: %s", len(answers), body)
	}
	st := opStatus(t, c)
	for i, a := range answers {
		var app Answer
		if err := json.Unmarshal([]byte(a.Body), &app); err != nil {
			t.Fatalf("answer %d: %v in %q", i, err, a.Body)
		}
		if a.Index != i || a.Status != 200 || app.Index != i || app.PID != st.Workers[i].AppPID || app.BodyBytes != 5 || app.Method != "POST" {
			t.Errorf("answer %d: %+v from app %+v", i, a, app)
		}
		if _, ok := app.Headers[router.HeaderSecret]; ok {
			t.Errorf("app %d saw the secret header", i)
		}
	}
	if bytes.Contains(body, []byte(c.Secret)) {
		t.Error("the fan-out answer holds the secret")
	}

	req, _ = http.NewRequest("GET", c.URL()+"/", nil)
	req.Header.Set(router.HeaderIndex, process.FanoutIndex)
	req.Header.Set(router.HeaderSecret, "wrong")
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("fan-out with a wrong secret: %v %v, want 403", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
}

// cpusAllowed is the Cpus_allowed_list of pid, e.g. "1".
func cpusAllowed(t testing.TB, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Cpus_allowed_list:\s*(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no Cpus_allowed_list for pid %d", pid)
	}
	return string(m[1])
}

func TestOperateCPUAffinity(t *testing.T) {
	t.Parallel()
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Skip("sched_getaffinity:", err)
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < allowed.Count(); i++ {
		if allowed.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	c := Start(t, "--workers", "2", "--cpu-affinity")
	st := opStatus(t, c)
	for i, w := range st.Workers {
		want := strconv.Itoa(cpus[i%len(cpus)])
		if g := cpusAllowed(t, w.RouterPID); g != want {
			t.Errorf("worker %d: router on CPUs %s, want %s", i, g, want)
		}
		if g := cpusAllowed(t, w.AppPID); g != want {
			t.Errorf("worker %d: app on CPUs %s, want %s", i, g, want)
		}
	}
	if g := cpusAllowed(t, c.Pid()); g == cpusAllowed(t, st.Workers[0].RouterPID) && len(cpus) > 1 {
		t.Errorf("the master is pinned too (%s); only workers are", g)
	}
}

// TestReloadSaysWhatItDoesNotApply: a reload whose config file changes a setting that only a
// restart applies (here the metrics address; the harness gives --listen as a flag, which
// wins over the file) says so, and olio goes on as it was.
func TestReloadSaysWhatItDoesNotApply(t *testing.T) {
	t.Parallel()
	cfgPath, write := configFile(t, `{"workers": 1}`)
	c := Start(t, "--config", cfgPath)
	metrics := freeAddr(t)
	write(`{"workers": 1, "metrics": "` + metrics + `"}`)
	out, err := opCLI(t, "reload", "--control", c.Control)
	if err != nil {
		t.Fatalf("olio reload: %v\n%s", err, out)
	}
	if !strings.Contains(out, "not applied") || !strings.Contains(out, "metrics") {
		t.Errorf("olio reload says nothing of the metrics address it did not apply:\n%s", out)
	}
	if _, err := c.getKey(client, "/k", "still-here"); err != nil {
		t.Errorf("after the reload, %s: %v", c.Addr, err)
	}
}

// TestReloadKeepsScaledCount: a reload keeps the worker count set by olio scale (or TTIN,
// TTOU) unless the configuration changes the count itself.
func TestReloadKeepsScaledCount(t *testing.T) {
	t.Parallel()
	cfgPath, write := configFile(t, `{"workers": 2}`)
	c := Start(t, "--config", cfgPath)
	if out, err := opCLI(t, "scale", "--control", c.Control, "3"); err != nil {
		t.Fatalf("olio scale 3: %v\n%s", err, out)
	}
	if out, err := opCLI(t, "reload", "--control", c.Control); err != nil {
		t.Fatalf("olio reload: %v\n%s", err, out)
	}
	if n := len(opStatus(t, c).Workers); n != 3 {
		t.Errorf("%d workers after scale 3 and a reload that does not change the count, want 3", n)
	}
	opRequests(t, c, 20, 3, "kept")
	// A configuration that changes the count wins.
	write(`{"workers": 1}`)
	if out, err := opCLI(t, "reload", "--control", c.Control); err != nil {
		t.Fatalf("olio reload: %v\n%s", err, out)
	}
	if n := len(opStatus(t, c).Workers); n != 1 {
		t.Errorf("%d workers after a reload to {\"workers\": 1}, want 1", n)
	}
}

// TestStopDuringReload: a stop does not wait for a reload in progress (here one whose new
// app never gets ready, so the roll would last the whole --ready-timeout): the reload gives
// way and the stop takes about --shutdown-timeout.
func TestStopDuringReload(t *testing.T) {
	t.Parallel()
	cfgPath, write := configFile(t, `{"workers": 2}`)
	c := Start(t, "--config", cfgPath, "--ready-timeout", "60s", "--shutdown-timeout", "2s")
	write(`{"workers": 2, "app": ["/bin/sh", "-c", "exec sleep 1000"]}`)
	reloaded := make(chan string, 1)
	go func() {
		out, err := opCLI(t, "reload", "--control", c.Control)
		reloaded <- fmt.Sprintf("%v: %s", err, out)
	}()
	c.WaitLog("rolling restart", 20*time.Second)
	c.Signal(syscall.SIGTERM)
	c.WaitExit(20*time.Second, "SIGTERM during a reload (--shutdown-timeout 2s)")
	var out string
	select {
	case out = <-reloaded:
	case <-time.After(60 * time.Second):
		t.Fatalf("olio reload still running 60s after the stop that interrupted it")
	}
	if !strings.Contains(out, "stopping") {
		t.Errorf("olio reload, interrupted by the stop, said: %s", out)
	}
}
