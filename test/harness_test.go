package test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/olio-dev/olio/router"
	"github.com/olio-dev/olio/test/harness"
)

// olioBin is the binary under test, built once by TestMain; exampleBin is the embedded
// example (cmd/olio-demo), a Go program that calls router.Serve; recorderBin is the app
// that records which process served each key when (test/recorder).
var olioBin, exampleBin, recorderBin string

// parallelTests is how many tests run at once by default (see TestMain).
const parallelTests = 4

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "olio-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	olioBin, exampleBin = filepath.Join(dir, "olio"), filepath.Join(dir, "olio-demo")
	recorderBin = filepath.Join(dir, "recorder")
	var flags []string
	if os.Getenv("OLIO_TEST_RACE") != "" {
		flags = append(flags, "-race") // the processes under test report data races in their output
	}
	for bin, pkg := range map[string]string{olioBin: "./cmd/olio", exampleBin: "./cmd/olio-demo", recorderBin: "./test/recorder"} {
		if err := harness.Build(context.Background(), "..", pkg, bin, flags...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	// Most of an end-to-end test is waiting (for processes to start, drains, timeouts), so
	// the independent ones (those that call t.Parallel) run several at a time, more than
	// the machine has cores, unless -parallel is given.
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		flag.Set("test.parallel", strconv.Itoa(max(parallelTests, runtime.GOMAXPROCS(0))))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// outputFile collects a process's output for assertions. It is a file rather than a
// pipe so that a process outliving the master (the new master of a hot upgrade, which
// inherits its stderr) does not keep exec.Cmd.Wait waiting.
type outputFile struct {
	f *os.File
}

func newOutputFile(t testing.TB, dir string) *outputFile {
	f, err := os.Create(filepath.Join(dir, "olio.out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &outputFile{f: f}
}

// String is everything written so far.
func (o *outputFile) String() string {
	b, _ := os.ReadFile(o.f.Name())
	return string(b)
}

// Cluster is one running `olio serve`.
type Cluster struct {
	t       testing.TB
	cmd     *exec.Cmd
	Addr    string // public host:port
	Control string // control socket path
	Secret  string
	Dir     string // the test's temp dir
	Out     *outputFile
	exited  chan struct{}
	exitErr error
	seen    map[int]bool // every descendant pid ever observed
	seenMu  sync.Mutex
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// Start runs `olio serve` with args (before any `--`) and waits until every worker is
// ready. It stops the cluster at the end of the test and checks that no process is left.
func Start(t testing.TB, args ...string) *Cluster {
	t.Helper()
	c := StartNoWait(t, args...)
	c.WaitLog("all workers ready", 30*time.Second)
	return c
}

// StartNoWait runs `olio serve` without waiting for readiness.
func StartNoWait(t testing.TB, args ...string) *Cluster {
	t.Helper()
	return startWith(t, nil, args...)
}

// StartEnv is Start with env ("NAME=value") added to the master's environment, which olio
// passes on to its apps. Tests that run in parallel give a variable to their own cluster
// this way: t.Setenv would change it for the whole test process.
func StartEnv(t testing.TB, env []string, args ...string) *Cluster {
	t.Helper()
	c := newCluster(t, freeAddr(t))
	cmd := c.command(args...)
	cmd.Env = append(os.Environ(), env...)
	c.start(cmd, nil)
	c.WaitLog("all workers ready", 30*time.Second)
	return c
}

// startWith runs `olio serve` with its stdout and stderr on out, or on c.Out when out is
// nil (then WaitLog and the data race check see them).
func startWith(t testing.TB, out *os.File, args ...string) *Cluster {
	t.Helper()
	c := newCluster(t, freeAddr(t))
	c.start(c.command(args...), out)
	return c
}

// command is the `olio serve` of c, on its address, control socket and secret, with args.
func (c *Cluster) command(args ...string) *exec.Cmd {
	full := []string{"serve", "--listen", c.Addr, "--control", c.Control, "--secret", c.Secret}
	return exec.Command(olioBin, append(full, args...)...)
}

// newCluster is a Cluster on addr, with its temp dir, control path and secret, not yet
// started (see start).
func newCluster(t testing.TB, addr string) *Cluster {
	dir := t.TempDir()
	c := &Cluster{
		t:       t,
		Addr:    addr,
		Control: filepath.Join(dir, "ctl.sock"),
		Secret:  "test-secret-" + strconv.Itoa(os.Getpid()),
		Dir:     dir,
		exited:  make(chan struct{}),
		seen:    map[int]bool{},
	}
	c.Out = newOutputFile(t, dir)
	return c
}

// start runs cmd, whose process is olio's master, with its output on out or, when out is
// nil, on c.Out; cleanup stops it at the end of the test and checks nothing is left.
func (c *Cluster) start(cmd *exec.Cmd, out *os.File) {
	c.t.Helper()
	c.cmd = cmd
	c.cmd.Stdout, c.cmd.Stderr = c.Out.f, c.Out.f
	if out != nil {
		c.cmd.Stdout, c.cmd.Stderr = out, out
	}
	c.cmd.Dir = c.Dir
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		c.exitErr = c.cmd.Wait()
		close(c.exited)
	}()
	c.t.Cleanup(c.cleanup)
}

// Pid is the master's pid.
func (c *Cluster) Pid() int { return c.cmd.Process.Pid }

// Signal sends sig to the master.
func (c *Cluster) Signal(sig syscall.Signal) {
	c.t.Helper()
	c.Descendants() // remember who was there
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Stop sends SIGTERM and waits for the master to exit, returning its exit error.
func (c *Cluster) Stop(timeout time.Duration) error {
	c.t.Helper()
	c.Descendants()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return c.exitErr
	case <-time.After(timeout):
		c.t.Fatalf("olio did not exit within %s after SIGTERM; output:\n%s", timeout, c.Out)
		return nil
	}
}

// Exited is closed when the master has exited.
func (c *Cluster) Exited() <-chan struct{} { return c.exited }

// WaitExit waits up to d for the master to exit and fails the test, saying what was
// expected (why), if it does not.
func (c *Cluster) WaitExit(d time.Duration, why string) {
	c.t.Helper()
	select {
	case <-c.exited:
	case <-time.After(d):
		c.t.Fatalf("olio still running %s after %s", d, why)
	}
}

func (c *Cluster) cleanup() {
	select {
	case <-c.exited:
	default:
		c.Descendants()
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(40 * time.Second):
			c.t.Errorf("olio did not stop within 40s of SIGTERM")
			syscall.Kill(-c.Pid(), syscall.SIGKILL)
			select {
			case <-c.exited:
			case <-time.After(20 * time.Second):
				c.t.Errorf("olio still running 20s after kill -9 of its process group")
			}
		}
	}
	// Nothing olio started may outlive it.
	c.seenMu.Lock()
	pids := make([]int, 0, len(c.seen))
	for pid := range c.seen {
		pids = append(pids, pid)
	}
	c.seenMu.Unlock()
	if !Eventually(10*time.Second, func() bool { return len(alive(pids)) == 0 }) {
		left := alive(pids)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		c.t.Errorf("processes left behind after olio exited: %v", left)
	}
	if strings.Contains(c.Out.String(), "WARNING: DATA RACE") {
		c.t.Errorf("olio reported a data race")
	}
	if c.t.Failed() {
		out := c.Out.String()
		if len(out) > 20000 {
			out = "…" + out[len(out)-20000:]
		}
		c.t.Logf("olio output:\n%s", out)
	}
}

// WaitLog waits until the output contains s.
func (c *Cluster) WaitLog(s string, timeout time.Duration) {
	c.t.Helper()
	if !Eventually(timeout, func() bool { return strings.Contains(c.Out.String(), s) || c.hasExited() }) ||
		!strings.Contains(c.Out.String(), s) {
		c.t.Fatalf("olio did not log %q within %s; output:\n%s", s, timeout, c.Out)
	}
	c.Descendants()
}

// CountLog counts the lines of output that contain s.
func (c *Cluster) CountLog(s string) int { return strings.Count(c.Out.String(), s) }

func (c *Cluster) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait) // polling interval of a condition wait, not synchronisation
	}
}

