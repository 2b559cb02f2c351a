package mux

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
)

var hello = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "hello, world\n")
})

func get(b *testing.B, c *http.Client, url string) {
	for b.Loop() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

// BenchmarkForwardedRequest is one keep-alive HTTP GET through a mux stream:
// http.Client → Pool.Open stream → unix socket → Listener → http.Server.
func BenchmarkForwardedRequest(b *testing.B) {
	l := listen(b, "")
	serveHTTP(b, l, hello)
	c := client(b, newPool(b, l.Addr().String()), 0)
	b.ReportAllocs()
	get(b, c, "http://peer/")
}

// BenchmarkDirectRequest is the same GET over loopback TCP to an httptest
// server, the baseline for BenchmarkForwardedRequest.
func BenchmarkDirectRequest(b *testing.B) {
	srv := httptest.NewServer(hello)
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	b.ReportAllocs()
	get(b, &http.Client{Transport: tr}, srv.URL)
}

// BenchmarkOpen is Pool.Open on a live session plus closing the stream: the
// cost of a new forwarded connection (keep-alive makes it rare). The
// listener side closes each stream as it accepts it.
func BenchmarkOpen(b *testing.B) {
	l := listen(b, "")
	done := make(chan struct{})
	b.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	p := newPool(b, l.Addr().String())
	ctx := testCtx(b)
	b.ReportAllocs()
	for b.Loop() {
		c, err := p.Open(ctx, 0)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkUnixRequest is the same GET over plain unix socket connections, one request at a
// time on each (a pool of keep-alive connections instead of streams of one session): what a
// peer leg without a multiplexer would cost, for comparison with BenchmarkForwardedRequest.
func BenchmarkUnixRequest(b *testing.B) {
	get(b, unixClient(b), "http://peer/")
}

// BenchmarkForwardedRequestParallel and BenchmarkUnixRequestParallel are the two under 64
// concurrent requests, as a loaded router sends them.
func BenchmarkForwardedRequestParallel(b *testing.B) {
	l := listen(b, "")
	serveHTTP(b, l, hello)
	parallelGet(b, client(b, newPool(b, l.Addr().String()), 0), "http://peer/")
}

func BenchmarkUnixRequestParallel(b *testing.B) {
	parallelGet(b, unixClient(b), "http://peer/")
}

// unixClient serves hello on a unix socket and returns a keep-alive client for it.
func unixClient(b *testing.B) *http.Client {
	path := filepath.Join(b.TempDir(), "peer.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: hello}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	tr := &http.Transport{
		MaxIdleConnsPerHost: 128,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func parallelGet(b *testing.B, c *http.Client, url string) {
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
