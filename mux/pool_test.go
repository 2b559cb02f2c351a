package mux

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// failedDials makes p report every failed connect attempt on the returned channel.
func failedDials(p *Pool) <-chan error {
	ch := make(chan error, 1)
	p.testHookDial = func(err error) {
		if err == nil {
			return
		}
		select {
		case ch <- err:
		default:
		}
	}
	return ch
}

// waitFailedDial waits for a connect attempt to fail.
func waitFailedDial(t *testing.T, ch <-chan error) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no connect attempt failed")
	}
}

type openResult struct {
	c   net.Conn
	err error
}

func TestOpenWaitsForPeer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "late.sock")
	p := newPool(t, path)
	failed := failedDials(p)

	res := make(chan openResult, 1)
	go func() {
		c, err := p.Open(testCtx(t), 0)
		res <- openResult{c, err}
	}()
	waitFailedDial(t, failed) // Open is now waiting for the peer

	l := listen(t, path)
	echo(t, l)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()
	roundTrip(t, r.c, "late but here")
}

func TestOpenReconnectsAfterPeerRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.sock")
	p := newPool(t, path)
	ctx := testCtx(t)

	l := listen(t, path)
	echo(t, l)
	c, err := p.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "first life")
	c.Close()
	old := c.(*Stream).Session()

	l.Close()
	// The peer is gone: its session ends once the echo goroutine has closed
	// its end of the stream.
	select {
	case <-old.CloseChan():
	case <-ctx.Done():
		t.Fatal("session outlived its listener")
	}

	l2 := listen(t, path)
	echo(t, l2)
	c2, err := p.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.(*Stream).Session() == old {
		t.Fatal("Open used the dead session")
	}
	roundTrip(t, c2, "second life")
}

func TestOpenPastDeadline(t *testing.T) {
	p := newPool(t, filepath.Join(t.TempDir(), "absent.sock"))
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	start := time.Now()
	_, err := p.Open(ctx, 0)
	if !errors.Is(err, ErrPeerUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open: %v, want ErrPeerUnavailable and DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Open took %v with a deadline in the past", d)
	}
}

func TestOpenTimesOutWithCause(t *testing.T) {
	p := newPool(t, filepath.Join(t.TempDir(), "absent.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.Open(ctx, 0)
	if !errors.Is(err, ErrPeerUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open: %v, want ErrPeerUnavailable and DeadlineExceeded", err)
	}
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Open: %v, want the last dial error (ENOENT) wrapped", err)
	}
}

func TestOpenUnknownPeer(t *testing.T) {
	p := newPool(t, filepath.Join(t.TempDir(), "a.sock"))
	for _, i := range []int{-1, 1, 7} {
		_, err := p.Open(context.Background(), i)
		if !errors.Is(err, ErrUnknownPeer) || !errors.Is(err, ErrPeerUnavailable) {
			t.Fatalf("Open(%d): %v, want ErrUnknownPeer and ErrPeerUnavailable", i, err)
		}
	}
}

func TestOpenNotRetriable(t *testing.T) {
	// A path below a regular file (ENOTDIR): retrying cannot help, so Open
	// fails at once.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, filepath.Join(file, "peer.sock"))
	_, err := p.Open(testCtx(t), 0)
	if !errors.Is(err, ErrPeerUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open: %v, want ErrPeerUnavailable without waiting", err)
	}
}

func TestSetPeersClosesSessions(t *testing.T) {
	dir := t.TempDir()
	la, lb, lc := listen(t, filepath.Join(dir, "a.sock")), listen(t, filepath.Join(dir, "b.sock")), listen(t, filepath.Join(dir, "c.sock"))
	for _, l := range []*Listener{la, lb, lc} {
		echo(t, l)
	}
	a, b, c := la.Addr().String(), lb.Addr().String(), lc.Addr().String()
	p := newPool(t, a, b)
	ctx := testCtx(t)

	session := func(i int) *yamux.Session {
		t.Helper()
		c, err := p.Open(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c, "hi")
		return c.(*Stream).Session()
	}
	closed := func(s *yamux.Session) {
		t.Helper()
		select {
		case <-s.CloseChan():
		case <-ctx.Done():
			t.Fatal("session not closed")
		}
	}

	s0, s1 := session(0), session(1)
	// The stream session(0) closed counts until the echo's close arrives; an
	// idle session is what SetPeers closes at once (one with streams is left
	// for its peer to close, see retireLocked).
	idle(t, ctx, s0)
	p.SetPeers([]string{c, b}) // peer 0 moved
	closed(s0)
	if s1.IsClosed() {
		t.Fatal("SetPeers closed the session of an unchanged peer")
	}
	if g := session(1); g != s1 {
		t.Fatal("SetPeers replaced the session of an unchanged peer")
	}
	if g := session(0); g == s0 {
		t.Fatal("peer 0 still uses its old session")
	}
	if g, e := lc.accepted.Load(), int64(1); g != e {
		t.Fatalf("new path accepted %d connections, want %d", g, e)
	}

	p.SetPeers([]string{c}) // peer 1 removed
	closed(s1)
	if _, err := p.Open(ctx, 1); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Open(1) after removal: %v, want ErrUnknownPeer", err)
	}
}

