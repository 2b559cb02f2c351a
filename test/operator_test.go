package test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// olioCmd runs olio with args and extra environment for at most 60 s and returns its
// stdout; it fails the test when olio fails.
func olioCmd(t *testing.T, env []string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, olioBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("olio %s: %v; stderr: %s; stdout: %s", strings.Join(args, " "), err, stderr.String(), out)
	}
	return out
}

// OLIO_CONTROL names the control socket for olio serve and for each command; --control
// before the command names it too.
func TestOperatorControlFromTheEnvironment(t *testing.T) {
	t.Parallel()
	c := newCluster(t, freeAddr(t))
	cmd := exec.Command(olioBin, "serve", "--listen", c.Addr, "--secret", c.Secret, "--workers", "2")
	cmd.Env = append(os.Environ(), "OLIO_CONTROL="+c.Control)
	c.start(cmd, nil)
	c.WaitLog("all workers ready", 30*time.Second)
	var st struct {
		PID     int `json:"pid"`
		Members int `json:"members"`
	}
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{[]string{"OLIO_CONTROL=" + c.Control}, []string{"status", "--json"}},
		{nil, []string{"--control", c.Control, "status", "--json"}},
		{[]string{"OLIO_CONTROL=/nonexistent/olio.sock"}, []string{"--control", c.Control, "status", "--json"}},
	} {
		if err := json.Unmarshal(olioCmd(t, tc.env, tc.args...), &st); err != nil || st.PID != c.Pid() || st.Members != 2 {
			t.Errorf("olio %v with %v: pid %d, %d members (%v); want pid %d, 2 members", tc.args, tc.env, st.PID, st.Members, err, c.Pid())
		}
	}
}

// opReport is what olio reload, scale and stop print with --json.
type opReport struct {
	Command       string `json:"command"`
	OK            bool   `json:"ok"`
	Message       string `json:"message"`
	Error         string `json:"error"`
	PID           int    `json:"pid"`
	WorkersBefore int    `json:"workers_before"`
	WorkersAfter  int    `json:"workers_after"`
	Changed       bool   `json:"changed"`
	Steps         []struct {
		Step   string `json:"step"`
		Index  int    `json:"index"`
		AppPID int    `json:"app_pid"`
	} `json:"steps"`
	HeldRequests       *uint64  `json:"held_requests"`
	LongestHoldSeconds *float64 `json:"longest_hold_seconds"`
	TookSeconds        float64  `json:"took_seconds"`
}

func decodeReport(t *testing.T, out []byte) opReport {
	t.Helper()
	var r opReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("not one JSON object: %v: %s", err, out)
	}
	if r.HeldRequests == nil || r.LongestHoldSeconds == nil || r.Steps == nil {
		t.Errorf("held_requests, longest_hold_seconds or steps missing: %s", out)
	}
	return r
}

// olio reload, scale and stop with --json each print one JSON object saying what happened.
func TestOperatorJSONReports(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	ctl := []string{"OLIO_CONTROL=" + c.Control}

	r := decodeReport(t, olioCmd(t, ctl, "scale", "3", "--json"))
	if r.Command != "scale" || !r.OK || r.PID != c.Pid() || r.WorkersBefore != 2 || r.WorkersAfter != 3 || !r.Changed ||
		len(r.Steps) != 1 || r.Steps[0].Step != "start" || r.Steps[0].Index != 2 || r.Steps[0].AppPID <= 0 || r.TookSeconds <= 0 {
		t.Errorf("scale 3 --json: %+v", r)
	}
	r = decodeReport(t, olioCmd(t, ctl, "scale", "--json", "3"))
	if !r.OK || r.Changed || r.WorkersBefore != 3 || r.WorkersAfter != 3 || len(r.Steps) != 0 || r.Message != "already at 3 workers" || *r.LongestHoldSeconds != 0 {
		t.Errorf("scale 3 --json at 3 workers: %+v", r)
	}
	if out := string(olioCmd(t, ctl, "scale", "3")); out != "olio: already at 3 workers, nothing changed\n" {
		t.Errorf("scale 3 at 3 workers printed %q", out)
	}
	r = decodeReport(t, olioCmd(t, ctl, "reload", "--json"))
	if r.Command != "reload" || !r.OK || r.WorkersBefore != 3 || r.WorkersAfter != 3 || len(r.Steps) != 3 {
		t.Errorf("reload --json: %+v", r)
	}
	for i, s := range r.Steps {
		if s.Step != "restart" || s.Index != i {
			t.Errorf("reload --json: step %d is %+v, want restart of worker %d", i, s, i)
		}
	}
	var plan struct {
		From int `json:"from"`
		To   int `json:"to"`
	}
	if err := json.Unmarshal(olioCmd(t, ctl, "scale", "2", "--dry-run", "--json"), &plan); err != nil || plan.From != 3 || plan.To != 2 {
		t.Errorf("scale 2 --dry-run --json: %+v (%v)", plan, err)
	}
	r = decodeReport(t, olioCmd(t, ctl, "stop", "--json"))
	if r.Command != "stop" || !r.OK || r.PID != c.Pid() || r.WorkersBefore != 3 || r.WorkersAfter != 0 {
		t.Errorf("stop --json: %+v", r)
	}
	c.WaitExit(30*time.Second, "olio stop --json")
}

