package test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The embedded mode (olio serve --embedded): the app is a Go program that calls
// router.Serve(handler) and is itself its worker's router. The tests run the example
// program (cmd/olio-demo), which serves the same demo handler as `olio demo`.

// embeddedPIDs returns every worker's pid, asked directly, and checks that each is a
// process of its own, a direct child of the master, with no child of its own.
func embeddedPIDs(t testing.TB, c *Cluster, workers int) []int {
	t.Helper()
	pids := appPIDs(t, c, workers)
	desc := c.Descendants()
	for i, pid := range pids {
		if parentPID(pid) != c.Pid() {
			t.Errorf("worker %d (pid %d) is not a child of the master (parent %d)", i, pid, parentPID(pid))
		}
		if !slices.Contains(desc, pid) {
			t.Errorf("worker %d (pid %d) is not under the master", i, pid)
		}
	}
	if n := len(desc); n != workers {
		t.Errorf("%d processes under the master, want %d (one per worker: no app children); pids %v", n, workers, desc)
	}
	if uniq := slices.Compact(slices.Sorted(slices.Values(pids))); len(uniq) != workers {
		t.Errorf("worker pids %v are not %d distinct processes", pids, workers)
	}
	return pids
}

// TestEmbeddedCore: keys land on their owner among N processes, each the router and the
// handler at once; the secret headers work as for any app and never reach the handler;
// handoff and forwarding both serve.
func TestEmbeddedCore(t *testing.T) {
	t.Parallel()
	const workers = 3
	c := Start(t, "--workers", strconv.Itoa(workers), "--embedded", "--", exampleBin)
	pids := embeddedPIDs(t, c, workers)

	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 60; i++ {
		key := fmt.Sprintf("emb-%d", i)
		want := Owner(key, workers)
		for _, cl := range []*http.Client{client, fresh} {
			a, err := Do(cl, keyRequest(c, "GET", key, nil))
			if err != nil {
				t.Fatalf("key %s: %v", key, err)
			}
			if a.Index != want || a.PID != pids[want] {
				t.Errorf("key %s answered by worker %d (pid %d), owner is %d (pid %d)", key, a.Index, a.PID, want, pids[want])
			}
			for h := range a.Headers {
				if strings.HasPrefix(strings.ToLower(h), "x-olio-index") || strings.HasPrefix(strings.ToLower(h), "x-olio-secret") {
					t.Errorf("the handler saw header %s", h)
				}
			}
		}
	}

	// The secret headers: 200 with the right one (never passed on), 403, 400.
	req := keyRequest(c, "GET", keyOwnedBy(0, workers), nil)
	req.Header.Set("X-Olio-Index", "2")
	req.Header.Set("X-Olio-Secret", c.Secret)
	if a, err := Do(client, req); err != nil || a.Index != 2 {
		t.Errorf("X-Olio-Index 2 with the secret: %+v, %v", a, err)
	} else if _, ok := a.Headers["X-Olio-Secret"]; ok {
		t.Errorf("the handler saw X-Olio-Secret")
	}
	req = keyRequest(c, "GET", "alice", nil)
	req.Header.Set("X-Olio-Index", "1")
	req.Header.Set("X-Olio-Secret", "wrong")
	if status, body, hdr := rawDo(t, req); status != http.StatusForbidden {
		t.Errorf("wrong secret: status %d, want 403 (%q)", status, body)
	} else {
		checkErrorAnswer(t, c, body, hdr)
	}
	req = keyRequest(c, "GET", "alice", nil)
	req.Header.Set("X-Olio-Index", "3")
	req.Header.Set("X-Olio-Secret", c.Secret)
	if status, body, _ := rawDo(t, req); status != http.StatusBadRequest {
		t.Errorf("X-Olio-Index 3 of 3 workers: status %d, want 400 (%q)", status, body)
	}

	// Handoff: a connection whose first request is another worker's is passed to it,
	// and the later requests on it need no hop.
	st := opStatus(t, c)
	var handedIn, forwarded uint64
	for _, w := range st.Workers {
		handedIn += w.HandedIn
		forwarded += w.Forwarded
	}
	if handedIn == 0 {
		t.Errorf("no connection was handed off in embedded mode (status %+v)", st.Workers)
	}
	if st.Workers[0].AppPID != st.Workers[0].RouterPID {
		t.Errorf("status: worker 0's app pid %d is not its router pid %d", st.Workers[0].AppPID, st.Workers[0].RouterPID)
	}
	t.Logf("handed in %d connections, forwarded %d requests", handedIn, forwarded)
}