func TestCloseUnblocksOpen(t *testing.T) {
	p := NewPool(nil)
	p.SetPeers([]string{filepath.Join(t.TempDir(), "absent.sock")})
	failed := failedDials(p)

	const waiters = 4
	res := make(chan error, waiters)
	for range waiters {
		go func() {
			_, err := p.Open(context.Background(), 0)
			res <- err
		}()
	}
	waitFailedDial(t, failed)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for range waiters {
		select {
		case err := <-res:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("Open: %v, want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Open still blocked after Close")
		}
	}
	if _, err := p.Open(context.Background(), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close: %v, want ErrClosed", err)
	}
}

func TestCloseClosesSessions(t *testing.T) {
	l := listen(t, "")
	echo(t, l)
	p := NewPool(nil)
	p.SetPeers([]string{l.Addr().String()})
	c, err := p.Open(testCtx(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if !c.(*Stream).Session().IsClosed() {
		t.Fatal("session open after Pool.Close")
	}
}

func TestConcurrentOpensShareOneDial(t *testing.T) {
	for _, tc := range []struct {
		name string
		late bool // the peer appears only after every Open is waiting
	}{{"present", false}, {"late", true}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "peer.sock")
			var l *Listener
			if !tc.late {
				l = listen(t, path)
			}
			p := newPool(t, path)
			failed := failedDials(p)
			ctx := testCtx(t)

			const n = 50
			var wg sync.WaitGroup
			res := make(chan openResult, n)
			start := make(chan struct{})
			for range n {
				wg.Go(func() {
					<-start
					c, err := p.Open(ctx, 0)
					res <- openResult{c, err}
				})
			}
			close(start)
			if tc.late {
				waitFailedDial(t, failed)
				l = listen(t, path)
			}
			wg.Wait()
			close(res)

			var sess *yamux.Session
			for r := range res {
				if r.err != nil {
					t.Fatal(r.err)
				}
				t.Cleanup(func() { r.c.Close() })
				s := r.c.(*Stream).Session()
				if sess == nil {
					sess = s
				} else if s != sess {
					t.Fatal("streams on different sessions")
				}
			}
			// Every stream reaches the listener over its one connection.
			for range n {
				c, err := l.Accept()
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			if g, e := l.accepted.Load(), int64(1); g != e {
				t.Fatalf("listener accepted %d connections, want %d", g, e)
			}
		})
	}
}

func TestVerifyConfig(t *testing.T) {
	bad := []*Config{
		{DialTimeout: -1},
		{RetryInterval: -1},
		{RetryInterval: time.Second},
		{Yamux: &yamux.Config{}},
		{Silence: -1},
		{Silence: DefaultKeepAliveInterval}, // an idle peer would look silent between pings
	}
	for _, c := range bad {
		if err := VerifyConfig(c); err == nil {
			t.Errorf("VerifyConfig(%+v) = nil, want an error", c)
		}
		if _, err := Listen(filepath.Join(t.TempDir(), "x.sock"), c); err == nil {
			t.Errorf("Listen with %+v succeeded", c)
		}
	}
	for _, c := range []*Config{nil, {}, DefaultConfig(), {Yamux: DefaultYamuxConfig()}} {
		if err := VerifyConfig(c); err != nil {
			t.Errorf("VerifyConfig(%+v) = %v", c, err)
		}
	}
}

// resolve fills in the defaults, keeps a Logger it is given (and gives yamux's warnings to
// it), and never leaves the Logger nil.
func TestResolveDefaults(t *testing.T) {
	r, y, err := resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.DialTimeout != DefaultDialTimeout || r.RetryInterval != DefaultRetryInterval || r.Silence != DefaultSilence || r.Logger == nil {
		t.Errorf("resolve(nil) = %+v, want the defaults and a (discarding) logger", r)
	}
	// The yamux timeouts that bound a stuck peer: a zero would mean no bound at all.
	if y.StreamOpenTimeout != 30*time.Second || y.StreamCloseTimeout != time.Minute ||
		y.KeepAliveInterval != 500*time.Millisecond || y.ConnectionWriteTimeout != 10*time.Second {
		t.Errorf("yamux timeouts %v open, %v close, %v keep-alive, %v write; want 30s, 1m, 500ms, 10s",
			y.StreamOpenTimeout, y.StreamCloseTimeout, y.KeepAliveInterval, y.ConnectionWriteTimeout)
	}

	l := slog.New(slog.DiscardHandler)
	r, y, err = resolve(&Config{Logger: l})
	if err != nil {
		t.Fatal(err)
	}
	if r.Logger != l || y.Logger == nil {
		t.Errorf("resolve with a Logger: logger kept %v, yamux logger set %v", r.Logger == l, y.Logger != nil)
	}
}

// idle waits, until ctx is done, for s to carry no stream.
func idle(t *testing.T, ctx context.Context, s *yamux.Session) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for s.NumStreams() != 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("session still carries %d streams", s.NumStreams())
		}
	}
}
