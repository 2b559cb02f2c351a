package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// wrongPortAppArg, as the test binary's first argument, makes it run wrongPortApp: an app
// that ignores $PORT and serves on the address given after it.
const wrongPortAppArg = "olio-wrong-port-app"

func init() {
	if len(os.Args) > 2 && os.Args[1] == wrongPortAppArg {
		os.Exit(wrongPortApp(os.Args[2]))
	}
}

// wrongPortApp serves on addr until SIGTERM or SIGINT, as python3 -m http.server serves on
// 0.0.0.0:8000 whatever $PORT says.
func wrongPortApp(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	srv.Serve(ln)
	return 0
}

// An app that listens, but not on $PORT, is reported within seconds, naming where it
// listens, long before --ready-timeout (60s); its keys get 503 meanwhile.
func TestAppIgnoringPortReported(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := freeAddr(t)
	c := StartNoWait(t, "--workers", "1", "--forward-timeout", "1s", "--", exe, wrongPortAppArg, elsewhere)
	c.WaitLog("listens on "+elsewhere+", not on $PORT=", 10*time.Second)
	line := c.lines("listens on " + elsewhere)
	if len(line) != 1 || !strings.Contains(line[0], "app 0 (pid ") {
		t.Errorf("report lines %q; want one naming app 0 and its pid", line)
	}
	if n := c.CountLog("within --ready-timeout"); n != 0 {
		t.Fatalf("the ready timeout passed before the test looked; the report came too late to tell")
	}
	resp, err := quick.Get(c.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a request while the app is not ready: %d, want 503", resp.StatusCode)
	}
}
