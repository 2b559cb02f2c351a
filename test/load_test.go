package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// LoadOptions shape a Load. The zero value is a light load: 4 clients, half of them on a
// fresh connection per request, 200 keys.
type LoadOptions struct {
	Clients  int           // concurrent clients; 0: 4
	Fresh    int           // how many of the clients open a fresh connection per request (the others keep one alive); <0: none; 0: Clients/2
	Keys     int           // distinct keys, "<Prefix>0" … ; 0: 200
	Prefix   string        // key prefix; "": "load-"
	Query    string        // added to every request's URL, e.g. "sleep=5"
	Duration time.Duration // the load stops by itself after this long; 0: 60s
	Max      int           // the load stops by itself after this many requests; 0: no bound
	Timeout  time.Duration // bound on one request; 0: 20s
}

// Result is one request of a Load.
type Result struct {
	Client     int
	Key        string // "" for a probe
	Fresh      bool   // sent on a connection made for it alone
	Probe      bool   // the keyless request that learnt which router accepted a new connection
	Router     int    // the router that accepted the keep-alive connection (learnt by its probe); -1: unknown
	Local      string // the client's end of the connection, to find it in olio's logs
	Start, End time.Time
	Status     int    // 0: no answer, see Err
	Err        error  // transport error: no HTTP answer
	Body       string // the answer's body, trimmed and capped, unless it was a good 200
	RetryAfter string // the answer's Retry-After header
	Worker     int    // the worker that answered: the demo's index, or the one an olio error names; -1: unknown
	PID        int    // the demo app's pid, 0 if not a demo answer
	Owner      int    // the owner the load expected for Key; -1: not checked
	Why        string // why the load counts it as a failure; "" for a good answer
}

func (r Result) String() string {
	var b strings.Builder
	kind := "request"
	if r.Probe {
		kind = "probe"
	}
	fmt.Fprintf(&b, "%s client=%d key=%q fresh=%v router=%d conn=%s start=%s took=%s: %s",
		kind, r.Client, r.Key, r.Fresh, r.Router, r.Local, r.Start.Format("15:04:05.000000"),
		r.End.Sub(r.Start).Round(time.Millisecond), r.Why)
	if r.Err != nil {
		fmt.Fprintf(&b, " (err: %v)", r.Err)
	} else {
		fmt.Fprintf(&b, " (status %d, worker %d, owner %d, retry-after %q, body %q)", r.Status, r.Worker, r.Owner, r.RetryAfter, r.Body)
	}
	return b.String()
}

// ConnError reports whether the request got no HTTP answer at all.
func (r Result) ConnError() bool { return r.Err != nil }

// LoadStats is what a Load saw, returned by Stop.
type LoadStats struct {
	Requests int         // every request sent, probes included
	OK       int         // good answers: 200 from the expected owner
	Statuses map[int]int // answers by status; 0 counts transport errors
	Failures []Result    // every request that was not a good answer, in completion order
	Elapsed  time.Duration
}

// Split separates the failures a test allows from the others.
func (s LoadStats) Split(allowed func(Result) bool) (ok, bad []Result) {
	for _, r := range s.Failures {
		if allowed(r) {
			ok = append(ok, r)
		} else {
			bad = append(bad, r)
		}
	}
	return ok, bad
}

// Log writes a summary of s to the test log.
func (s LoadStats) Log(t testing.TB) {
	t.Helper()
	t.Logf("load: %d requests in %s (%.0f/s), %d good, statuses %v, %d failures",
		s.Requests, s.Elapsed.Round(time.Millisecond), float64(s.Requests)/s.Elapsed.Seconds(), s.OK, s.Statuses, len(s.Failures))
}

// NoFailures fails t, listing them, if the load saw any failure not allowed by allowed
// (nil: none is allowed).
func (s LoadStats) NoFailures(t testing.TB, allowed func(Result) bool) {
	t.Helper()
	if allowed == nil {
		allowed = func(Result) bool { return false }
	}
	_, bad := s.Split(allowed)
	if len(bad) == 0 {
		return
	}
	t.Errorf("%d failed requests out of %d:", len(bad), s.Requests)
	for i, r := range bad {
		if i == 20 {
			t.Errorf("… and %d more", len(bad)-i)
			break
		}
		t.Errorf("  %s", r)
	}
}

