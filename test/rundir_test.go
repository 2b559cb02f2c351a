package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/olio-dev/olio/listener"
)

// startFrom runs `olio serve` from the binary bin (not olioBin) and waits until every worker
// is ready.
func startFrom(t *testing.T, bin string, args ...string) *Cluster {
	t.Helper()
	c := newCluster(t, freeAddr(t))
	full := []string{"serve", "--listen", c.Addr, "--control", c.Control, "--secret", c.Secret}
	c.start(exec.Command(bin, append(full, args...)...), nil)
	c.WaitLog("all workers ready", 30*time.Second)
	return c
}

// exeInode is the inode of the binary process pid runs (/proc/PID/exe, which the kernel
// keeps pointing at the file it was started from, replaced or removed since or not).
func exeInode(t *testing.T, pid int) uint64 {
	t.Helper()
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		t.Fatalf("binary of pid %d: %v", pid, err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// waitRouter waits until worker i has a ready router other than old (0: any), and returns
// its pid.
func waitRouter(t *testing.T, c *Cluster, i, old int, what string) int {
	t.Helper()
	st := opWaitStatus(t, c, 60*time.Second, what, func(st *listener.Status) bool {
		return len(st.Workers) > i && st.Workers[i].RouterPID != 0 && st.Workers[i].RouterPID != old &&
			st.Workers[i].State == "ready"
	})
	return st.Workers[i].RouterPID
}

// Routers run the master's own binary: a new file put at the path olio was started from (a
// package upgrade renames one over it, or removes it) is not what a router started later
// runs — neither one a scale adds nor one restarted after a crash. Only a hot upgrade would
// run it.
func TestRoutersRunTheMastersOwnBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "olio")
	b, err := os.ReadFile(olioBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	c := startFrom(t, bin, append([]string{"--workers", "2"}, hostileAppArgs(t)...)...)
	own := exeInode(t, c.Pid())

	// The new file announces itself and fails, as a binary that does not fit would.
	marker := filepath.Join(dir, "new-binary-ran")
	script := "#!/bin/sh\necho ran \"$@\" >> " + marker + "\nexit 1\n"
	if err := os.WriteFile(bin+".new", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := listener.NewClient(c.Control).Scale(ctx, 3); err != nil {
		b, _ := os.ReadFile(marker)
		t.Fatalf("scale to 3 after the binary was replaced: %v (the new file ran: %q)", err, b)
	}
	added := waitRouter(t, c, 2, 0, "worker 2's router ready")
	if g, e := exeInode(t, added), own; g != e {
		t.Errorf("the router scale added runs inode %d, the master's binary is inode %d", g, e)
	}
	key := keyOwnedBy(2, 3)
	if a, err := c.getKey(quick, "/", key); err != nil || a.Index != 2 {
		t.Fatalf("key %s of the added worker: %+v, %v", key, a, err)
	}

	// The file removed altogether: a router restarted after a crash is the master's still.
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	old := opStatus(t, c).Workers[0].RouterPID
	c.Descendants()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	restarted := waitRouter(t, c, 0, old, "worker 0's router restarted")
	if g, e := exeInode(t, restarted), own; g != e {
		t.Errorf("the router restarted after a crash runs inode %d, the master's binary is inode %d", g, e)
	}
	key = keyOwnedBy(0, 3)
	if a, err := c.getKey(quick, "/", key); err != nil || a.Index != 0 {
		t.Fatalf("key %s of the restarted worker: %+v, %v", key, a, err)
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Errorf("the file put at olio's path ran: %q", b)
	}
	if args := procArgs(restarted); len(args) == 0 || args[0] != bin {
		t.Errorf("the restarted router's command line is %q, want it to begin with %s", args, bin)
	}
}

// postKey sends a POST with a body (forwarded, never handed off) for key on a connection
// of its own, and returns the worker that served it.
func postKey(c *Cluster, key string) (int, error) {
	req, _ := http.NewRequest("POST", c.URL()+"/post", strings.NewReader("a body"))
	req.Header.Set("X-Olio-Key", key)
	a, err := Do(quick, req)
	if err != nil {
		return -1, err
	}
	return a.Index, nil
}

// A removed run directory is replaced by a new one (new name, mode 0700) and the routers
// move there: forwarded requests that need a new peer session, and requests for the keys
// of a router killed afterwards, are served again; the status says what happened; a stop
// is prompt.
func TestRunDirRemovedIsRenewed(t *testing.T) {
	t.Parallel()
	const workers = 2
	c := Start(t, "--workers", strconv.Itoa(workers), "--forward-timeout", "2s")
	st := opStatus(t, c)
	oldDir := st.RunDir
	if oldDir == "" {
		t.Fatal("status names no run directory")
	}
	forwarded := func() (n uint64) {
		for _, w := range opStatus(t, c).Workers {
			n += w.Forwarded
		}
		return n
	}
	before := forwarded()
	if err := os.RemoveAll(oldDir); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()

	// Every key served, through whichever router accepts: half of them are forwarded, on
	// sessions that did not exist before the removal.
	keys := []string{keyOwnedBy(0, workers), keyOwnedBy(1, workers)}
	var lastErr error
	ok := Eventually(30*time.Second, func() bool {
		for range 3 {
			for i, key := range keys {
				got, err := postKey(c, key)
				if err == nil && got != i {
					err = fmt.Errorf("key %s served by worker %d, its owner is %d", key, got, i)
				}
				if err == nil {
					_, err = c.getKey(quick, "/", key)
				}
				if err != nil {
					lastErr = err
					return false
				}
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("requests still failing 30s after the run directory was removed: %v", lastErr)
	}
	t.Logf("served again %s after the removal", time.Since(removed).Round(time.Millisecond))
	if forwarded() == before {
		t.Fatal("no request was forwarded after the removal: the test did not test anything")
	}

	st = opStatus(t, c)
	if st.RunDir == oldDir || st.RunDirNote == "" || !strings.Contains(st.RunDirNote, oldDir) {
		t.Errorf("status: run dir %q (was %q), note %q: want a new one and a note naming the old", st.RunDir, oldDir, st.RunDirNote)
	}
	fi, err := os.Lstat(st.RunDir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("the new run directory %s: %v, %v; want a directory with mode 0700", st.RunDir, fi, err)
	}
	if _, err := os.Lstat(oldDir); err == nil {
		t.Errorf("the old run directory %s was made again at its known path", oldDir)
	}
	if n := c.CountLog("the run directory was removed"); n == 0 {
		t.Error("the log does not say the run directory was removed")
	}
	out, err := opCLI(t, "status", "--control", c.Control)
	if err != nil || !strings.Contains(out, st.RunDir) {
		t.Errorf("olio status does not name the new run directory %s: %v\n%s", st.RunDir, err, out)
	}

	// A router killed now comes back, in the new directory.
	old := st.Workers[1].RouterPID
	c.Descendants()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitRouter(t, c, 1, old, "worker 1's router back after kill -9")
	if !Eventually(30*time.Second, func() bool {
		got, err := postKey(c, keys[1])
		lastErr = err
		return err == nil && got == 1
	}) {
		t.Fatalf("worker 1's keys not served after its router was killed: %v", lastErr)
	}
	if _, err := os.Lstat(filepath.Join(st.RunDir, "router-1.sock")); err != nil {
		t.Errorf("the restarted router has no socket in the new run directory: %v", err)
	}

	// Removed again, then at once a reload: the master renews the directory before it
	// restarts anything, and every worker restarts there.
	if err := os.RemoveAll(st.RunDir); err != nil {
		t.Fatal(err)
	}
	if out, err := opCLI(t, "reload", "--control", c.Control); err != nil {
		t.Fatalf("olio reload right after the run directory was removed: %v\n%s", err, out)
	}
	again := opStatus(t, c)
	if again.RunDir == st.RunDir || again.RunDir == oldDir {
		t.Errorf("run dir %s after the second removal, want a new one", again.RunDir)
	}
	for i, key := range keys {
		if got, err := postKey(c, key); err != nil || got != i {
			t.Errorf("key %s after the reload: worker %d, %v", key, got, err)
		}
	}
	st = again

	begun := time.Now()
	if out, err := opCLI(t, "stop", "--control", c.Control); err != nil {
		t.Fatalf("olio stop: %v\n%s", err, out)
	}
	c.WaitExit(15*time.Second, "olio stop")
	t.Logf("stopped in %s", time.Since(begun).Round(time.Millisecond))
	if _, err := os.Lstat(st.RunDir); err == nil {
		t.Errorf("the run directory %s is left after the stop", st.RunDir)
	}
}

// A router that cannot start says why in the log, as a line of the log's own format with
// its worker, not only as an exit status in the master's line.
func TestRouterStartFailureSaysWhy(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2", "--log-format", "json")
	st := opStatus(t, c)
	sock := filepath.Join(st.RunDir, "router-1.sock")
	// Something that is not a socket where router 1's socket goes: it refuses to bind.
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	old := st.Workers[1].RouterPID
	c.Descendants()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	said := func() bool {
		for _, line := range c.lines("not a socket") {
			var rec struct {
				Level  string `json:"level"`
				Msg    string `json:"msg"`
				Worker *int   `json:"worker"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "ERROR" && rec.Worker != nil && *rec.Worker == 1 {
				return true
			}
		}
		return false
	}
	if !Eventually(30*time.Second, said) {
		t.Fatalf("no JSON log line from worker 1 saying why its router exited; output:\n%s", c.Out)
	}
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	waitRouter(t, c, 1, old, "worker 1's router back once the file is gone")
}

// Requests on their way through the peer sessions of the old run directory when the master
// moves the routers to a new one are not cut: they finish on the old sessions.
func TestRunDirRenewedWithoutCuttingRequests(t *testing.T) {
	t.Parallel()
	const workers = 2
	c, _ := hostileStart(t, workers)
	keys := []string{keyOwnedBy(0, workers), keyOwnedBy(1, workers)}
	for range 4 { // peer sessions both ways, made before the removal
		for _, key := range keys {
			if _, err := postKey(c, key); err != nil {
				t.Fatal(err)
			}
		}
	}
	forwarded := func() (n uint64) {
		for _, w := range opStatus(t, c).Workers {
			n += w.Forwarded
		}
		return n
	}
	before := forwarded()
	const slow = 16 // each accepted by either router: some are forwarded
	type result struct {
		index int
		err   error
	}
	results := make(chan result, slow)
	slowClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range slow {
		go func() {
			// long enough for all of them to be in flight at once on a loaded machine
			req, _ := http.NewRequest("POST", c.URL()+"/slow?sleep=6000", strings.NewReader("a body"))
			req.Header.Set("X-Olio-Key", keys[i%workers])
			a, err := Do(slowClient, req)
			if err != nil {
				results <- result{-1, err}
				return
			}
			results <- result{a.Index, nil}
		}()
	}
	if !Eventually(10*time.Second, func() bool {
		n := 0
		for _, w := range opStatus(t, c).Workers {
			n += int(w.InFlight)
		}
		return n == slow
	}) {
		t.Fatal("the slow requests did not all reach the apps")
	}
	st := opStatus(t, c)
	if err := os.RemoveAll(st.RunDir); err != nil {
		t.Fatal(err)
	}
	c.WaitLog("every router moved to the new one", 30*time.Second)
	for i := range slow {
		r := <-results // each bounded by slowClient's timeout
		if r.err != nil {
			t.Errorf("slow request %d: %v", i, r.err)
		}
	}
	if forwarded() == before {
		t.Fatal("no slow request was forwarded: the test did not test anything")
	}
}
