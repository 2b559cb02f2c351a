package listener

import (
	"context"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

// standby answers every request with 503 while the cluster has no workers (after WINCH or
// scale 0), so clients get a clear answer instead of a connection that never completes. It
// is the one place the master touches HTTP, and it reads nothing but the request line.
type standby struct {
	srv  *http.Server
	done chan struct{}
}

func newStandby(lnFile *os.File, errorLog *log.Logger) (*standby, error) {
	ln, err := net.FileListener(lnFile)
	if err != nil {
		return nil, err
	}
	s := &standby{done: make(chan struct{})}
	s.srv = &http.Server{
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

func (s *standby) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	<-s.done
}