// Load is a constant load of concurrent clients against a cluster: keep-alive and fresh
// connections, many keys. Every new keep-alive connection is first labelled with the router
// that accepted it, by a keyless request (served by that router without a hop, and never
// handed off); a fresh connection carries one keyed request and no label. It records
// every request that does not get a 200 from the owner it expects. Make one with
// StartLoad, end it with Stop.
type Load struct {
	t     testing.TB
	c     *Cluster
	opts  LoadOptions
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	start time.Time
	sent  atomic.Int64
	ok    atomic.Int64
	owner atomic.Int64 // workers the owner is checked against; 0: not checked

	mu       sync.Mutex
	statuses map[int]int
	failures []Result
	stats    *LoadStats
}

// StartLoad starts a load against c. It is stopped at the end of the test if the test has
// not called Stop.
func StartLoad(t testing.TB, c *Cluster, opts LoadOptions) *Load {
	t.Helper()
	if opts.Clients <= 0 {
		opts.Clients = 4
	}
	switch {
	case opts.Fresh < 0:
		opts.Fresh = 0
	case opts.Fresh == 0:
		opts.Fresh = opts.Clients / 2
	}
	if opts.Keys <= 0 {
		opts.Keys = 200
	}
	if opts.Prefix == "" {
		opts.Prefix = "load-"
	}
	if opts.Duration <= 0 {
		opts.Duration = 60 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	l := &Load{t: t, c: c, opts: opts, stop: make(chan struct{}), start: time.Now(), statuses: map[int]int{}}
	deadline := time.AfterFunc(opts.Duration, l.halt)
	for i := 0; i < opts.Clients; i++ {
		l.wg.Add(1)
		go l.client(i, i < opts.Fresh)
	}
	t.Cleanup(func() { deadline.Stop(); l.Stop() })
	return l
}

// Key is the load's i-th key.
func (l *Load) Key(i int) string { return l.opts.Prefix + strconv.Itoa(i) }

// Keys are all the keys the load uses.
func (l *Load) Keys() []string {
	keys := make([]string, l.opts.Keys)
	for i := range keys {
		keys[i] = l.Key(i)
	}
	return keys
}

// ExpectOwners makes every later request check that its key's answer comes from
// Owner(key, workers); 0 stops checking (while the worker count changes). A request in
// flight while the expectation changes is not checked.
func (l *Load) ExpectOwners(workers int) { l.owner.Store(int64(workers)) }

// OK is the number of good answers so far.
func (l *Load) OK() int { return int(l.ok.Load()) }

// Count is the number of answers with status so far (0: transport errors).
func (l *Load) Count(status int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.statuses[status]
}

// WaitOK waits until the load has had n more good answers than now: the way to let the
// load run across an event, by progress rather than by time. It fails the test if that
// takes longer than timeout.
func (l *Load) WaitOK(n int, timeout time.Duration) {
	l.t.Helper()
	target := l.OK() + n
	if !Eventually(timeout, func() bool { return l.OK() >= target }) {
		l.t.Fatalf("load: only %d of %d good answers within %s (statuses %v)", l.OK(), target, timeout, l.statusesCopy())
	}
}

func (l *Load) statusesCopy() map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[int]int, len(l.statuses))
	for k, v := range l.statuses {
		m[k] = v
	}
	return m
}

// Wait waits until the load stops by itself (Max requests or Duration), failing the test
// if that takes longer than timeout.
func (l *Load) Wait(timeout time.Duration) {
	l.t.Helper()
	select {
	case <-l.stop:
	case <-time.After(timeout):
		l.t.Fatalf("load: not done within %s (%d requests sent)", timeout, l.sent.Load())
	}
}

func (l *Load) halt() { l.once.Do(func() { close(l.stop) }) }

// Stop stops the clients, lets the requests in flight finish, and returns what the load
// saw. It may be called more than once.
func (l *Load) Stop() LoadStats {
	l.halt()
	waitGroup(l.t, &l.wg, 60*time.Second, "the load's clients to finish their requests in flight after Stop")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stats == nil {
		l.stats = &LoadStats{
			Requests: int(l.sent.Load()),
			OK:       int(l.ok.Load()),
			Statuses: l.statuses,
			Failures: l.failures,
			Elapsed:  time.Since(l.start),
		}
	}
	return *l.stats
}

// conn is a connection labelled with the router that accepted it.
type conn struct {
	net.Conn
	router int
}

