package test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// frozenAnswer is one answer to a request for a key of the stopped router.
type frozenAnswer struct {
	path   string
	status int
	retry  bool // it had a Retry-After
	body   string
	err    error
	took   time.Duration
}

// frozenGet asks cl for path with a key of worker 1 and waits for the answer.
func frozenGet(c *Cluster, cl *http.Client, path, key string) frozenAnswer {
	req, _ := http.NewRequest("GET", c.URL()+path, nil)
	req.Header.Set("X-Olio-Key", key)
	start := time.Now()
	resp, err := cl.Do(req)
	a := frozenAnswer{path: req.URL.Path, err: err}
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.status, a.body, a.retry = resp.StatusCode, strings.TrimSpace(string(b)), resp.Header.Get("Retry-After") != ""
	}
	a.took = time.Since(start)
	return a
}

func (a frozenAnswer) String() string {
	if a.err != nil {
		return fmt.Sprintf("%s: %v after %v", a.path, a.err, a.took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s: %d (Retry-After %v) after %v: %q", a.path, a.status, a.retry, a.took.Round(time.Millisecond), a.body)
}

// unavailable: a 503 with Retry-After, the request not run.
func (a frozenAnswer) unavailable() bool {
	return a.err == nil && a.status == http.StatusServiceUnavailable && a.retry
}

// timedOut: a 504 without Retry-After, the request perhaps run.
func (a frozenAnswer) timedOut() bool {
	return a.err == nil && a.status == http.StatusGatewayTimeout && !a.retry
}

// TestFrozenOwner: a router that is stopped (SIGSTOP) does not hang its keys. Through router
// 0, a request already at worker 1 when it stops is answered 504 without Retry-After near
// --request-timeout (it may still run: it is never sent again); once router 0 has noticed the
// silence, a request that has not reached worker 1 is answered 503 with Retry-After near
// --forward-timeout, on a kept-alive connection (forwarded) and on a new one (which is not
// handed to the stopped router); a new connection handed to it just as it stopped is answered
// 503 by it when it resumes. After SIGCONT every key serves again, and no request ran twice.
func TestFrozenOwner(t *testing.T) {
	t.Parallel()
	c, record := hostileStart(t, 2, "--forward-timeout", "1s", "--request-timeout", "3s")
	victim := c.routers()[1]
	if victim == 0 {
		t.Fatal("no router 1")
	}
	key := keyOwnedBy(1, 2)
	// Kept-alive connections that router 0 accepted: their requests for worker 1 are
	// forwarded (only a connection's first request is handed off).
	viaZero, _ := pinnedClient(t, c, 0)
	inflightClient, _ := pinnedClient(t, c, 0)
	fresh := &http.Client{Timeout: 50 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if a := frozenGet(c, viaZero, "/warm", key); a.status != http.StatusOK {
		t.Fatalf("before the stop: %v", a)
	}

	inflight := make(chan frozenAnswer, 1)
	go func() { inflight <- frozenGet(c, inflightClient, "/inflight?sleep=2500", key) }()
	if !Eventually(10*time.Second, func() bool { return strings.Contains(readRecords(record, 2), "REQ GET /inflight") }) {
		t.Fatal("worker 1's app did not get the slow request within 10s")
	}

	handedBefore := opStatus(t, c).Workers[0].HandedOff
	t.Cleanup(func() { syscall.Kill(victim, syscall.SIGCONT) })
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// A new connection at once: router 0 accepts it (router 1 accepts nothing now) and may
	// still hand it to router 1, not yet known to be silent.
	handed := make(chan frozenAnswer, 1)
	go func() { handed <- frozenGet(c, fresh, "/handed", key) }()

	select {
	case a := <-inflight:
		if !a.timedOut() {
			t.Errorf("a request at worker 1 when it stopped: %v; want 504 without Retry-After", a)
		}
		t.Logf("in flight at the stop: %v", a)
	case <-time.After(40 * time.Second):
		t.Fatalf("a request at worker 1 when it stopped has had no answer for 40s (--request-timeout 3s)")
	}

	// Kept-alive, forwarded: a request sent before router 0 noticed the silence waits in
	// router 1's buffers (504, no Retry-After); once noticed, none is sent (503).
	var answers []frozenAnswer
	for i := 0; ; i++ {
		if i == 20 || time.Since(stopped) > 40*time.Second {
			t.Fatalf("no 503 for worker 1's keys %v after the stop: %v", time.Since(stopped).Round(time.Second), answers)
		}
		a := frozenGet(c, viaZero, fmt.Sprintf("/try-%d", i), key)
		answers = append(answers, a)
		if a.unavailable() {
			break
		}
		if !a.timedOut() {
			t.Fatalf("request %d for a key of the stopped worker: %v; want 503 with Retry-After or 504 without", i, a)
		}
	}
	t.Logf("kept-alive, forwarded: %v", answers)

	// New connections, whose first request would be handed off.
	for i := 0; i < 3; i++ {
		a := frozenGet(c, fresh, fmt.Sprintf("/fresh-%d", i), key)
		answers = append(answers, a)
		if !a.unavailable() {
			t.Errorf("a new connection for a key of the stopped worker: %v; want 503 with Retry-After", a)
		}
	}
	t.Logf("new connections: %v", answers[len(answers)-3:])

	if err := syscall.Kill(victim, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-handed:
		answers = append(answers, a)
		// SIGSTOP lands a moment after kill returns: router 1 may have accepted the new
		// connection itself in that moment, and then serves it, once, when it resumes. A
		// connection router 0 handed it must be refused (stale), never served.
		selfAccepted := a.status == http.StatusOK && strings.Contains(a.body, `"index":1`) &&
			opStatus(t, c).Workers[0].HandedOff == handedBefore
		if !a.unavailable() && !selfAccepted {
			t.Errorf("a new connection at the stop: %v; want 503 with Retry-After (from router 0, or from router 1 once resumed)", a)
		}
		t.Logf("new connection at the stop: %v (router 1 accepted it itself: %v)", a, selfAccepted)
	case <-time.After(40 * time.Second):
		t.Fatal("a new connection at the stop has had no answer 40s after SIGCONT")
	}

	if !Eventually(30*time.Second, func() bool {
		a := frozenGet(c, fresh, "/after", key)
		return a.status == http.StatusOK && strings.Contains(a.body, `"index":1`)
	}) {
		t.Fatal("worker 1's keys do not serve on new connections within 30s of SIGCONT")
	}
	if a := frozenGet(c, viaZero, "/after-kept", key); a.status != http.StatusOK || !strings.Contains(a.body, `"index":1`) {
		t.Errorf("after SIGCONT, on the kept-alive connection: %v", a)
	}

	// No request ran twice; one refused with 503 never ran.
	recs := readRecords(record, 2)
	runs := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^REQ GET (\S+)`).FindAllStringSubmatch(recs, -1) {
		runs[m[1]]++
	}
	if runs["/inflight"] != 1 {
		t.Errorf("the slow request ran %d times, want once", runs["/inflight"])
	}
	for path, n := range runs {
		if n > 1 && path != "/probe" && path != "/after" {
			t.Errorf("%s ran %d times", path, n)
		}
	}
	for _, a := range answers {
		if a.unavailable() && runs[a.path] != 0 {
			t.Errorf("%s was answered 503 and ran %d times", a.path, runs[a.path])
		}
	}
}

// TestFrozenOwnerSessionGivenUp: with --request-timeout off, a request at worker 1 when its
// router stops ends when router 0 gives up the silent session (its keep-alive pings go
// unanswered): 504 without Retry-After, and it is not sent again on a new session, where it
// would wait to run a second time when router 1 resumes.
func TestFrozenOwnerSessionGivenUp(t *testing.T) {
	t.Parallel()
	c, record := hostileStart(t, 2, "--forward-timeout", "1s", "--request-timeout", "0")
	victim := c.routers()[1]
	if victim == 0 {
		t.Fatal("no router 1")
	}
	key := keyOwnedBy(1, 2)
	viaZero, _ := pinnedClient(t, c, 0)
	if a := frozenGet(c, viaZero, "/warm", key); a.status != http.StatusOK {
		t.Fatalf("before the stop: %v", a)
	}
	inflight := make(chan frozenAnswer, 1)
	go func() { inflight <- frozenGet(c, viaZero, "/inflight?sleep=3000", key) }()
	if !Eventually(10*time.Second, func() bool { return strings.Contains(readRecords(record, 2), "REQ GET /inflight") }) {
		t.Fatal("worker 1's app did not get the request within 10s")
	}
	t.Cleanup(func() { syscall.Kill(victim, syscall.SIGCONT) })
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-inflight:
		if !a.timedOut() {
			t.Errorf("a request at worker 1 when it stopped: %v; want 504 without Retry-After", a)
		}
		t.Logf("in flight at the stop: %v", a)
	case <-time.After(45 * time.Second):
		t.Fatal("a request at worker 1 when it stopped has had no answer for 45s")
	}
	if err := syscall.Kill(victim, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !Eventually(30*time.Second, func() bool {
		a := frozenGet(c, viaZero, "/after", key)
		return a.status == http.StatusOK && strings.Contains(a.body, `"index":1`)
	}) {
		t.Fatal("worker 1's keys do not serve within 30s of SIGCONT")
	}
	if n := strings.Count(readRecords(record, 2), "REQ GET /inflight"); n != 1 {
		t.Errorf("the request ran %d times, want once", n)
	}
}
