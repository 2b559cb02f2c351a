package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The end-to-end tests of the core: routing by key, direct addressing, the secret,
// forwarding of bodies and WebSockets, concurrency, stop, and bad input.

// TestCore runs one cluster of 4 workers and checks routing against it.
func TestCore(t *testing.T) {
	t.Parallel()
	const workers = 4
	c := Start(t, "--workers", strconv.Itoa(workers))
	if n := len(c.Descendants()); n != 2*workers {
		t.Errorf("%d processes under the master, want %d (a router and an app per worker)", n, 2*workers)
	}

	t.Run("KeysStayOnTheirOwner", func(t *testing.T) {
		fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		seen := map[int]int{}
		for i := 0; i < 128; i++ {
			key := fmt.Sprintf("user-%d", i)
			want := Owner(key, workers)
			for try, cl := range []*http.Client{client, fresh, client} {
				a, err := Do(cl, keyRequest(c, "GET", key, nil))
				if err != nil {
					t.Fatalf("key %s (try %d): %v", key, try, err)
				}
				if a.Index != want {
					t.Errorf("key %s (try %d) answered by worker %d, owner is %d", key, try, a.Index, want)
				}
				seen[a.Index]++
			}
		}
		if len(seen) != workers {
			t.Errorf("answers came from workers %v, want all %d", seen, workers)
		}
	})

	t.Run("DirectIndex", func(t *testing.T) {
		for i := 0; i < workers; i++ {
			for try := 0; try < 5; try++ {
				// The key's owner is another worker: the index wins.
				key := keyOwnedBy((i+1)%workers, workers)
				req := keyRequest(c, "GET", key, nil)
				req.Header.Set("X-Olio-Index", strconv.Itoa(i))
				req.Header.Set("X-Olio-Secret", c.Secret)
				a, err := Do(client, req)
				if err != nil {
					t.Fatalf("X-Olio-Index %d: %v", i, err)
				}
				if a.Index != i {
					t.Errorf("X-Olio-Index %d answered by worker %d", i, a.Index)
				}
			}
		}
	})

	t.Run("WrongSecret", func(t *testing.T) {
		for name, secrets := range map[string][]string{
			"missing":     nil,
			"empty":       {""},
			"wrong":       {"not-" + c.Secret},
			"prefix":      {c.Secret[:len(c.Secret)-1]},
			"longer":      {c.Secret + "x"},
			"twice":       {c.Secret, c.Secret},
			"wrong first": {"nope", c.Secret},
		} {
			for _, index := range []string{"0", "3", "9", "x"} {
				req := keyRequest(c, "GET", "alice", nil)
				req.Header.Set("X-Olio-Index", index)
				for _, s := range secrets {
					req.Header.Add("X-Olio-Secret", s)
				}
				status, body, hdr := rawDo(t, req)
				if status != http.StatusForbidden {
					t.Errorf("secret %s, index %s: status %d, want 403 (body %q)", name, index, status, body)
				}
				checkErrorAnswer(t, c, body, hdr)
			}
		}
	})

	t.Run("BadIndex", func(t *testing.T) {
		for _, index := range []string{"4", "5", "99", "-1", "abc", "1x", "1.0", "", "99999999999999999999", "0x1"} {
			req := keyRequest(c, "GET", "alice", nil)
			req.Header.Set("X-Olio-Index", index)
			req.Header.Set("X-Olio-Secret", c.Secret)
			status, body, hdr := rawDo(t, req)
			if status != http.StatusBadRequest {
				t.Errorf("X-Olio-Index %q: status %d, want 400 (body %q)", index, status, body)
			}
			checkErrorAnswer(t, c, body, hdr)
		}
		// Two indexes, even good ones, are ambiguous.
		req := keyRequest(c, "GET", "alice", nil)
		req.Header.Add("X-Olio-Index", "1")
		req.Header.Add("X-Olio-Index", "2")
		req.Header.Set("X-Olio-Secret", c.Secret)
		if status, body, _ := rawDo(t, req); status != http.StatusBadRequest {
			t.Errorf("two X-Olio-Index headers: status %d, want 400 (body %q)", status, body)
		}
	})

	t.Run("AppNeverSeesOlioHeaders", func(t *testing.T) {
		// Every combination of accepting router and target, so that both the local and the
		// forwarded legs are crossed, by key and by index.
		for from := 0; from < workers; from++ {
			cl, _ := pinnedClient(t, c, from)
			for to := 0; to < workers; to++ {
				byKey := keyRequest(c, "GET", keyOwnedBy(to, workers), nil)
				byIndex := keyRequest(c, "GET", "", nil)
				byIndex.Header.Set("X-Olio-Index", strconv.Itoa(to))
				byIndex.Header.Set("X-Olio-Secret", c.Secret)
				for _, req := range []*http.Request{byKey, byIndex} {
					resp, err := cl.Do(req)
					if err != nil {
						t.Fatalf("from %d to %d: %v", from, to, err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					a, err := decodeAnswer(resp.StatusCode, body)
					if err != nil {
						t.Fatalf("from %d to %d: %v", from, to, err)
					}
					if a.Index != to {
						t.Errorf("from %d to %d: answered by %d", from, to, a.Index)
					}
					for name, v := range a.Headers {
						if http.CanonicalHeaderKey(name) == "X-Olio-Index" || http.CanonicalHeaderKey(name) == "X-Olio-Secret" || strings.Contains(v, c.Secret) {
							t.Errorf("from %d to %d: the app saw %s: %q", from, to, name, v)
						}
					}
					if a.Headers["X-Forwarded-For"] == "" {
						t.Errorf("from %d to %d: no X-Forwarded-For reached the app (headers %v)", from, to, a.Headers)
					}
					if a.Headers["X-Olio-Key"] == "" && req == byKey {
						t.Errorf("from %d to %d: the key header did not reach the app", from, to)
					}
					checkNoSecret(t, c, resp.Header, body)
				}
			}
		}
	})

	t.Run("LargeBodyForwarded", func(t *testing.T) {
		body := make([]byte, 1<<20)
		rand.Read(body)
		for try := 0; try < 10; try++ {
			from := try % workers
			to := (from + 1 + try%(workers-1)) % workers // never from
			cl, _ := pinnedClient(t, c, from)
			key := keyOwnedBy(to, workers)
			a, err := Do(cl, keyRequest(c, "POST", key, bytes.NewReader(body)))
			if err != nil {
				t.Fatalf("1 MiB POST accepted by %d for owner %d: %v", from, to, err)
			}
			if a.BodyBytes != 1<<20 || a.Index != to || a.Method != "POST" {
				t.Errorf("1 MiB POST accepted by %d for owner %d: app %d got %d bytes (%s)", from, to, a.Index, a.BodyBytes, a.Method)
			}
		}
		// Chunked, without a Content-Length, the other way round.
		cl, from := pinnedClient(t, c, -1)
		to := (from + 2) % workers
		req := keyRequest(c, "POST", keyOwnedBy(to, workers), io.MultiReader(bytes.NewReader(body[:1<<19]), bytes.NewReader(body[1<<19:])))
		req.ContentLength = -1
		a, err := Do(cl, req)
		if err != nil || a.BodyBytes != 1<<20 || a.Index != to {
			t.Errorf("chunked 1 MiB POST accepted by %d for owner %d: %+v, %v", from, to, a, err)
		}
	})

	t.Run("WebSocketForwarded", func(t *testing.T) {
		for from := 0; from < workers; from++ {
			to := (from + 1) % workers
			nc, _ := pinnedConn(t, c, from)
			d := websocket.Dialer{
				NetDialContext:   func(context.Context, string, string) (net.Conn, error) { return nc, nil },
				HandshakeTimeout: 10 * time.Second,
			}
			hdr := http.Header{"X-Olio-Key": {keyOwnedBy(to, workers)}}
			ws, resp, err := d.Dial("ws://"+c.Addr+"/ws", hdr)
			if err != nil {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Fatalf("WebSocket accepted by %d for owner %d: %v (status %d)", from, to, err, status)
			}
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			big := make([]byte, 256<<10)
			rand.Read(big)
			for i, m := range []struct {
				typ  int
				data []byte
			}{
				{websocket.TextMessage, []byte("hello " + strconv.Itoa(from))},
				{websocket.BinaryMessage, big},
				{websocket.TextMessage, []byte("")},
				{websocket.TextMessage, []byte("bye")},
			} {
				if err := ws.WriteMessage(m.typ, m.data); err != nil {
					t.Fatalf("WebSocket %d→%d: write %d: %v", from, to, i, err)
				}
				typ, got, err := ws.ReadMessage()
				if err != nil {
					t.Fatalf("WebSocket %d→%d: read %d: %v", from, to, i, err)
				}
				if typ != m.typ || !bytes.Equal(got, m.data) {
					t.Errorf("WebSocket %d→%d: message %d: echo of %d bytes (type %d) is %d bytes (type %d)", from, to, i, len(m.data), m.typ, len(got), typ)
				}
			}
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			ws.Close()
		}
	})

	t.Run("ConcurrentClients", func(t *testing.T) {
		l := StartLoad(t, c, LoadOptions{Clients: 8, Fresh: 3, Keys: 300, Prefix: "conc-", Max: 1600})
		l.ExpectOwners(workers)
		l.Wait(60 * time.Second)
		st := l.Stop()
		st.Log(t)
		st.NoFailures(t, nil)
		if st.OK < 1600 {
			t.Errorf("only %d good answers, want at least 1600", st.OK)
		}
	})

	// Nothing above may have leaked the secret into a log line.
	if strings.Contains(c.Out.String(), c.Secret) {
		t.Errorf("the secret appears in olio's output")
	}
}

// TestStopLeavesNothing stops a busy cluster with SIGTERM: it exits 0, every process it
// started is gone, and the port is free.
//
// Not in parallel: it bounds how long the stop takes.
func TestStopLeavesNothing(t *testing.T) {
	c := Start(t, "--workers", "4")
	l := StartLoad(t, c, LoadOptions{Clients: 4, Prefix: "stop-"})
	l.WaitOK(200, 20*time.Second)
	pids := c.Descendants()
	if len(pids) != 8 {
		t.Errorf("%d processes under the master, want 8: %v", len(pids), pids)
	}
	l.Stop()
	t0 := time.Now()
	if err := c.Stop(30 * time.Second); err != nil {
		t.Errorf("olio exited with %v after SIGTERM, want 0", err)
	}
	// Nothing is in flight: a graceful stop has nothing to wait for. (It used to take 5s when
	// a never-used keep-alive connection to an app held up the app's own graceful stop.)
	if d := time.Since(t0); d > 4*time.Second {
		t.Errorf("an idle cluster took %s to stop gracefully", d.Round(time.Millisecond))
	}
	if !Eventually(5*time.Second, func() bool { return len(alive(pids)) == 0 }) {
		t.Errorf("still running 5s after the master exited: %v", alive(pids))
	}
	if out := c.Out.String(); strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Errorf("a panic or goroutine dump in the output")
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		t.Errorf("port still bound after olio exited: %v", err)
	} else {
		ln.Close()
	}
}

// TestBadInput: each mistake gets one clear line, a non-zero exit, no panic, and nothing
// left running.
func TestBadInput(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	notExec := filepath.Join(dir, "app.sh")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("s3cret\n"), 0o600)
	config := func(name, content string) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(content), 0o600)
		return path
	}
	nobody := filepath.Join(dir, "nobody.sock") // no olio answers on it
	for _, tc := range []struct {
		name string
		args []string
		want string // in the one line
		cmd  bool   // args is a whole command line, not serve's flags
		env  []string
		code int // the exit code wanted; 0: any but 0
	}{
		{name: "no workers", args: []string{"--workers", "0"}, want: "--workers"},
		{name: "negative workers", args: []string{"--workers", "-3"}, want: "--workers"},
		{name: "unknown key form", args: []string{"--key", "foo:x"}, want: "foo"},
		{name: "port in use", args: []string{"--listen", busy.Addr().String()}, want: busy.Addr().String()},
		{name: "missing app", args: []string{"--", "/nonexistent/olio-test-app"}, want: "/nonexistent/olio-test-app"},
		{name: "app not in PATH", args: []string{"--", "olio-test-app-that-does-not-exist"}, want: "olio-test-app-that-does-not-exist"},
		{name: "app not executable", args: []string{"--", notExec}, want: notExec},
		// flags that do not parse: no help dump
		{name: "duration without unit", args: []string{"--forward-timeout", "10"}, want: `invalid value "10" for --forward-timeout: durations need a unit, like 10s`, code: 2},
		{name: "not a bool", args: []string{"--handoff=maybe"}, want: "--handoff=false", code: 2},
		{name: "unknown flag", args: []string{"--bogus"}, want: "unknown flag --bogus", code: 2},
		{name: "scale -1 is a step", args: []string{"scale", "--control", nobody, "-1"}, cmd: true, want: "no olio answers on the control socket " + nobody, code: 1},
		{name: "scale +x", args: []string{"scale", "--control", nobody, "+x"}, cmd: true, want: `"+x" is not a number of workers`, code: 2},
		// commands and their arguments
		{name: "unknown command", args: []string{"bogus"}, cmd: true, want: `olio: unknown command "bogus"; run olio --help`, code: 2},
		{name: "status with an argument", args: []string{"status", "extra", "--control", nobody}, cmd: true, want: `olio status: unexpected argument "extra"`, code: 2},
		{name: "reload with an argument", args: []string{"reload", "--control", nobody, "extra"}, cmd: true, want: `olio reload: unexpected argument "extra"`, code: 2},
		{name: "flag after scale's N is olio's", args: []string{"scale", "3", "--control", nobody}, cmd: true, want: "no olio answers on the control socket " + nobody, code: 1},
		{name: "second argument to scale", args: []string{"scale", "3", "4", "--control", nobody}, cmd: true, want: `unexpected argument "4" after N`, code: 2},
		{name: "status timeout 0", args: []string{"status", "--control", nobody, "--timeout", "0"}, cmd: true, want: "--timeout 0s: must be more than 0", code: 2},
		{name: "scale timeout 0", args: []string{"scale", "--control", nobody, "--timeout", "0", "2"}, cmd: true, want: "--timeout 0s: must be more than 0", code: 2},
		// the config file
		{name: "config log-format", args: []string{"--config", config("format.json", `{"log-format": "json"}`)}, want: `"log-format" can only be given as a flag`},
		{name: "config not a number", args: []string{"--config", config("two.json", `{"max-conns": "two"}`)}, want: `two.json: "max-conns": "two" is not a whole number`},
		{name: "config float", args: []string{"--config", config("float.json", `{"max-conns": 1e9}`)}, want: `"max-conns": 1e9 is not a whole number`},
		{name: "config invalid value", args: []string{"--config", config("neg.json", `{"max-conns": -1}`)}, want: "--max-conns -1 (from config file "},
		{name: "access log not writable", args: []string{"--access-log", "/nonexistent-olio-dir/access.log"}, want: `--access-log "/nonexistent-olio-dir/access.log": cannot append to it (no such file or directory)`},
		{name: "config access log not writable", args: []string{"--config", config("alog.json", `{"access-log": "/nonexistent-olio-dir/a.log"}`)}, want: "(from config file "},
		{name: "config array", args: []string{"--config", config("array.json", `["workers"]`)}, want: "array.json must be a JSON object of flag names"},
		// two secrets
		{name: "secret and secret file", args: []string{"--secret", "x", "--secret-file", secretFile}, want: "--secret and by --secret-file; give only one"},
		{name: "env secret and secret file", args: []string{"--secret-file", secretFile}, env: []string{"OLIO_SECRET=x"}, want: "$OLIO_SECRET and by --secret-file; give only one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if !tc.cmd {
				args = []string{"serve", "--workers", "2", "--control", filepath.Join(t.TempDir(), "ctl.sock")}
				if tc.name != "port in use" {
					args = append(args, "--listen", freeAddr(t))
				}
				// Flags before "--"; the case's own come last and override the defaults above.
				args = append(args, tc.args...)
			}
			mark := "OLIO_E2E_BADINPUT_" + strconv.Itoa(os.Getpid()) + "_" + strconv.Itoa(int(time.Now().UnixNano()%1e9))
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, olioBin, args...)
			cmd.Env = append(append(os.Environ(), tc.env...), "E2E_MARK="+mark)
			cmd.Dir = t.TempDir()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("olio %v did not exit within 15s; stderr:\n%s", args, stderr.String())
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
				t.Errorf("olio %v: exit %v, want a non-zero exit code", args, err)
			} else if tc.code != 0 && ee.ExitCode() != tc.code {
				t.Errorf("olio %v: exit code %d, want %d", args, ee.ExitCode(), tc.code)
			}
			out := stderr.String()
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			if len(lines) != 1 || lines[0] == "" {
				t.Errorf("olio %v: want one line on stderr, got %d:\n%s", args, len(lines), out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("olio %v: the message does not say what is wrong (%q): %s", args, tc.want, out)
			}
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Errorf("olio %v panicked:\n%s", args, out)
			}
			if stdout.Len() > 0 {
				t.Errorf("olio %v wrote to stdout: %s", args, stdout.String())
			}
			if left := processesWithEnv("E2E_MARK=" + mark); len(left) > 0 {
				for _, pid := range left {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				t.Errorf("olio %v left processes running: %v", args, left)
			}
		})
	}
}

