package mux

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// testSilence is the Silence of the pools in these tests, with pings every tenth of it.
const testSilence = 300 * time.Millisecond

func silencePool(t *testing.T, paths ...string) *Pool {
	t.Helper()
	y := DefaultYamuxConfig()
	y.KeepAliveInterval = testSilence / 10
	p := NewPool(&Config{RetryInterval: 5 * time.Millisecond, Yamux: y, Silence: testSilence})
	p.SetPeers(paths)
	t.Cleanup(func() { p.Close() })
	return p
}

// gate stops a connection as SIGSTOP stops its process: while it is shut, nothing read is
// handed on and nothing is written (the bytes wait in the socket's buffers).
type gate struct {
	mu   sync.Mutex
	shut chan struct{} // nil: open
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut == nil {
		g.shut = make(chan struct{})
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut != nil {
		close(g.shut)
		g.shut = nil
	}
}

func (g *gate) pass() {
	g.mu.Lock()
	ch := g.shut
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

type gatedConn struct {
	net.Conn
	g *gate
}

func (c *gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.g.pass()
	return n, err
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.g.pass()
	return c.Conn.Write(p)
}

// stoppablePeer serves yamux sessions at path, echoing every stream, through g.
func stoppablePeer(t *testing.T, path string, g *gate) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sessions []*yamux.Session
	t.Cleanup(func() {
		ln.Close()
		g.open()
		mu.Lock()
		for _, s := range sessions {
			s.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := yamux.Server(&gatedConn{Conn: c, g: g}, DefaultYamuxConfig())
			if err != nil {
				c.Close()
				return
			}
			mu.Lock()
			sessions = append(sessions, s)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					st, err := s.Accept()
					if err != nil {
						return
					}
					go func() {
						defer st.Close()
						io.Copy(st, st)
					}()
				}
			}()
		}
	}()
}

// A stopped peer is noticed within Silence: Live and Heard say no at once, Open waits for
// it and then fails with ErrPeerSilent, a stream on its session says PeerSilent; once it
// resumes, a waiting Open gets its stream.
func TestSilentPeer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.sock")
	g := &gate{}
	stoppablePeer(t, path, g)
	p := silencePool(t, path)
	c, err := p.Open(testCtx(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "before")
	if !p.Live(0) || c.(*Stream).PeerSilent() {
		t.Fatal("a peer that just answered is not live")
	}

	g.close()
	deadline := time.Now().Add(10 * time.Second)
	for p.Live(0) {
		if time.Now().After(deadline) {
			t.Fatal("a stopped peer still looks live after 10s")
		}
		time.Sleep(testSilence / 10) // polling interval of a condition wait
	}
	if !c.(*Stream).PeerSilent() {
		t.Error("a stream of a silent peer does not say so")
	}
	start := time.Now()
	if p.Heard(testCtx(t), 0) {
		t.Error("Heard: true for a stopped peer")
	}
	if d := time.Since(start); d > testSilence {
		t.Errorf("Heard waited %v for a peer already silent", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*testSilence)
	_, err = p.Open(ctx, 0)
	cancel()
	if !errors.Is(err, ErrPeerUnavailable) || !errors.Is(err, ErrPeerSilent) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open of a stopped peer: %v, want ErrPeerUnavailable, ErrPeerSilent and the deadline", err)
	}

	res := make(chan openResult, 1)
	go func() {
		c, err := p.Open(testCtx(t), 0)
		res <- openResult{c, err}
	}()
	g.open()
	r := <-res
	if r.err != nil {
		t.Fatalf("Open once the peer resumed: %v", r.err)
	}
	defer r.c.Close()
	roundTrip(t, r.c, "after")
	roundTrip(t, c, "the old stream too")
	if !p.Live(0) || c.(*Stream).PeerSilent() {
		t.Error("a resumed peer is not live")
	}
}

// A peer whose socket accepts connections but that never answers (stopped before the
// session began) is never sent a stream: Open waits, Heard gives up after Silence.
func TestNeverHeardPeer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := silencePool(t, path)
	start := time.Now()
	if p.Heard(testCtx(t), 0) {
		t.Fatal("Heard: true for a peer that never answered")
	}
	if d := time.Since(start); d < testSilence/2 || d > 10*testSilence {
		t.Errorf("Heard gave up after %v, want about %v", d, testSilence)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testSilence/2)
	defer cancel()
	if _, err := p.Open(ctx, 0); !errors.Is(err, ErrPeerSilent) {
		t.Errorf("Open of a peer that never answered: %v, want ErrPeerSilent", err)
	}
	if err := p.Ready(ctx, 0); !errors.Is(err, ErrPeerSilent) {
		t.Errorf("Ready of a peer that never answered: %v, want ErrPeerSilent", err)
	}
}