// TestEmbeddedForwarding: with --handoff=false every request for another worker crosses
// one yamux hop to the owner, which serves it in-process; a WebSocket works through it.
func TestEmbeddedForwarding(t *testing.T) {
	t.Parallel()
	const workers = 2
	c := Start(t, "--workers", strconv.Itoa(workers), "--embedded", "--handoff=false", "--", exampleBin)
	for i := 0; i < 40; i++ {
		key := fmt.Sprintf("fwd-%d", i)
		a, err := Do(client, keyRequest(c, "POST", key, strings.NewReader("body")))
		if err != nil {
			t.Fatalf("key %s: %v", key, err)
		}
		if want := Owner(key, workers); a.Index != want || a.BodyBytes != 4 {
			t.Errorf("key %s: worker %d, %d body bytes; want worker %d, 4 bytes", key, a.Index, a.BodyBytes, want)
		}
	}
	var forwarded, in uint64
	for _, w := range opStatus(t, c).Workers {
		forwarded += w.Forwarded
		in += w.ForwardedIn
	}
	if forwarded == 0 || in != forwarded {
		t.Errorf("forwarded %d, received %d: want the same, more than 0", forwarded, in)
	}
}

// TestEmbeddedHUP: a rolling restart under load replaces every worker process without a
// failed request, and every key stays on its owner.
func TestEmbeddedHUP(t *testing.T) {
	t.Parallel()
	const workers = 3
	c := Start(t, "--workers", strconv.Itoa(workers), "--embedded", "--", exampleBin)
	before := embeddedPIDs(t, c, workers)
	l := StartLoad(t, c, LoadOptions{Clients: 6, Prefix: "ehup-"})
	l.ExpectOwners(workers)
	l.WaitOK(100, 20*time.Second)

	start := time.Now()
	hup(t, c, 60*time.Second)
	t.Logf("rolling restart of %d embedded workers took %s", workers, time.Since(start).Round(time.Millisecond))
	l.WaitOK(100, 20*time.Second)
	st := l.Stop()
	st.Log(t)
	st.NoFailures(t, nil)
	// The replaced processes drain and exit: one process per worker again.
	var after []int
	if !Eventually(20*time.Second, func() bool { return len(c.Descendants()) == workers }) {
		t.Errorf("processes under the master after the roll: %v, want %d", c.Descendants(), workers)
	}
	after = embeddedPIDs(t, c, workers)
	for i := range after {
		if slices.Contains(before, after[i]) {
			t.Errorf("worker %d is still pid %d after the rolling restart (before %v, after %v)", i, after[i], before, after)
		}
	}
	checkOwners(t, c, l.Keys(), workers)
}

// TestEmbeddedKillWorker: kill -9 of one worker process costs only what was in flight in
// it; the master restarts it and its keys come back to it.
func TestEmbeddedKillWorker(t *testing.T) {
	t.Parallel()
	const workers, victim = 3, 1
	c := Start(t, "--workers", strconv.Itoa(workers), "--embedded", "--", exampleBin)
	old := embeddedPIDs(t, c, workers)[victim]
	l := StartLoad(t, c, LoadOptions{Clients: 6, Fresh: 2, Prefix: "ekill-"})
	l.ExpectOwners(workers)
	l.WaitOK(100, 20*time.Second)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	dead := loggedAt(t, c, fmt.Sprintf(`msg="router exited; restarting it" worker=%d router_pid=%d`, victim, old))
	if !Eventually(30*time.Second, func() bool {
		a, err := direct(c, victim)
		return err == nil && a.PID != old && a.Index == victim
	}) {
		t.Fatalf("worker %d does not answer from a new process within 30s of kill -9 %d", victim, old)
	}
	l.WaitOK(200, 20*time.Second)
	st := l.Stop()
	st.Log(t)
	st.NoFailures(t, func(r Result) bool {
		// What the killed process held: its connections, and requests forwarded to it.
		if r.ConnError() && (r.Router == victim || (r.Router < 0 && r.Start.Before(dead))) {
			return true
		}
		return r.Status == http.StatusBadGateway && r.Worker == victim && r.Start.Before(dead)
	})
	checkOwners(t, c, l.Keys(), workers)
	embeddedPIDs(t, c, workers)
}

// TestEmbeddedTTIN, TestEmbeddedTTOU: scaling an embedded cluster under load moves only the
// keys jump hash moves, loses nothing, and leaves one process per worker.
func TestEmbeddedTTIN(t *testing.T) {
	t.Parallel()
	testResize(t, 2, syscall.SIGTTIN, 3, 1, "--embedded", "--", exampleBin)
}

