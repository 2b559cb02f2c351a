package monitor

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startSh starts /bin/sh -c script with the OS starter; its stdout is
// returned as a reader (the write end belongs to the child alone).
func startSh(t *testing.T, script string) (*Child, *bufio.Reader, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(OS, &Command{Name: "sh", Path: "/bin/sh", Args: []string{"-c", script}, Stdout: w})
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop(0)
		r.Close()
	})
	if err := r.SetReadDeadline(time.Now().Add(deadline)); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(r), r
}

func readLine(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading child's output: %v", err)
	}
	return strings.TrimSpace(line)
}

// waitGone waits until process pid has terminated (zombie or reaped).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return
	}
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(deadline/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("pid %d still running", pid)
		}
		return
	}
}

func signalOf(t *testing.T, err error) syscall.Signal {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("exit error %v is not an *exec.ExitError", err)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() {
		t.Fatalf("exit %v: not killed by a signal", err)
	}
	return ws.Signal()
}

func TestOSStopEscalatesToKill(t *testing.T) {
	c, br, _ := startSh(t, `trap "" TERM; echo trapped; exec sleep 1000`)
	readLine(t, br) // TERM is ignored from now on
	start := time.Now()
	if err := c.Stop(200 * time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("Stop returned after %v, before the grace period", d)
	}
	if sig := signalOf(t, c.Err()); sig != syscall.SIGKILL {
		t.Fatalf("killed by %v, want SIGKILL", sig)
	}
	if err := c.Stop(time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestOSStopGraceful(t *testing.T) {
	c, _, _ := startSh(t, `exec sleep 1000`)
	if err := c.Stop(deadline); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if sig := signalOf(t, c.Err()); sig != syscall.SIGTERM {
		t.Fatalf("killed by %v, want SIGTERM", sig)
	}
}

func TestOSSignalReachesGroup(t *testing.T) {
	// The shell survives TERM (a trap handler); the background sleep has the
	// default action and dies, so only a signal to the group reaches it. The
	// sleep prints its own pid from a fresh shell, after exec has reset the
	// trap, so TERM cannot come while it is still a copy of the trapping one.
	c, br, _ := startSh(t, `trap : TERM; sh -c 'echo $$; exec sleep 1000' & while :; do sleep 1; done`)
	grandchild, err := strconv.Atoi(readLine(t, br))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	waitGone(t, grandchild)
	select {
	case <-c.Done():
		t.Fatalf("the shell exited (%v); it traps TERM", c.Err())
	default:
	}
}

func TestOSExitKillsGroup(t *testing.T) {
	// The shell exits at once, leaving a sleep that holds stdout open: the
	// read ends only when the orphan has been killed.
	c, br, _ := startSh(t, `sleep 1000 & echo $!`)
	grandchild, err := strconv.Atoi(readLine(t, br))
	if err != nil {
		t.Fatal(err)
	}
	waitExited(t, c)
	if c.Err() != nil {
		t.Fatalf("Err = %v, want nil (exit 0)", c.Err())
	}
	waitGone(t, grandchild)
	if err := c.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Signal after exit = %v, want os.ErrProcessDone", err)
	}
}

func TestOSDeathSig(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "OLIO_MONITOR_HELPER=deathsig", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	waitGone(t, pid) // killed by Pdeathsig when the helper exited
}

func TestOSStartMissing(t *testing.T) {
	cmd := &Command{Name: "missing", Path: filepath.Join(t.TempDir(), "nope")}
	if err := Check(cmd); !errors.Is(err, ErrStart) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Check = %v, want ErrStart and ErrNotExist", err)
	}
	if _, err := Start(nil, cmd); !errors.Is(err, ErrStart) {
		t.Fatalf("Start = %v, want ErrStart", err)
	}
	if err := Check(&Command{Path: "/bin/sh", Dir: "/nonexistent-dir"}); !errors.Is(err, ErrStart) {
		t.Fatalf("Check with a missing dir = %v, want ErrStart", err)
	}
	if err := Check(&Command{Path: "/bin/sh"}); err != nil {
		t.Fatalf("Check(/bin/sh) = %v", err)
	}
	if err := Check(&Command{Path: "sh"}); err != nil {
		t.Fatalf("Check(sh) = %v", err)
	}
}

func TestWaitDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, _, _ := startSh(t, `exec sleep 1000`)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := WaitDial(ctx, "tcp", ln.Addr().String(), c); err != nil {
		t.Fatalf("WaitDial: %v", err)
	}
}

func TestWaitDialLateListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- WaitDial(ctx, "tcp", addr, nil) }()
	ln, err = net.Listen("tcp", addr) // before or after the first attempt: either works
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	defer ln.Close()
	if err := waitErr(t, done); err != nil {
		t.Fatalf("WaitDial: %v", err)
	}
}

func TestWaitDialChildExits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, _, _ := startSh(t, `exit 3`)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	err = WaitDial(ctx, "tcp", addr, c)
	var ee *exec.ExitError
	if !errors.Is(err, ErrExited) || !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("WaitDial = %v, want ErrExited with status 3", err)
	}
}

func TestWaitDialContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := WaitDial(ctx, "tcp", addr, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitDial = %v, want DeadlineExceeded", err)
	}
}

func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenNotify(path); err == nil {
		t.Fatal("ListenNotify replaced a regular file")
	}
	os.Remove(path)
	n, err := ListenNotify(path)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Path() != path {
		t.Fatalf("Path = %q", n.Path())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("mode = %v, want socket 0600", fi.Mode())
	}

	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func(msg string) {
		t.Helper()
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	send("STATUS=loading\n")
	send("MAINPID=42\nREADY=1\nSTATUS=serving\n")
	select {
	case <-n.Ready():
	case <-time.After(deadline):
		t.Fatal("READY=1 not seen")
	}
	send("READY=1\n") // later ones are drained
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := n.Wait(ctx, nil); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}
}

func TestNotifyNotReady(t *testing.T) {
	dir := t.TempDir()
	n, err := ListenNotify(filepath.Join(dir, "n.sock"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.Path(), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("STATUS=starting\nREADY=0\n"))
	conn.Close()
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{"READY=1", true},
		{"READY=1\n", true},
		{"STATUS=x\nREADY=1\nMAINPID=3\n", true},
		{"READY=0\n", false},
		{"READY=10\nXREADY=1\n", false},
		{"STATUS=READY=1\n", false},
		{"", false},
	} {
		if got := hasReady([]byte(tc.msg)); got != tc.want {
			t.Errorf("hasReady(%q) = %v, want %v", tc.msg, got, tc.want)
		}
	}

	// A child that exits before READY=1.
	c, _, _ := startSh(t, `exit 0`)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := n.Wait(ctx, c); !errors.Is(err, ErrExited) {
		t.Fatalf("Wait = %v, want ErrExited", err)
	}
	// A context already done.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if err := n.Wait(done, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want Canceled", err)
	}
	n.Close()
	if err := n.Wait(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close = %v, want ErrClosed", err)
	}
	// A stale socket file is replaced.
	n2, err := ListenNotify(filepath.Join(dir, "n.sock"))
	if err != nil {
		t.Fatal(err)
	}
	n2.Close()
}

func TestRSS(t *testing.T) {
	rss, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss == 0 {
		t.Fatal("RSS = 0")
	}
	if _, err := RSS(-1); err == nil {
		t.Fatal("RSS(-1) succeeded")
	}
}

// A real child under a Supervisor: ready by WaitDial, replaced, stopped.
func TestSupervisorOS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ready := make(chan int, 4)
	s := &Supervisor{
		Name: "sleep",
		Command: func() (*Command, error) {
			return &Command{Name: "sleep", Path: "/bin/sleep", Args: []string{"1000"}}, nil
		},
		Ready:       func(ctx context.Context, c *Child) error { return WaitDial(ctx, "tcp", ln.Addr().String(), c) },
		StopTimeout: deadline,
		OnReady:     func(c *Child) { ready <- c.Pid() },
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	first := <-ready
	if err := s.Restart(context.Background()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	second := <-ready
	if second == first {
		t.Fatal("Restart kept the pid")
	}
	waitGone(t, first)
	cancel()
	if err := waitErr(t, runErr); err != nil {
		t.Fatalf("Run: %v", err)
	}
	waitGone(t, second)
	if st := s.Status(); st.State != StateStopped || st.Restarts != 0 {
		t.Fatalf("status = %+v", st)
	}
}

// waitExited waits for c to exit, up to deadline.
func waitExited(t *testing.T, c *Child) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(deadline):
		t.Fatal("shell did not exit")
	}
}

// flushRecorder is an output writer with a Flush method, like the router's line logger.
type flushRecorder struct {
	mu      sync.Mutex
	written []byte
	flushed []byte // what had been written when Flush was called
}

func (f *flushRecorder) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.written = append(f.written, p...)
	return len(p), nil
}

func (f *flushRecorder) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushed = append([]byte(nil), f.written...)
}

func TestOSFlushesOutputAfterExit(t *testing.T) {
	out, errOut := &flushRecorder{}, &flushRecorder{}
	c, err := Start(OS, &Command{Name: "sh", Path: "/bin/sh", Args: []string{"-c", `printf 'last words'; printf 'no newline' >&2`},
		Stdout: out, Stderr: errOut})
	if err != nil {
		t.Fatal(err)
	}
	waitExited(t, c)
	for _, f := range []struct {
		name string
		rec  *flushRecorder
		want string
	}{{"stdout", out, "last words"}, {"stderr", errOut, "no newline"}} {
		f.rec.mu.Lock()
		if string(f.rec.flushed) != f.want {
			t.Errorf("%s: flushed after %q, want Flush once all of %q was copied", f.name, f.rec.flushed, f.want)
		}
		f.rec.mu.Unlock()
	}
}
