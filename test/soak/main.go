// Command soak runs an olio cluster of the demo app under mixed load for a while, with a
// HUP, TTIN, TTOU, kill -9 of an app and kill -9 of a router in turn every -interval, and
// reports per router, at the start and at the end, resident memory, open descriptors,
// threads and goroutines, plus the failed requests: those explained by a kill -9 (the
// killed process's in-flight requests) and the others. It waits on the cluster's status
// (over the control socket), never on its log.
//
//	go run ./test/soak -duration 10m
//
// It exits 1 if any request failed for another reason. It is a script, not part of go test.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/olio-dev/olio/test/harness"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type options struct {
	duration time.Duration
	interval time.Duration
	workers  int
	clients  int
	bin      string
	keep     bool
}

func run() error {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "how long to run the load")
	flag.DurationVar(&o.interval, "interval", 20*time.Second, "time between two disturbances (HUP, TTIN, TTOU, kill -9 app, kill -9 router, in turn)")
	flag.IntVar(&o.workers, "workers", 3, "workers at the start")
	flag.IntVar(&o.clients, "clients", 8, "concurrent clients")
	flag.StringVar(&o.bin, "olio", "", "olio binary to run (default: build ./cmd/olio)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (olio's log is olio-PORT.log in it)")
	flag.Parse()

	dir, err := os.MkdirTemp("", "olio-soak-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.bin == "" {
		root, err := harness.ModuleRoot()
		if err != nil {
			return err
		}
		o.bin = filepath.Join(dir, "olio")
		if err := harness.Build(context.Background(), root, "./cmd/olio", o.bin); err != nil {
			return err
		}
	}
	procs := harness.NewProcs()
	defer procs.KillAll() // after a failure; nothing is left to kill after a clean stop
	c, err := start(procs, o, dir)
	if err != nil {
		return err
	}
	return c.soak(o)
}

// cluster is the running `olio serve`.
type cluster struct {
	*harness.Serve
	proc *harness.Child
}

// start runs `olio serve` of the demo app and waits until its workers are settled.
func start(procs *harness.Procs, o options, dir string) (*cluster, error) {
	s, err := harness.NewServe(dir)
	if err != nil {
		return nil, err
	}
	argv := s.Args(o.bin, o.workers, "--shutdown-timeout", "10s", "--forward-timeout", "10s")
	proc, err := procs.Start("olio serve", argv, os.Environ(), s.Log)
	if err != nil {
		return nil, err
	}
	c := &cluster{Serve: s, proc: proc}
	if !c.settled(o.workers, nil) {
		return nil, fmt.Errorf("olio did not become ready; see %s", c.Log)
	}
	return c, nil
}

// signal sends sig to the master.
func (c *cluster) signal(sig syscall.Signal) { syscall.Kill(c.proc.Pid, sig) }

// pause waits d, and reports false at once if olio exits meanwhile.
func (c *cluster) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.proc.Done():
		return false
	}
}

// settled waits until want workers are members and ready, and none of them runs a
// process in gone (the apps a HUP replaces, the process a kill -9 killed).
func (c *cluster) settled(want int, gone map[int]bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, err := c.WaitSettled(ctx, want, gone, c.proc.Done())
	return err == nil
}

// sample is one router's resources.
type sample struct {
	pid, fds, threads, goroutines int
	rss                           uint64
}

func (c *cluster) sample() (map[int]sample, error) {
	st, err := c.Status(context.Background())
	if err != nil {
		return nil, err
	}
	out := map[int]sample{}
	for _, w := range st.Workers {
		if !w.Member || w.RouterPID == 0 {
			continue
		}
		s := sample{pid: w.RouterPID, goroutines: w.Goroutines}
		if w.Error != "" { // the router's counters are missing
			s.goroutines = -1
		}
		if ents, err := os.ReadDir("/proc/" + strconv.Itoa(w.RouterPID) + "/fd"); err == nil {
			s.fds = len(ents)
		}
		s.rss, s.threads = procStatus(w.RouterPID)
		out[w.Index] = s
	}
	return out, nil
}

// procStatus reads VmRSS and Threads from /proc/pid/status (0 for what it cannot read).
func procStatus(pid int) (rss uint64, threads int) {
	rss, _ = harness.ProcBytes(pid, "status", "VmRSS")
	n, _ := harness.ProcField(pid, "status", "Threads")
	threads, _ = strconv.Atoi(n)
	return rss, threads
}