func TestEmbeddedTTOU(t *testing.T) {
	t.Parallel()
	testResize(t, 3, syscall.SIGTTOU, 2, 1, "--embedded", "--", exampleBin)
}

// TestEmbeddedUSR2: a hot upgrade of an embedded cluster replaces every worker process
// under load without a failed request.
func TestEmbeddedUSR2(t *testing.T) {
	t.Parallel()
	testUSR2(t, "--embedded", "--", exampleBin)
}

// TestEmbeddedKillMaster: kill -9 of the master takes every embedded worker with it and
// frees the port.
func TestEmbeddedKillMaster(t *testing.T) {
	t.Parallel()
	testKillMaster(t, 1, "--embedded", "--", exampleBin)
}

// TestEmbeddedDemoAndStop: without an APP, --embedded runs olio's own demo embedded; TERM
// stops it with exit status 0 and nothing left behind (cleanup checks the processes).
func TestEmbeddedDemoAndStop(t *testing.T) {
	t.Parallel()
	const workers = 2
	c := Start(t, "--workers", strconv.Itoa(workers), "--embedded")
	embeddedPIDs(t, c, workers)
	for _, key := range []string{"a", "b", "c", "d"} {
		if a, err := c.getKey(client, "/k", key); err != nil || a.Index != Owner(key, workers) {
			t.Errorf("key %s: %+v, %v", key, a, err)
		}
	}
	if err := c.Stop(30 * time.Second); err != nil {
		t.Errorf("olio serve --embedded exited with %v after TERM, want status 0", err)
	}
}

// TestEmbeddedNotAnEmbeddedApp: a program that never calls router.Serve is reported with
// one clear line that says what to check, and retried like any failing worker.
func TestEmbeddedNotAnEmbeddedApp(t *testing.T) {
	t.Parallel()
	c := StartNoWait(t, "--workers", "1", "--embedded", "--ready-timeout", "1s", "--", "/bin/sleep", "60")
	c.WaitLog("does /bin/sleep call router.Serve?", 20*time.Second)
	if out := c.Out.String(); strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
		t.Errorf("a stack trace or panic in the output:\n%s", out)
	}
}

// TestEmbeddedStandalone: the same binary, not started by olio, serves its handler on
// 127.0.0.1:$PORT and stops gracefully on TERM.
func TestEmbeddedStandalone(t *testing.T) {
	t.Parallel()
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	ex := startExample(t, "PORT="+port)
	cmd, exited, out := ex.cmd, ex.exited, ex.out
	addr := "127.0.0.1:" + port
	if !Eventually(20*time.Second, func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}) {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("the example does not listen on %s on its own; output:\n%s", addr, b)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("standalone answer: %v, %v", resp, err)
	}
	resp.Body.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Errorf("the standalone example exited with %v after TERM, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("the standalone example did not exit within 20s of TERM")
	}
}

// A standalone embedded service honours OLIO_LISTEN (to run behind a balancer on another
// host): here 127.0.0.2, another loopback address, rather than 127.0.0.1:$PORT; a value
// that is not host:port stops it with a message naming the variable.
func TestEmbeddedStandaloneListen(t *testing.T) {
	t.Parallel()
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	addr := "127.0.0.2:" + port
	out := startExample(t, "OLIO_LISTEN="+addr, "PORT=1").out
	cl := &http.Client{Timeout: 5 * time.Second}
	if !Eventually(20*time.Second, func() bool {
		resp, err := cl.Get("http://" + addr + "/x")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("the example does not serve on OLIO_LISTEN=%s; output:\n%s", addr, b)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // one that ignored it would serve on
	defer cancel()
	bad := exec.CommandContext(ctx, exampleBin)
	bad.Env = append(os.Environ(), "OLIO_LISTEN=8080")
	msg, err := bad.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "OLIO_LISTEN=\"8080\": want host:port") {
		t.Errorf("OLIO_LISTEN=8080: %v, output %q; want a failure that says what to write", err, msg)
	}
}

// example is the embedded example started on its own: exited has Wait's result (put it
// back after taking it: the cleanup waits on it too).
type example struct {
	cmd    *exec.Cmd
	exited chan error
	out    *os.File // its output
}

// startExample starts the embedded example on its own (not under olio) with env added to
// the environment, killed at the test's end.
func startExample(t *testing.T, env ...string) *example {
	t.Helper()
	cmd := exec.Command(exampleBin)
	cmd.Env = append(os.Environ(), env...)
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		waitDone(t, exited, 20*time.Second, "the embedded app to exit after kill -9")
		out.Close()
	})
	return &example{cmd, exited, out}
}
