package listener

import (
	"context"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/olio-dev/olio/router/process"
)

// standby answers every request with 503 while the cluster has no workers (after WINCH or
// scale 0), so clients get a clear answer instead of a connection that never completes. It
// is the one place the master touches HTTP, and it reads nothing but the request line.
type standby struct {
	srv   *http.Server
	ln    net.Listener
	done  chan struct{}
	drain *process.Drainer
}

func newStandby(lnFile *os.File, errorLog *log.Logger) (*standby, error) {
	ln, err := net.FileListener(lnFile)
	if err != nil {
		return nil, err
	}
	s := &standby{ln: ln, done: make(chan struct{})}
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
	s.drain = process.NewDrainer(s.srv)
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// close stops answering without dropping a request, as a router does (process.Drainer): it
// stops accepting, then waits (at most 5s) until every connection has had its answer
// (keep-alives are off, so each closes after one), closing the ones that have sent nothing
// for a second.
func (s *standby) close() {
	s.ln.Close()
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.drain.Wait(ctx)
}
