package test

// The running state — the worker count an operator set with olio scale, TTIN, TTOU or
// WINCH — survives what should keep it: a reload that leaves the config's count alone, and
// a hot upgrade (USR2); and olio scale +N / -N change the count olio runs, never misread.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/olio-dev/olio/listener"
)

// tryStatus asks for the status over the control socket; nil if nothing answers (during a
// hot upgrade's take-over, for one).
func tryStatus(c *Cluster) *listener.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := listener.NewClient(c.Control).Status(ctx)
	if err != nil {
		return nil
	}
	return st
}

// upgradeMaster sends USR2 to the master the harness started and waits until it has
// exited and a new master answers on the control socket with every member ready; it
// returns the new master's status. The new master is stopped at the end of the test.
func upgradeMaster(t *testing.T, c *Cluster) *listener.Status {
	t.Helper()
	old := c.Pid()
	t.Cleanup(func() { stopOtherMasters(t, c, old) })
	c.Signal(syscall.SIGUSR2)
	var st *listener.Status
	if !Eventually(60*time.Second, func() bool {
		if c.CountLog("upgrade failed") > 0 || !c.hasExited() {
			return false
		}
		st = tryStatus(c)
		return st != nil && st.PID != old && st.Ready == st.Members
	}) {
		t.Fatalf("no hot upgrade within 60s of USR2 (old master exited: %v; last status %+v); upgrade failures: %q",
			c.hasExited(), st, c.lines("upgrade failed"))
	}
	return st
}

