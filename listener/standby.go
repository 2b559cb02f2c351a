package listener

import (
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// standby answers every request with 503 while the cluster has no workers (after WINCH or
// scale 0), so clients get a clear answer instead of a connection that never completes. It
// is the one place the master touches HTTP, and it reads nothing but the request line.
type standby struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}

	mu    sync.Mutex
	conns map[net.Conn]time.Time // open connections → when accepted; zero once a request came
}

func newStandby(lnFile *os.File, errorLog *log.Logger) (*standby, error) {
	ln, err := net.FileListener(lnFile)
	if err != nil {
		return nil, err
	}
	s := &standby{ln: ln, done: make(chan struct{}), conns: map[net.Conn]time.Time{}}
	s.srv = &http.Server{
		ConnState: s.track,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "5")
			w.Header().Set("Connection", "close")
			http.Error(w, "olio: scaled to zero workers; try again later", http.StatusServiceUnavailable)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          errorLog,
	}
	s.srv.SetKeepAlivesEnabled(false)
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *standby) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateNew:
		s.conns[c] = time.Now()
	case http.StateActive:
		s.conns[c] = time.Time{}
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
	}
}

// close stops answering. It does not use http.Server.Shutdown, which closes without an
// answer a connection accepted before it began and read after: those clients would get an
// EOF instead of their 503. It stops accepting, then waits (at most 5s) until every
// connection has had its answer (keep-alives are off, so each closes after one), closing
// the ones that have sent nothing for a second.
func (s *standby) close() {
	s.ln.Close()
	<-s.done
	deadline := time.After(5 * time.Second)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		for c, at := range s.conns {
			if !at.IsZero() && time.Since(at) > time.Second {
				c.Close()
			}
		}
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-t.C:
		case <-deadline:
			s.srv.Close()
			return
		}
	}
}