// Answer is the demo app's JSON answer.
type Answer struct {
	Index     int               `json:"index"`
	PID       int               `json:"pid"`
	Method    string            `json:"method"`
	Path      string            `json:"path"`
	Headers   map[string]string `json:"headers"`
	BodyBytes int64             `json:"body_bytes"`
}

// client is a keep-alive client for the tests, bounded in time.
var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 64},
}

// URL is the cluster's base URL.
func (c *Cluster) URL() string { return "http://" + c.Addr }

// Do sends req and decodes the demo app's answer; a non-200 status is an error that
// includes the body.
func Do(cl *http.Client, req *http.Request) (*Answer, error) {
	resp, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var a Answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("decode %q: %w", body, err)
	}
	return &a, nil
}

// getKey asks the cluster for path with X-Olio-Key: key, on cl.
func (c *Cluster) getKey(cl *http.Client, path, key string) (*Answer, error) {
	req, _ := http.NewRequest("GET", c.URL()+path, nil)
	req.Header.Set("X-Olio-Key", key)
	return Do(cl, req)
}

// Owner is the worker that must own key among n.
func Owner(key string, n int) int { return router.Owner(key, n) }

// keyOwnedBy returns a key that worker i owns among n.
func keyOwnedBy(i, n int) string {
	for k := 0; ; k++ {
		key := "owned-" + strconv.Itoa(k)
		if Owner(key, n) == i {
			return key
		}
	}
}

// lines returns the output lines that contain s.
func (c *Cluster) lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(c.Out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			out = append(out, sc.Text())
		}
	}
	return out
}
