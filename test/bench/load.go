package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/olio-dev/olio/router"
)

// keyHeader carries the routing key, olio's default --key header:X-Olio-Key.
const keyHeader = "X-Olio-Key"

// maxSamples bounds the latencies kept per run (reservoir sampling past it).
const maxSamples = 1 << 20

// maxPlanned bounds the requests of one fixed-rate run.
const maxPlanned = 5_000_000

// requestTimeout bounds one request, so a stuck setup cannot hang the run.
const requestTimeout = 10 * time.Second

// workload is how requests pick their key.
type workload struct {
	name    string // "random", "conn"
	title   string // for the report
	perConn bool   // one fixed key per connection; else a random key per request
}

var workloads = []workload{
	{name: "random", title: "random key per request"},
	{name: "conn", title: "one key per connection", perConn: true},
}

// target is where the load goes: one address behind a proxy, or (direct)
// one address per app, picked by the key's owner.
type target struct {
	addrs  []string // "127.0.0.1:P"
	direct bool
}

// pick is the index in addrs of the address a request with key goes to.
func (t target) pick(key string) int {
	if t.direct {
		return router.Owner(key, len(t.addrs)) // olio's own routing
	}
	return 0
}

// perConnKey is connection i's key in the one-key-per-connection workload;
// wrk's script (wrk.go) names keys the same way.
func perConnKey(i int) string { return "user-" + strconv.Itoa(i) }

// randomKey is key n of the random workload's key space.
func randomKey(n int) string { return "k" + strconv.Itoa(n) }

// generator is a pool of clients, each with one HTTP/1.1 keep-alive
// connection per address of the target, used by the closed-loop and the
// fixed-rate runs.
type generator struct {
	target target
	wl     workload
	keys   int // key space of the random workload
	slots  []*slot
}

// slot is one client: a connection (one per app for direct) and its
// bookkeeping; only one goroutine uses a slot at a time.
type slot struct {
	conns   []*httpConn // per target address, dialled on first use
	key     string      // fixed key, perConn workload only
	rng     *rand.Rand
	buf     bytes.Buffer
	aff     *affinity
	lat     recorder
	ok      int
	errs    int
	sent    int // fixed-rate runs
	lastErr error
}

func newGenerator(t target, wl workload, conns, keys int) *generator {
	g := &generator{target: t, wl: wl, keys: keys}
	for i := 0; i < conns; i++ {
		s := &slot{
			rng: rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano()))),
			aff: newAffinity(1 << 15),
		}
		for _, a := range t.addrs {
			s.conns = append(s.conns, &httpConn{addr: a})
		}
		if wl.perConn {
			s.key = perConnKey(i)
		}
		s.lat.max = maxSamples / conns
		g.slots = append(g.slots, s)
	}
	return g
}

// close closes the generator's connections.
func (g *generator) close() {
	for _, s := range g.slots {
		for _, c := range s.conns {
			c.close()
		}
	}
}

var errStatus = errors.New("unexpected status")

// do sends one request on s and reads the whole answer.
func (g *generator) do(s *slot) error {
	key := s.key
	if key == "" {
		key = randomKey(s.rng.IntN(g.keys))
	}
	status, err := s.conns[g.target.pick(key)].get(key, &s.buf)
	if err != nil {
		return err
	}
	if status != 200 {
		return fmt.Errorf("%w %d", errStatus, status)
	}
	if idx, ok := parseIndex(s.buf.Bytes()); ok {
		s.aff.add(key, idx)
	}
	return nil
}

func (s *slot) done(lat time.Duration, err error) {
	if err != nil {
		s.errs++
		s.lastErr = err
		return
	}
	s.ok++
	s.lat.add(lat, s.rng)
}

// runStats is the outcome of one run.
type runStats struct {
	ok, errs int
	lastErr  error
	elapsed  time.Duration
	lat      []time.Duration // sorted, successful requests only
	planned  int             // fixed-rate runs: requests due
	sent     int             // fixed-rate runs: requests sent
}

func (r runStats) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func (g *generator) reset() {
	for _, s := range g.slots {
		s.ok, s.errs, s.sent, s.lastErr = 0, 0, 0, nil
		s.lat.reset()
	}
}

func (g *generator) collect(elapsed time.Duration) runStats {
	r := runStats{elapsed: elapsed}
	for _, s := range g.slots {
		r.ok += s.ok
		r.errs += s.errs
		if s.lastErr != nil {
			r.lastErr = s.lastErr
		}
		r.lat = append(r.lat, s.lat.samples...)
	}
	slices.Sort(r.lat)
	return r
}

// affinity merges what every connection saw.
func (g *generator) affinity() *affinity {
	a := newAffinity(1 << 20)
	for _, s := range g.slots {
		a.merge(s.aff)
	}
	return a
}

// closedLoop keeps every connection busy for d: each sends its next request
// as soon as the previous answer is read. Latency is per request.
func (g *generator) closedLoop(ctx context.Context, d time.Duration) runStats {
	g.reset()
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for _, s := range g.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				err := g.do(s)
				s.done(time.Since(t0), err)
			}
		}()
	}
	wg.Wait()
	return g.collect(time.Since(start))
}

// fixedRate sends rate requests per second for d, on schedule whatever the
// answers do (open loop). A scheduler queues each request when it falls due
// and every connection takes the next queued one as soon as it is free; a
// request's latency runs from the time it was due, so waiting for a busy
// connection counts (no coordinated omission). Requests not yet sent 5 s
// after d are given up and show as sent < planned.
func (g *generator) fixedRate(ctx context.Context, rate float64, d time.Duration) runStats {
	g.reset()
	planned := min(int(rate*d.Seconds()), maxPlanned)
	start := time.Now()
	giveUp := start.Add(d + 5*time.Second)
	due := make(chan time.Time, 1<<16)
	var wg sync.WaitGroup
	for _, s := range g.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range due {
				if ctx.Err() != nil || time.Now().After(giveUp) {
					continue // drain: given up
				}
				err := g.do(s)
				s.done(time.Since(t), err)
				s.sent++
			}
		}()
	}
	// The scheduler wakes at most every tick and queues every request due by
	// then, rather than sleeping once per request.
	const tick = 200 * time.Microsecond
	queued := 0
	for queued < planned && ctx.Err() == nil && time.Now().Before(giveUp) {
		elapsed := time.Since(start)
		for n := min(int(elapsed.Seconds()*rate)+1, planned); queued < n; queued++ {
			t := start.Add(time.Duration(float64(queued) * float64(time.Second) / rate))
			select {
			case due <- t:
			case <-ctx.Done():
			}
		}
		next := start.Add(time.Duration(float64(queued) * float64(time.Second) / rate))
		time.Sleep(max(time.Until(next), tick))
	}
	close(due)
	wg.Wait()
	r := g.collect(time.Since(start))
	r.planned = planned
	for _, s := range g.slots {
		r.sent += s.sent
	}
	return r
}

// recorder keeps a uniform sample of at most max latencies (reservoir).
type recorder struct {
	samples []time.Duration
	seen    int
	max     int
}

func (r *recorder) reset() {
	r.samples, r.seen = r.samples[:0], 0
}

func (r *recorder) add(d time.Duration, rng *rand.Rand) {
	r.seen++
	if len(r.samples) < r.max {
		r.samples = append(r.samples, d)
		return
	}
	if j := rng.IntN(r.seen); j < r.max {
		r.samples[j] = d
	}
}
