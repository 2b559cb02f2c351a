package listener

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bareMaster is a master with no workers: enough for the control protocol.
func bareMaster() *Master {
	m := &Master{
		logger:   slog.New(slog.DiscardHandler),
		addr:     &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080},
		start:    time.Now(),
		requests: make(chan *opRequest),
		killed:   make(chan struct{}),
	}
	m.life, m.endLife = context.WithCancel(context.Background())
	m.view.Store(&view{})
	return m
}

// runLoop runs m's loop on c until the test ends.
func runLoop(t *testing.T, m *Master, c *cluster) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() { defer close(stopped); m.loop(c, stop) }()
	t.Cleanup(func() { close(stop); <-stopped })
}

// loopMaster is a bareMaster whose loop runs, with no workers, until the test ends.
func loopMaster(t *testing.T) *Master {
	m := bareMaster()
	runLoop(t, m, m.bareCluster(Config{}))
	return m
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestControlRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	stopped := make(chan struct{})
	s, err := loopMaster(t).listenControl(path, func() { close(stopped) })
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %v (%v), want a socket with mode 0600", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("the directory holds %d entries, want only the socket", len(ents))
	}
	ctx := testContext(t)
	cl := NewClient(path)
	ping, err := cl.Ping(ctx)
	if err != nil || ping.PID != os.Getpid() || ping.Listen != "127.0.0.1:8080" {
		t.Errorf("Ping = %+v, %v", ping, err)
	}
	st, err := cl.Status(ctx)
	if err != nil || st.PID != os.Getpid() || len(st.Workers) != 0 {
		t.Errorf("Status = %+v, %v", st, err)
	}
	if err := cl.Reload(ctx); err != nil {
		t.Errorf("Reload: %v", err)
	}
	err = cl.Scale(ctx, -1)
	var ce *ControlError
	if !errors.Is(err, ErrConfig) || !errors.As(err, &ce) || ce.Code != 400 || !strings.Contains(err.Error(), "-1") {
		t.Errorf("Scale(-1) = %v, want a 400 wrapping ErrConfig that names the count", err)
	}
	select {
	case <-stopped:
		t.Fatal("stopped before Stop")
	default:
	}
	if err := cl.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("Stop did not call stop")
	}
	s.close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after close: %v", err)
	}
	if _, err := cl.Ping(ctx); !errors.Is(err, ErrNoControl) {
		t.Errorf("Ping after close = %v, want ErrNoControl", err)
	}
	s.close() // twice is fine
}

func TestControlRefusesPathInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	first, err := bareMaster().listenControl(path, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer first.close()
	_, err = bareMaster().listenControl(path, func() {})
	if !errors.Is(err, ErrControlInUse) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--control") {
		t.Fatalf("second listenControl = %v, want ErrControlInUse naming the path and --control", err)
	}
	if _, err := NewClient(path).Ping(testContext(t)); err != nil {
		t.Errorf("the first server stopped answering: %v", err)
	}
}

func TestControlReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a crashed olio's socket: the file stays, nobody answers
	s, err := bareMaster().listenControl(path, func() {})
	if err != nil {
		t.Fatalf("listenControl over a stale socket: %v", err)
	}
	defer s.close()
	if _, err := NewClient(path).Ping(testContext(t)); err != nil {
		t.Error(err)
	}
}

func TestControlRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	os.WriteFile(path, []byte("precious"), 0o600)
	if _, err := bareMaster().listenControl(path, func() {}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listenControl over a regular file = %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Errorf("the file was changed to %q", b)
	}
}

// A master that has handed its socket path to another (hot upgrade) leaves the new file.
func TestControlCloseKeepsAnothersSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s, err := bareMaster().listenControl(path, func() {})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	other, _, err := bindControl(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	s.close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("close removed the other master's socket: %v", err)
	}
}

func TestClientNothingAnswers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	ctx := testContext(t)
	cl := NewClient(path)
	for name, f := range map[string]func() error{
		"status": func() error { _, err := cl.Status(ctx); return err },
		"reload": func() error { return cl.Reload(ctx) },
		"scale":  func() error { return cl.Scale(ctx, 2) },
		"stop":   func() error { return cl.Stop(ctx) },
	} {
		err := f()
		if !errors.Is(err, ErrNoControl) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--control") {
			t.Errorf("%s = %v, want ErrNoControl naming %s and --control", name, err, path)
		}
	}
}

// upgradeMaster is the new master of a hot upgrade started by this process, listening on
// another port so that Ping tells the two apart.
func upgradeMaster(t *testing.T) *Master {
	m := bareMaster()
	m.addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9999}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	m.opts.UpgradeReady = w
	old := parentPID
	parentPID = os.Getpid // the "old master" below is this process
	t.Cleanup(func() { parentPID = old })
	return m
}