// runCLI runs an olio client command and fails the test if it fails.
func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := opCLI(t, args...)
	if err != nil {
		t.Fatalf("olio %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// checkWorkers checks that the cluster runs n workers, all members and ready, and that
// keys land on their owners among n.
func checkWorkers(t *testing.T, c *Cluster, n int, when, prefix string) {
	t.Helper()
	st := opStatus(t, c)
	if st.Members != n || st.Ready != n || len(st.Workers) != n {
		t.Fatalf("%s: %d members, %d ready, %d workers; want %d", when, st.Members, st.Ready, len(st.Workers), n)
	}
	if n > 0 {
		opRequests(t, c, 10, n, prefix)
	}
}

// TestRunningStateUpgradeKeepsScaledCount: scaled from 2 to 3, a hot upgrade's new master
// runs 3 workers, not the 2 its command line says.
func TestRunningStateUpgradeKeepsScaledCount(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	runCLI(t, "scale", "--control", c.Control, "3")
	st := upgradeMaster(t, c)
	if st.Members != 3 {
		t.Errorf("after scale 3 and USR2: %d workers, want 3", st.Members)
	}
	checkWorkers(t, c, 3, "after scale 3 and USR2", "up3")
}

// TestRunningStateReloadAfterUpgrade: scale → reload → USR2 → scale → reload. The config
// asks for 2 throughout: no reload may go back to 2, before the upgrade or after it.
func TestRunningStateReloadAfterUpgrade(t *testing.T) {
	t.Parallel()
	cfgPath, _ := configFile(t, `{"workers": 2}`)
	c := Start(t, "--config", cfgPath)
	runCLI(t, "scale", "--control", c.Control, "3")
	runCLI(t, "reload", "--control", c.Control, "--quiet")
	checkWorkers(t, c, 3, "after scale 3 and a reload", "r3")
	if st := upgradeMaster(t, c); st.Members != 3 {
		t.Errorf("after USR2: %d workers, want 3", st.Members)
	}
	runCLI(t, "scale", "--control", c.Control, "5")
	runCLI(t, "reload", "--control", c.Control, "--quiet")
	checkWorkers(t, c, 5, "after USR2, scale 5 and a reload of the unchanged config", "r5")
	if c.CountLog("reload: configuration changed") > 0 {
		t.Errorf("a reload of an unchanged config said it changed: %q", c.lines("reload: configuration changed"))
	}
}

// TestRunningStateUpgradeKeepsZero: scaled to zero (WINCH), a hot upgrade's new master
// runs no workers and answers 503 as the old one did; it grows when asked.
func TestRunningStateUpgradeKeepsZero(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	c.Signal(syscall.SIGWINCH)
	c.WaitLog("msg=scaled workers=0", 60*time.Second)
	st := upgradeMaster(t, c)
	if st.Members != 0 || len(st.Workers) != 0 {
		t.Fatalf("after WINCH and USR2: %d members, %d workers; want none", st.Members, len(st.Workers))
	}
	status, body, hdr := rawDo(t, keyRequest(c, "GET", "alice", nil))
	if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Errorf("zero workers after USR2: status %d, Retry-After %q (body %q); want 503 with Retry-After", status, hdr.Get("Retry-After"), body)
	}
	if err := syscall.Kill(st.PID, syscall.SIGTTIN); err != nil {
		t.Fatal(err)
	}
	opWaitStatus(t, c, 60*time.Second, "one ready worker after TTIN", func(st *listener.Status) bool {
		return st.Members == 1 && st.Ready == 1
	})
	checkWorkers(t, c, 1, "after WINCH, USR2 and TTIN", "z1")
}

// TestRunningStateReloadRemembersConfiguredCount: a reload that changes the count (2 → 3)
// is remembered: scaled to 5 after it, a reload of the same config keeps 5.
func TestRunningStateReloadRemembersConfiguredCount(t *testing.T) {
	t.Parallel()
	cfgPath, write := configFile(t, `{"workers": 2}`)
	c := Start(t, "--config", cfgPath)
	write(`{"workers": 3}`)
	runCLI(t, "reload", "--control", c.Control, "--quiet")
	checkWorkers(t, c, 3, "after a reload to a config of 3", "c3")
	runCLI(t, "scale", "--control", c.Control, "5")
	runCLI(t, "reload", "--control", c.Control, "--quiet")
	checkWorkers(t, c, 5, "after scale 5 and a reload of the same config of 3", "c5")
}

// TestRunningStateScaleStep: olio scale +1 and -2 change the count olio runs; a step past
// zero is refused; /scale?workers=+1 is refused, never read as 1.
func TestRunningStateScaleStep(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "3")
	if out := runCLI(t, "scale", "--control", c.Control, "+1"); !strings.Contains(out, "scaled to 4 workers (+1)") {
		t.Errorf("olio scale +1 at 3 workers printed %q, want it to say 4 workers", out)
	}
	checkWorkers(t, c, 4, "after olio scale +1 at 3", "s4")
	if out := runCLI(t, "scale", "-2", "--control", c.Control, "--quiet"); !strings.Contains(out, "scaled to 2 workers (-2)") {
		t.Errorf("olio scale -2 at 4 workers printed %q, want it to say 2 workers", out)
	}
	checkWorkers(t, c, 2, "after olio scale -2 at 4", "s2")
	out, err := opCLI(t, "scale", "--control", c.Control, "-3")
	if err == nil || !strings.Contains(out, "cannot scale by -3: the cluster has 2") {
		t.Errorf("olio scale -3 at 2 workers: %v, %q; want a refusal saying 2 run", err, out)
	}
	checkWorkers(t, c, 2, "after a refused olio scale -3", "s2b")

	// The control protocol itself: a signed workers= is refused.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", c.Control)
		},
	}}
	defer hc.CloseIdleConnections()
	for _, q := range []string{"workers=%2B1", "workers=+1"} {
		resp, err := hc.Post("http://olio/scale?"+q, "", nil)
		if err != nil {
			t.Fatalf("POST /scale?%s: %v", q, err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		var a struct{ Error string }
		json.Unmarshal(b, &a)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(a.Error, "step=+N") {
			t.Errorf("POST /scale?%s: %d %s; want 400 pointing to step=+N", q, resp.StatusCode, b)
		}
	}
	checkWorkers(t, c, 2, fmt.Sprintf("after POST /scale?workers=%s", "+1"), "s2c")
}
