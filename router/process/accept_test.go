package process

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/olio-dev/olio/descend"
)

// The public side accepts while the router is a member, again after a scale down and up,
// never after a drain, and leaves nothing running once stopped.
func TestAcceptorLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f, addr := listenerFile(t)
	defer f.Close()
	logger := slog.New(slog.DiscardHandler)
	h, err := newHandoff(t.TempDir(), 0, logger, new(atomic.Uint64))
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptor{listener: f, logger: logger, handoff: h,
		server: func() *http.Server {
			return &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
		},
		conf: func() *descend.Config { return &descend.Config{ShutdownTimeout: 5 * time.Second} },
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	get := func(when string) {
		t.Helper()
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", when, resp.StatusCode)
		}
	}
	accepting := func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.public != nil
	}
	var member atomic.Bool
	member.Store(true)
	a.start(member.Load)
	get("a member")
	member.Store(false)
	a.update()
	if accepting() {
		t.Error("accepting after the router left the membership")
	}
	member.Store(true)
	a.update()
	get("a member again")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.drain(ctx)
	a.update()
	if accepting() {
		t.Error("accepting again after a drain")
	}
	a.stop()
}