// client sends requests one after the other until the load stops.
func (l *Load) client(id int, fresh bool) {
	defer l.wg.Done()
	tr := &http.Transport{
		DisableKeepAlives:   fresh,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}
	if !fresh {
		// Fresh connections carry one keyed request each, so that the first request on a
		// connection (the one a router may hand the connection off for) is keyed.
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.dial(ctx, id, network, addr)
		}
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: l.opts.Timeout}
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	url := l.c.URL() + "/load"
	if l.opts.Query != "" {
		url += "?" + l.opts.Query
	}
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		if l.opts.Max > 0 && l.sent.Load() >= int64(l.opts.Max) {
			l.halt()
			return
		}
		key := l.Key(rng.IntN(l.opts.Keys))
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-Olio-Key", key)
		r := Result{Client: id, Key: key, Fresh: fresh, Router: -1, Worker: -1, Owner: -1}
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			r.Local = info.Conn.LocalAddr().String()
			if c, ok := info.Conn.(*conn); ok {
				r.Router = c.router
			}
		}}
		req = req.WithContext(httptrace.WithClientTrace(context.Background(), trace))
		n := l.owner.Load()
		if n > 0 {
			r.Owner = Owner(key, int(n))
		}
		r.Start = time.Now()
		resp, err := cl.Do(req)
		if l.owner.Load() != n {
			r.Owner = -1 // the expectation changed while the request was in flight
		}
		l.finish(&r, resp, err)
	}
}

// dial connects and labels the connection with a keyless probe. When the probe gets no
// good keep-alive answer (e.g. the 503 of a cluster scaled to zero), the connection is
// replaced by an unlabelled one.
func (l *Load) dial(ctx context.Context, id int, network, addr string) (net.Conn, error) {
	// The probe's start is the dial's: a connection made before a router died may have
	// been accepted by it.
	r := Result{Client: id, Probe: true, Router: -1, Worker: -1, Owner: -1, Start: time.Now()}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	r.Local = c.LocalAddr().String()
	resp, err := probe(c, addr, l.opts.Timeout)
	l.finish(&r, resp, err)
	if err == nil && r.Why == "" && !resp.Close {
		return &conn{Conn: c, router: r.Worker}, nil
	}
	c.Close()
	c, err = d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, router: -1}, nil
}

// probe sends a keyless request on c (served by the router that accepted c, without a hop)
// and reads its whole answer, so that c can carry on as a keep-alive connection. The
// returned answer's body is in memory.
func probe(c net.Conn, host string, timeout time.Duration) (*http.Response, error) {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	req, _ := http.NewRequest("GET", "http://"+host+"/probe", nil)
	if err := req.Write(c); err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if br.Buffered() > 0 {
		return nil, fmt.Errorf("probe: %d unexpected bytes after the answer", br.Buffered())
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// workerInBody finds the worker an olio error answer names.
var workerInBody = regexp.MustCompile(`worker (\d+)`)

// finish reads the answer and records the request.
func (l *Load) finish(r *Result, resp *http.Response, err error) {
	l.sent.Add(1)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		r.Status = resp.StatusCode
		r.RetryAfter = resp.Header.Get("Retry-After")
		var a Answer
		if json.Unmarshal(body, &a) == nil && a.PID != 0 {
			r.Worker, r.PID = a.Index, a.PID
		} else if m := workerInBody.FindSubmatch(body); m != nil {
			r.Worker, _ = strconv.Atoi(string(m[1]))
		}
		switch {
		case err != nil:
			r.Why = "reading the answer failed"
		case r.Status != http.StatusOK:
			r.Why = "status " + strconv.Itoa(r.Status)
		case r.PID == 0:
			r.Why = "not a demo answer"
		case r.Owner >= 0 && r.Worker != r.Owner:
			r.Why = "wrong worker"
		}
		if r.Why != "" {
			s := strings.TrimSpace(string(body))
			if len(s) > 300 {
				s = s[:300] + "…"
			}
			r.Body = s
		}
	} else {
		r.Why = "no answer"
	}
	r.Err = err
	r.End = time.Now()
	status := r.Status
	if err != nil {
		status = 0
	}
	l.mu.Lock()
	l.statuses[status]++
	if r.Why != "" {
		l.failures = append(l.failures, *r)
	}
	l.mu.Unlock()
	if r.Why == "" {
		l.ok.Add(1)
	}
}