// keyRequest is a request to the cluster with X-Olio-Key: key ("" for none).
func keyRequest(c *Cluster, method, key string, body io.Reader) *http.Request {
	req, err := http.NewRequest(method, c.URL()+"/k", body)
	if err != nil {
		panic(err)
	}
	if key != "" {
		req.Header.Set("X-Olio-Key", key)
	}
	return req
}

// rawDo sends req on a fresh keep-alive client and returns the status, body and headers.
func rawDo(t testing.TB, req *http.Request) (int, string, http.Header) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// checkErrorAnswer checks an olio refusal: a short plain-text reason, without the secret.
func checkErrorAnswer(t testing.TB, c *Cluster, body string, hdr http.Header) {
	t.Helper()
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("refusal has Content-Type %q, want text/plain", ct)
	}
	if b := strings.TrimSpace(body); b == "" || len(b) > 200 || strings.Contains(b, "\n") {
		t.Errorf("refusal body is not one short line: %q", body)
	}
	checkNoSecret(t, c, hdr, []byte(body))
}

// checkNoSecret checks that an answer does not carry the secret.
func checkNoSecret(t testing.TB, c *Cluster, hdr http.Header, body []byte) {
	t.Helper()
	if bytes.Contains(body, []byte(c.Secret)) {
		t.Errorf("an answer's body holds the secret: %q", body)
	}
	for name, vs := range hdr {
		for _, v := range vs {
			if strings.Contains(v, c.Secret) || http.CanonicalHeaderKey(name) == "X-Olio-Secret" {
				t.Errorf("an answer's header %s holds the secret", name)
			}
		}
	}
}