// event is one disturbance, for explaining failures.
type event struct {
	at   time.Time
	kind string // "hup", "ttin", "ttou", "kill-app", "kill-router"
}

// failure is one failed request.
type failure struct {
	at   time.Time
	what string // "502", "503", "transport", …
}

// load is the clients' tally.
type load struct {
	ok       atomic.Int64
	mu       sync.Mutex
	failures []failure
}

func (l *load) fail(what string) {
	l.mu.Lock()
	l.failures = append(l.failures, failure{time.Now(), what})
	l.mu.Unlock()
}

// client sends a mix of requests until ctx is done: keyed GETs, keyed POSTs with a body,
// slow requests and direct addressing.
func (c *cluster) client(ctx context.Context, l *load, workers func() int) {
	cl := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer cl.CloseIdleConnections()
	body := bytes.Repeat([]byte("b"), 64<<10)
	for ctx.Err() == nil {
		key := "user-" + strconv.Itoa(mrand.IntN(1000))
		var req *http.Request
		switch n := mrand.IntN(100); {
		case n < 70:
			req, _ = http.NewRequest("GET", "http://"+c.Addr+"/k", nil)
		case n < 85:
			req, _ = http.NewRequest("POST", "http://"+c.Addr+"/upload", bytes.NewReader(body))
		case n < 95:
			req, _ = http.NewRequest("GET", "http://"+c.Addr+"/slow?sleep=50", nil)
		default:
			req, _ = http.NewRequest("GET", "http://"+c.Addr+"/direct", nil)
			req.Header.Set("X-Olio-Index", strconv.Itoa(mrand.IntN(max(workers(), 1))))
			req.Header.Set("X-Olio-Secret", c.Secret)
		}
		req.Header.Set("X-Olio-Key", key)
		resp, err := cl.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				l.fail("transport")
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			l.ok.Add(1)
		case resp.StatusCode == http.StatusBadRequest && req.Header.Get("X-Olio-Index") != "":
			l.ok.Add(1) // a direct address past a TTOU that shrank the cluster meanwhile
		default:
			l.fail(strconv.Itoa(resp.StatusCode))
		}
	}
}

func (c *cluster) soak(o options) error {
	var workers atomic.Int64
	workers.Store(int64(o.workers))
	l := &load{}
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < o.clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.client(ctx, l, func() int { return int(workers.Load()) })
		}()
	}
	defer func() {
		stopLoad()
		wg.Wait()
	}()
	if !c.pause(10 * time.Second) { // warm-up
		return errors.New("olio exited during the warm-up; see " + c.Log)
	}
	before, err := c.sample()
	if err != nil {
		return err
	}
	fmt.Printf("soak: %d workers, %d clients, %s, a disturbance every %s\n", o.workers, o.clients, o.duration, o.interval)

	var events []event
	kinds := []string{"hup", "ttin", "kill-app", "ttou", "kill-router"}
	end := time.Now().Add(o.duration)
	for i := 0; time.Now().Before(end); i++ {
		next := time.Now().Add(o.interval)
		kind := kinds[i%len(kinds)]
		n := int(workers.Load())
		ev, gone, n, err := c.disturb(kind, n)
		if err != nil {
			return err
		}
		events = append(events, ev)
		if !c.settled(n, gone) {
			return fmt.Errorf("the cluster did not settle after %s; see %s", kind, c.Log)
		}
		workers.Store(int64(n))
		fmt.Printf("  %s  %-11s settled in %s, %d ok, %d failed\n", time.Now().Format("15:04:05"), kind,
			time.Since(ev.at).Round(time.Millisecond), l.ok.Load(), len(l.failuresCopy()))
		if !c.pause(time.Until(next)) {
			return errors.New("olio exited during the soak; see " + c.Log)
		}
	}
	stopLoad()
	wg.Wait()
	// Let keep-alive connections and idle streams close, then look again.
	if !c.pause(5 * time.Second) {
		return errors.New("olio exited after the load; see " + c.Log)
	}
	after, err := c.sample()
	if err != nil {
		return err
	}
	c.signal(syscall.SIGTERM)
	select {
	case <-c.proc.Done():
	case <-time.After(60 * time.Second):
		return errors.New("olio did not stop within 60s of SIGTERM")
	}
	return report(o, l, events, before, after)
}

