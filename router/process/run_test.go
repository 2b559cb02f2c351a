package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
)

// envTestApp makes this test binary an app child that serves HTTP on $PORT (TestMain).
const envTestApp = "ROUTER_TEST_APP"

func TestMain(m *testing.M) {
	if os.Getenv(envTestApp) != "" {
		serveTestApp()
		return
	}
	os.Exit(m.Run())
}

// serveTestApp answers "app" on 127.0.0.1:$PORT until it is stopped.
func serveTestApp() {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", os.Getenv("PORT")))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "app") }))
}

// fakeMaster is the master's end of a router's descend socket, and the public listener it
// hands the router.
type fakeMaster struct {
	conn     *descend.Conn
	ctl      *descend.Conn // the router's end
	listener *os.File
	addr     string
	msgs     chan descend.Message // what the router sends after its hello
}

func newFakeMaster(t *testing.T) *fakeMaster {
	t.Helper()
	conn, child, err := descend.Pair()
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := descend.FileConn(child)
	if err != nil {
		t.Fatal(err)
	}
	f, addr := listenerFile(t)
	t.Cleanup(func() { conn.Close() })
	return &fakeMaster{conn: conn, ctl: ctl, listener: f, addr: addr, msgs: make(chan descend.Message, 64)}
}

// start answers the router's hello with cfg and a membership of one, then collects what the
// router sends until the connection closes.
func (m *fakeMaster) start(t *testing.T, cfg *descend.Config) {
	t.Helper()
	if _, err := m.conn.Recv(); err != nil { // Hello
		t.Fatal(err)
	}
	peers := []string{filepath.Join(cfg.RunDir, "router-0.sock")}
	for _, msg := range []descend.Message{cfg, &descend.Membership{Epoch: 1, Workers: 1, Peers: peers}} {
		if err := m.conn.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		defer close(m.msgs)
		for {
			msg, err := m.conn.Recv()
			if err != nil {
				return
			}
			m.msgs <- msg
		}
	}()
}

// wait returns the first message the router sends that ok accepts.
func (m *fakeMaster) wait(t *testing.T, what string, ok func(descend.Message) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case msg, open := <-m.msgs:
			if !open {
				t.Fatalf("the router closed the connection before %s", what)
			}
			if ok(msg) {
				return
			}
		case <-deadline:
			t.Fatalf("no %s from the router in 10s", what)
		}
	}
}

func isReady(m descend.Message) bool {
	s, ok := m.(*descend.State)
	return ok && s.State == descend.StateReady
}

func isResult(id uint64) func(descend.Message) bool {
	return func(m descend.Message) bool {
		r, ok := m.(*descend.Result)
		return ok && r.ID == id
	}
}