func TestControlHotUpgradeTakesOverWhenReady(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctl.sock")
	pidfile := filepath.Join(dir, "olio.pid")
	oldMaster := bareMaster()
	oldMaster.view.Store(&view{cfg: Config{Control: path, PIDFile: pidfile}})
	oldOps, err := oldMaster.startOps(func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer oldOps.close()

	newMaster := upgradeMaster(t)
	newMaster.view.Store(&view{cfg: Config{Control: path, PIDFile: pidfile}})
	newOps, err := newMaster.startOps(func() {})
	if err != nil {
		t.Fatalf("the new master could not start beside the old: %v", err)
	}
	defer newOps.close()
	ctx := testContext(t)
	cl := NewClient(path)
	if p, err := cl.Ping(ctx); err != nil || p.Listen != "127.0.0.1:8080" {
		t.Fatalf("before the new master is ready, %s answers %+v, %v; want the old master", path, p, err)
	}
	newMaster.opsReady()
	if p, err := cl.Ping(ctx); err != nil || p.Listen != "127.0.0.1:9999" {
		t.Fatalf("after the new master is ready, %s answers %+v, %v; want the new master", path, p, err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("taken-over socket: %v, %v; want mode 0600", fi, err)
	}
	if pid, err := ReadPIDFile(pidfile); err != nil || pid != os.Getpid() {
		t.Errorf("pidfile %d, %v", pid, err)
	}
	oldOps.close() // the old master drains and exits: it leaves the new one's socket
	if p, err := cl.Ping(ctx); err != nil || p.Listen != "127.0.0.1:9999" {
		t.Errorf("after the old master exited, %s answers %+v, %v", path, p, err)
	}
	// (Both masters are this process here, so the old one's close removes the pidfile;
	// TestPIDFileKeepsAnotherMastersFile covers two pids.)
	newOps.close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// A new master that never becomes ready leaves the control socket with the old one.
func TestControlFailedUpgradeLeavesOldSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctl.sock")
	oldMaster := bareMaster()
	oldCtl, err := oldMaster.listenControl(path, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer oldCtl.close()
	newCtl, err := upgradeMaster(t).listenControl(path, func() {})
	if err != nil {
		t.Fatal(err)
	}
	newCtl.close()
	if p, err := NewClient(path).Ping(testContext(t)); err != nil || p.Listen != "127.0.0.1:8080" {
		t.Errorf("after a failed upgrade %s answers %+v, %v; want the old master", path, p, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory holds %v, want only the old socket", ents)
	}
}

// A reload applies what it can and says, in its answer and the log, what needs a restart.
func TestReloadReportsWhatItDoesNotApply(t *testing.T) {
	m := bareMaster()
	cfg := DefaultConfig()
	cfg.Workers, m.secret = 1, "old-secret"
	next := cfg
	next.Listen, next.Secret, next.Metrics = "0.0.0.0:9999", "new-secret", "127.0.0.1:9090"
	next.ForwardTimeout = 3 * time.Second
	m.opts.Reload = func() (Config, error) { return next, nil }
	c := m.bareCluster(cfg)
	c.members, c.configured = 1, 1
	runLoop(t, m, c)
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s, err := m.listenControl(path, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	rep, err := NewClient(path).ReloadReport(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(rep.NotApplied, "\n")
	for _, want := range []string{
		`listen "127.0.0.1:8080" → "0.0.0.0:9999" needs a restart`,
		"a new secret needs a restart",
		`metrics "" → "127.0.0.1:9090" needs a restart or a hot upgrade (USR2)`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("not applied:\n%s\nwant %q", got, want)
		}
	}
	if len(rep.NotApplied) != 3 || strings.Contains(got, "secret\"") || strings.Contains(got, "new-secret") {
		t.Errorf("not applied: %q, want 3 lines and no secret", rep.NotApplied)
	}
	if cfg := m.config(); cfg.Listen != "127.0.0.1:8080" || cfg.ForwardTimeout != 3*time.Second || m.secret != "old-secret" {
		t.Errorf("after the reload: listen %s, forward timeout %s, secret changed: %v; want the old listen and secret, the new timeout",
			cfg.Listen, cfg.ForwardTimeout, m.secret != "old-secret")
	}
}

// A control path of the longest length a unix socket takes, in a directory too long for the
// detour beside it, is bound in place, with mode 0600; one byte longer is refused, saying so.
func TestBindControlLongestPath(t *testing.T) {
	for _, n := range []int{maxSocketPath, maxSocketPath + 1} {
		base := t.TempDir()
		dir := filepath.Join(base, strings.Repeat("d", n-len(base)-len("/")-len("/c")))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "c")
		ln, _, err := bindControl(path)
		if n > maxSocketPath {
			if err == nil {
				ln.Close()
				t.Errorf("a %d-byte path was bound", len(path))
			} else if !errors.Is(err, errLongPath) {
				t.Errorf("a %d-byte path: %v, want errLongPath", len(path), err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("bind a %d-byte path: %v", len(path), err)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("the socket at a %d-byte path: %v; want mode 0600", len(path), err)
		}
		ln.Close()
	}
}
