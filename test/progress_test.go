package test

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// control runs `olio ARGS --control c.Control` and returns its output (stdout a pipe).
func (c *Cluster) control(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{args[0], "--control", c.Control}, args[1:]...)
	out, err := exec.CommandContext(ctx, olioBin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("olio %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

// stepLines finds the progress lines of step in out, by worker.
func stepLines(out, step string) map[int][]string {
	re := regexp.MustCompile(`(?m)^` + step + `: worker (\d+) .*, (\d+)/(\d+) \((.*)\)$`)
	got := map[int][]string{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		i, _ := strconv.Atoi(m[1])
		got[i] = append(got[i], m[0])
	}
	return got
}

// olio reload and olio scale print each worker once as it completes (plain lines when
// stdout is not a terminal), then a summary; --quiet prints the outcome alone.
func TestReloadAndScaleProgress(t *testing.T) {
	t.Parallel()
	const workers = 3
	c := Start(t, "--workers", strconv.Itoa(workers))

	out := c.control(t, "reload")
	got := stepLines(out, "restart")
	for i := 0; i < workers; i++ {
		if len(got[i]) != 1 || !strings.Contains(got[i][0], "app pid ") {
			t.Errorf("reload: worker %d in %d progress lines %q; want one with its app pid; output:\n%s", i, len(got[i]), got[i], out)
		}
	}
	if len(got) != workers || !regexp.MustCompile(`(?m)^olio: reloaded: every app replaced \(took \d+\.\d+ s(, \d+ requests? held, longest .+)?\)(; .+ still draining .+)?$`).MatchString(out) {
		t.Errorf("reload output:\n%s", out)
	}
	if strings.Contains(out, "\r") || strings.Contains(out, "\033") {
		t.Errorf("terminal controls in output to a pipe: %q", out)
	}
	for n := 1; n <= workers; n++ {
		if !strings.Contains(out, fmt.Sprintf(", %d/%d (", n, workers)) {
			t.Errorf("reload: no %d/%d line:\n%s", n, workers, out)
		}
	}

	out = c.control(t, "scale", "5")
	if got := stepLines(out, "start"); len(got) != 2 || len(got[3]) != 1 || len(got[4]) != 1 || !strings.Contains(out, "olio: scaled to 5 workers (took") {
		t.Errorf("scale up to 5:\n%s", out)
	}
	out = c.control(t, "scale", "2")
	if got := stepLines(out, "stop"); len(got) != 3 || len(got[2]) != 1 || len(got[3]) != 1 || len(got[4]) != 1 {
		t.Errorf("scale down to 2:\n%s", out)
	}

	// The outcome alone: one line (which may say how many old apps still drain).
	if out := c.control(t, "reload", "--quiet"); !strings.HasPrefix(out, "olio: reloaded: every app replaced") || strings.Count(out, "\n") != 1 {
		t.Errorf("reload --quiet: %q, want the outcome alone", out)
	}
	if out := c.control(t, "scale", "--quiet", "3"); out != "olio: scaled to 3 workers\n" {
		t.Errorf("scale --quiet: %q, want the outcome alone", out)
	}
}

// The summary counts the requests a reload held: while worker 0's old app finishes a slow
// request, its new app waits, and so do the requests that come meanwhile.
func TestReloadSummaryCountsHeldRequests(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "1")
	slow := make(chan error, 1)
	go func() {
		// Long enough to outlast the reload's start on a busy machine (the reload waits for
		// it, so it is also how long the test takes).
		req, _ := http.NewRequest("GET", c.URL()+"/slow?sleep=5000", nil)
		_, err := Do(client, req)
		slow <- err
	}()
	if !Eventually(10*time.Second, func() bool { return opStatus(t, c).Workers[0].InFlight == 1 }) {
		t.Fatal("the slow request is not in flight")
	}
	done := make(chan string, 1)
	go func() {
		out, _ := opCLI(t, "reload", "--control", c.Control)
		done <- out
	}()
	var out string
	for sent := 0; out == "" && sent < 2000; sent++ {
		if _, err := c.getKey(client, "/k", "held-"+strconv.Itoa(sent)); err != nil {
			t.Errorf("a request during the reload: %v", err)
		}
		select {
		case out = <-done:
		default:
		}
	}
	if out == "" {
		out = <-done
	}
	if err := <-slow; err != nil {
		t.Errorf("the slow request: %v", err)
	}
	m := regexp.MustCompile(`took \d+\.\d+ s, (\d+) requests? held`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("reload output:\n%s", out)
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Errorf("no request held, though requests came while the old app finished its slow one:\n%s", out)
	}
}