// topFrame is the part of olio top --json's frame the test checks.
type topFrame struct {
	Epoch         uint64  `json:"epoch"`
	WindowSeconds float64 `json:"window_seconds"`
	Totals        struct {
		RequestsPerSecond float64  `json:"requests_per_second"`
		Served            uint64   `json:"served"`
		P50Seconds        *float64 `json:"p50_seconds"`
		P99Seconds        *float64 `json:"p99_seconds"`
	} `json:"totals"`
	Workers []struct {
		Index             int     `json:"index"`
		State             string  `json:"state"`
		RequestsPerSecond float64 `json:"requests_per_second"`
		Served            uint64  `json:"served"`
		RSSBytes          uint64  `json:"rss_bytes"`
	} `json:"workers"`
	Keys []struct {
		Key   string `json:"key"`
		Owner int    `json:"owner"`
	} `json:"keys"`
}

// olio top under a known load: its frames count the requests sent, a live view sees
// their rate and latency, and the plain frame renders a row per worker.
func TestOperatorTop(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	ctl := []string{"OLIO_CONTROL=" + c.Control}
	cl := &http.Client{Timeout: 10 * time.Second}
	send := func(n int) {
		for i := 0; i < n; i++ {
			a, err := c.getKey(cl, "/", keyOwnedBy(i%2, 2))
			if err != nil || a.Index != i%2 {
				t.Fatalf("request %d: %v %+v", i, err, a)
			}
		}
	}
	const n = 40
	send(n)
	var f topFrame
	if err := json.Unmarshal(olioCmd(t, ctl, "top", "--once", "--json", "--interval", "100ms"), &f); err != nil {
		t.Fatal(err)
	}
	if f.Totals.Served != n || len(f.Workers) != 2 || f.Workers[0].Served != n/2 || f.Workers[1].Served != n/2 ||
		f.Epoch != 1 || f.WindowSeconds <= 0 || f.Workers[0].State != "ready" || f.Workers[0].RSSBytes == 0 || len(f.Keys) != 2 {
		t.Errorf("top --once --json after %d requests: %+v", n, f)
	}

	// A live view sees requests sent while it runs: their rate and latency.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	live := exec.CommandContext(ctx, olioBin, "top", "--json", "--interval", "100ms")
	live.Env = append(os.Environ(), ctl...)
	stdout, err := live.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		liveDone := make(chan error, 1)
		go func() { liveDone <- live.Wait() }() // after the reads: Wait closes stdout
		live.Process.Signal(syscall.SIGINT)
		select {
		case <-liveDone:
		case <-time.After(10 * time.Second):
			live.Process.Kill()
			<-liveDone
			t.Errorf("olio top did not stop within 10s of SIGINT")
		}
	}()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 1<<20)
	if !lines.Scan() {
		t.Fatalf("olio top printed no frame: %v", lines.Err())
	}
	send(n)
	for {
		if !lines.Scan() {
			t.Fatalf("olio top stopped before a frame showed %d requests with their rate and latency (%v); last: %+v", 2*n, lines.Err(), f)
		}
		f = topFrame{}
		if err := json.Unmarshal(lines.Bytes(), &f); err != nil {
			t.Fatalf("a frame that is not JSON: %v: %s", err, lines.Bytes())
		}
		if f.Totals.Served == 2*n && f.Totals.RequestsPerSecond > 0 && f.Totals.P50Seconds != nil && f.Totals.P99Seconds != nil &&
			*f.Totals.P50Seconds > 0 && *f.Totals.P99Seconds >= *f.Totals.P50Seconds {
			break
		}
	}
	if got := f.Totals.RequestsPerSecond * f.WindowSeconds; got < n-0.5 || got > n+0.5 {
		t.Errorf("rate × window = %.1f requests, want the %d sent", got, n)
	}

	// The plain frame: a header, a row per worker, the hottest keys.
	out := string(olioCmd(t, ctl, "top", "--once", "--interval", "100ms"))
	for _, want := range []string{"olio pid ", "2 workers, 2 ready, epoch 1", "WORKER  STATE  REQ/S", "\n0       ready", "\n1       ready", "HOTTEST KEYS", "\x22" + keyOwnedBy(0, 2) + "\x22"} {
		if !strings.Contains(out, want) {
			t.Errorf("olio top --once does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\033[") {
		t.Errorf("olio top --once to a pipe wrote terminal codes:\n%q", out)
	}
}