// disturb does one disturbance of kind to a cluster of n member workers; it returns the
// event, the pids it expects gone (the apps a HUP replaces, the process a kill -9 killed)
// and the number of workers to expect.
func (c *cluster) disturb(kind string, n int) (event, map[int]bool, int, error) {
	gone := map[int]bool{}
	at := time.Now() // just before the signal or the kill, for explaining failures
	switch kind {
	case "hup":
		st, err := c.Status(context.Background())
		if err != nil {
			return event{}, nil, n, err
		}
		for _, w := range st.Workers {
			gone[w.AppPID] = true
		}
		at = time.Now()
		c.signal(syscall.SIGHUP)
	case "ttin":
		c.signal(syscall.SIGTTIN)
		n++
	case "ttou":
		c.signal(syscall.SIGTTOU)
		n--
	case "kill-app", "kill-router":
		st, err := c.Status(context.Background())
		if err != nil {
			return event{}, nil, n, err
		}
		var members []int
		for j, w := range st.Workers {
			if w.Member {
				members = append(members, j)
			}
		}
		if len(members) == 0 {
			return event{}, nil, n, errors.New("no member workers to kill")
		}
		w := st.Workers[members[randIndex(len(members))]]
		pid := w.AppPID
		if kind == "kill-router" {
			pid = w.RouterPID
		}
		gone[pid] = true
		at = time.Now()
		syscall.Kill(pid, syscall.SIGKILL)
	}
	return event{at: at, kind: kind}, gone, n, nil
}

func randIndex(n int) int {
	i, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	return int(i.Int64())
}

func (l *load) failuresCopy() []failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]failure(nil), l.failures...)
}

// explained says whether a failure is a killed process's in-flight request: a 502 (app
// killed) or a broken connection (router killed) within a moment of a kill -9.
func explained(f failure, events []event) bool {
	for _, e := range events {
		if f.at.Before(e.at.Add(-100*time.Millisecond)) || f.at.After(e.at.Add(2*time.Second)) {
			continue
		}
		switch {
		case e.kind == "kill-app" && f.what == "502":
			return true
		case e.kind == "kill-router" && (f.what == "transport" || f.what == "502"):
			return true
		}
	}
	return false
}

func report(o options, l *load, events []event, before, after map[int]sample) error {
	fails := l.failuresCopy()
	var killed, other []failure
	for _, f := range fails {
		if explained(f, events) {
			killed = append(killed, f)
		} else {
			other = append(other, f)
		}
	}
	fmt.Printf("\nrequests: %d answered, %d failed: %d in flight in a killed process, %d other\n",
		l.ok.Load(), len(fails), len(killed), len(other))
	for _, f := range other {
		fmt.Printf("  unexplained: %s at %s\n", f.what, f.at.Format("15:04:05.000"))
	}
	count := map[string]int{}
	for _, e := range events {
		count[e.kind]++
	}
	fmt.Printf("disturbances: %v\n\n", count)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "router\tpid start\tpid end\tRSS start\tRSS end\tfds start\tfds end\tthreads start\tthreads end\tgoroutines start\tgoroutines end\t")
	idx := map[int]bool{}
	for i := range before {
		idx[i] = true
	}
	for i := range after {
		idx[i] = true
	}
	var order []int
	for i := range idx {
		order = append(order, i)
	}
	sort.Ints(order)
	g := func(n int) string {
		if n < 0 {
			return "n/a"
		}
		return strconv.Itoa(n)
	}
	for _, i := range order {
		b, ok := before[i]
		if !ok {
			b.goroutines = -1
		}
		a, ok := after[i]
		if !ok {
			a.goroutines = -1
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.1f MiB\t%.1f MiB\t%d\t%d\t%d\t%d\t%s\t%s\t\n", i, b.pid, a.pid,
			float64(b.rss)/(1<<20), float64(a.rss)/(1<<20), b.fds, a.fds, b.threads, a.threads, g(b.goroutines), g(a.goroutines))
	}
	tw.Flush()
	if len(other) > 0 {
		return fmt.Errorf("%d requests failed outside a killed process's in-flight ones", len(other))
	}
	return nil
}