// decodeAnswer decodes a demo answer, or says why it is not one.
func decodeAnswer(status int, body []byte) (*Answer, error) {
	if status != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", status, strings.TrimSpace(string(body)))
	}
	var a Answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("decode %q: %w", body, err)
	}
	return &a, nil
}

// pinnedConn returns a connection to the cluster that router index accepted (any router
// for -1), and that router's index. It is closed at the end of the test.
func pinnedConn(t testing.TB, c *Cluster, index int) (net.Conn, int) {
	t.Helper()
	// Which router accepts a connection is the kernel's choice: connect until the wanted
	// one does.
	for try := 0; try < 400; try++ {
		nc, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		resp, err := probe(nc, c.Addr, 10*time.Second)
		if err != nil {
			nc.Close()
			t.Fatalf("probe: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		a, err := decodeAnswer(resp.StatusCode, body)
		if err != nil {
			nc.Close()
			t.Fatalf("probe: %v", err)
		}
		if index < 0 || a.Index == index {
			t.Cleanup(func() { nc.Close() })
			return nc, a.Index
		}
		nc.Close()
	}
	t.Fatalf("router %d accepted none of 400 connections", index)
	return nil, 0
}

// pinnedClient is an HTTP client whose requests all go over one keep-alive connection that
// router index accepted (any router for -1); it fails a request rather than reconnect.
func pinnedClient(t testing.TB, c *Cluster, index int) (*http.Client, int) {
	t.Helper()
	nc, got := pinnedConn(t, c, index)
	var once sync.Once
	tr := &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			var out net.Conn
			once.Do(func() { out = nc })
			if out == nil {
				return nil, errors.New("the pinned connection was closed")
			}
			return out, nil
		},
		MaxIdleConnsPerHost: 1,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}, got
}

// processesWithEnv returns the pids of the processes whose environment holds kv.
func processesWithEnv(kv string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, v := range bytes.Split(b, []byte{0}) {
			if string(v) == kv {
				if len(alive([]int{pid})) > 0 {
					out = append(out, pid)
				}
				break
			}
		}
	}
	return out
}
