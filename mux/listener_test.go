package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// listen starts a Listener in a fresh temporary directory, closed at cleanup.
func listen(t testing.TB, path string) *Listener {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "peer.sock")
	}
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// newPool returns a Pool over paths, closed at cleanup.
func newPool(t testing.TB, paths ...string) *Pool {
	t.Helper()
	p := NewPool(&Config{RetryInterval: 5 * time.Millisecond})
	p.SetPeers(paths)
	t.Cleanup(func() { p.Close() })
	return p
}

// testCtx returns a context that ends well before the test's own timeout.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echo serves l: every accepted stream gets back what it sends.
func echo(t testing.TB, l *Listener) {
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// roundTrip writes msg on c and reads it back.
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if g, e := string(buf), msg; g != e {
		t.Fatalf("read %q, want %q", g, e)
	}
}

// serveHTTP runs an http.Server on l until cleanup, which shuts it down.
func serveHTTP(t testing.TB, l net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
}

// client returns an http.Client that reaches peer i ("http://peer/") through p.
func client(t testing.TB, p *Pool, i int) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return p.Open(ctx, i)
		},
		MaxIdleConnsPerHost: 64,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestHTTPRoundTrip(t *testing.T) {
	l := listen(t, "")
	serveHTTP(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Path", r.URL.Path)
		w.Write(bytes.ToUpper(body))
	}))
	p := newPool(t, l.Addr().String())
	c := client(t, p, 0)

	// Several requests, and a body larger than yamux's initial 256 KiB window.
	for _, body := range []string{"hello", "again", string(bytes.Repeat([]byte("x"), 3<<20))} {
		resp, err := c.Post("http://peer/some/path", "text/plain", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if g, e := string(got), string(bytes.ToUpper([]byte(body))); g != e {
			t.Fatalf("body: got %d bytes, want %d", len(g), len(e))
		}
		if g, e := resp.Header.Get("X-Path"), "/some/path"; g != e {
			t.Fatalf("X-Path = %q, want %q", g, e)
		}
	}
	if g, e := l.accepted.Load(), int64(1); g != e {
		t.Fatalf("accepted %d raw connections, want %d", g, e)
	}
}

func TestListenSocketMode(t *testing.T) {
	l := listen(t, "")
	fi, err := os.Stat(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if g, e := fi.Mode().Type(), fs.ModeSocket; g != e {
		t.Fatalf("type %v, want %v", g, e)
	}
	if g, e := fi.Mode().Perm(), fs.FileMode(0o600); g != e {
		t.Fatalf("mode %v, want %v", g, e)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.sock")
	// A socket file nobody listens on any more.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket: %v", err)
	}

	l := listen(t, path)
	echo(t, l)
	c, err := newPool(t, path).Open(testCtx(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "fresh")
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(path, nil); err == nil {
		l.Close()
		t.Fatal("Listen over a regular file succeeded")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
		t.Fatalf("file changed: %q, %v", b, err)
	}
}

func TestListenerClose(t *testing.T) {
	l := listen(t, "")
	path := l.Addr().String()

	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, err := range []error{<-accepted, func() error { _, err := l.Accept(); return err }()} {
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file after Close: %v", err)
	}
}

// TestListenerCloseKeepsAcceptedStreams checks Close drains like a
// net.Listener: an accepted stream keeps working, the peer's next Open goes to
// a new session, and the old session ends once the stream is closed.
// accepted opens a stream from a Pool to a Listener at path and accepts it: the client's
// end, the server's end and the client's session.
func accepted(t *testing.T, ctx context.Context, path string) (*Listener, *Pool, net.Conn, net.Conn, *yamux.Session) {
	t.Helper()
	l := listen(t, path)
	p := newPool(t, path)
	c, err := p.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	return l, p, c, sc, c.(*Stream).Session()
}

func TestListenerCloseKeepsAcceptedStreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.sock")
	ctx := testCtx(t)
	l, p, c, sc, old := accepted(t, ctx, path)

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// In flight: both directions still work.
	go io.Copy(sc, sc)
	roundTrip(t, c, "still here")

	// A new listener on the same path: the next Open must not use the
	// session being drained.
	l2 := listen(t, path)
	echo(t, l2)
	c2, err := p.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.(*Stream).Session() == old {
		t.Fatal("Open used the session of a closed listener")
	}
	roundTrip(t, c2, "new one")

	// Closing the last stream ends the old session.
	sc.Close()
	select {
	case <-old.CloseChan():
	case <-ctx.Done():
		t.Fatal("old session still open after its last stream closed")
	}
}

// TestListenerGoAway: a listener sent away (its replacement has bound the same path) keeps
// serving the streams already open, while its peers' next streams reach the replacement.
func TestListenerGoAway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.sock")
	ctx := testCtx(t)
	l, p, c, sc, old := accepted(t, ctx, path)
	go io.Copy(sc, sc)

	l2 := listen(t, path) // the replacement
	echo(t, l2)
	l.GoAway()
	roundTrip(t, c, "still served")

	// The peer learns of the go-away asynchronously: until it has, a stream it opens on the
	// old session is refused with a reset (never accepted); after, Open re-dials.
	var c2 net.Conn
	for c2 == nil {
		if ctx.Err() != nil {
			t.Fatal("Open kept using the session that was sent away")
		}
		n, err := p.Open(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n.(*Stream).Session() == old {
			n.Close()
			continue
		}
		c2 = n
	}
	defer c2.Close()
	roundTrip(t, c2, "the replacement")
	roundTrip(t, c, "the old one, still")
}