// runRouter runs a router (embedded when h is not nil) against m until stop, then checks
// that run returned want and left no goroutine behind.
func runRouter(t *testing.T, h http.Handler, stop func(m *fakeMaster, cancel context.CancelFunc), want error) {
	ignore := []goleak.Option{goleak.IgnoreCurrent(), goleak.IgnoreTopFunction(monitor.StarterGoroutine)}
	for _, k := range []string{"OLIO_INDEX", "OLIO_WORKERS", "OLIO_SECRET", "OLIO_ADDR", "OLIO_CLUSTER_ADDR"} {
		t.Setenv(k, "") // an embedded router sets them in the process
	}
	t.Setenv("GOMAXPROCS", strconv.Itoa(runtime.GOMAXPROCS(0))) // a router sizes its scheduler without it
	t.Setenv(envTestApp, "1")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	m := newFakeMaster(t)
	dir := t.TempDir()
	cfg := &descend.Config{Key: "header:X-Olio-Key", Secret: "s3cr3t", RunDir: dir, CPU: -1,
		AccessLog: filepath.Join(dir, "access.log"), AppPath: exe, ReadyMode: ReadyPort, ReadyTimeout: 10 * time.Second, ForwardTimeout: time.Second,
		ShutdownTimeout: 5 * time.Second, HealthTimeout: time.Second, Handoff: true, KeyStats: descend.KeyStatsOn}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- run(ctx, 0, m.ctl, m.listener, slog.New(slog.DiscardHandler), h, &Embed{}) }()
	m.start(t, cfg)
	m.wait(t, "ready state", isReady)

	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodGet, "http://"+m.addr+"/", nil)
		req.Header.Set("X-Olio-Key", "k"+strconv.Itoa(i))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	client.CloseIdleConnections()
	// A request of the master that runs on a goroutine of its own.
	if err := m.conn.Send(&descend.Prepare{ID: 7, Epoch: 2, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	m.wait(t, "answer to prepare", isResult(7))

	stop(m, cancel)
	select {
	case err := <-ran:
		if !errors.Is(err, want) {
			t.Errorf("run returned %v, want %v", err, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return in 20s")
	}
	m.conn.Close()
	for range m.msgs { // until the reader has ended
	}
	goleak.VerifyNone(t, ignore...)
}

func stopByContext(_ *fakeMaster, cancel context.CancelFunc) { cancel() }

func stopByMaster(m *fakeMaster, _ context.CancelFunc) { m.conn.Close() }

// run returns only once everything it started has ended: the app's supervisor and health
// checks, the peers' side, the public side, the master's messages and requests.
func TestRunLeavesNoGoroutine(t *testing.T) {
	t.Run("app stopped by TERM", func(t *testing.T) { runRouter(t, nil, stopByContext, nil) })
	t.Run("app with the master gone", func(t *testing.T) { runRouter(t, nil, stopByMaster, ErrMasterGone) })
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "handler") })
	t.Run("embedded stopped by TERM", func(t *testing.T) { runRouter(t, h, stopByContext, nil) })
	t.Run("embedded with the master gone", func(t *testing.T) { runRouter(t, h, stopByMaster, ErrMasterGone) })
}

// A request of the master still running when the router is stopped (here a drain that
// waits idleGrace for an idle keep-alive connection) is answered before run closes the
// master's connection, and ends before run returns.
func TestRunAnswersTheMasterBeforeItReturns(t *testing.T) {
	ignore := []goleak.Option{goleak.IgnoreCurrent(), goleak.IgnoreTopFunction(monitor.StarterGoroutine)}
	for _, k := range []string{"OLIO_INDEX", "OLIO_WORKERS", "OLIO_SECRET", "OLIO_ADDR", "OLIO_CLUSTER_ADDR"} {
		t.Setenv(k, "")
	}
	m := newFakeMaster(t)
	cfg := &descend.Config{Key: "header:X-Olio-Key", Secret: "s3cr3t", RunDir: t.TempDir(), CPU: -1,
		ForwardTimeout: time.Second, ShutdownTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() {
		ran <- run(ctx, 0, m.ctl, m.listener, slog.New(slog.DiscardHandler), http.NotFoundHandler(), &Embed{})
	}()
	m.start(t, cfg)
	m.wait(t, "ready state", isReady)
	idle, err := net.Dial("tcp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := idle.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-Olio-Key: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := idle.Read(make([]byte, 1)); err != nil { // accepted and answered: tracked, now idle
		t.Fatal(err)
	}
	// The drain, then a stats request: once the stats come, the drain has begun.
	for _, msg := range []descend.Message{&descend.Drain{ID: 9}, &descend.StatsRequest{ID: 10}} {
		if err := m.conn.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	answered := false
	m.wait(t, "stats", func(msg descend.Message) bool {
		answered = answered || isResult(9)(msg)
		s, ok := msg.(*descend.Stats)
		return ok && s.ID == 10
	})
	if answered {
		t.Fatal("the drain was answered before the router stopped: the test did not test anything")
	}
	cancel()
	for msg := range m.msgs { // until the router closes the connection
		answered = answered || isResult(9)(msg)
	}
	if !answered {
		t.Error("the router closed the master's connection without answering the drain")
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return in 20s")
	}
	goleak.VerifyNone(t, ignore...)
}
