package main

// The startup scenario: for each of -sizes worker counts, the time
// from exec to "all workers ready", each router's resident memory (the
// target is at most 15 MiB), the master's, and the memory of the yamux mesh:
// router RSS after every router has forwarded to every peer, less router RSS
// after the same number of requests served locally.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/olio-dev/olio/listener"
	"github.com/olio-dev/olio/test/harness"
)

// routerRSSTarget is the bound on one idle router's resident memory that olio sets itself.
const routerRSSTarget = 15 << 20

// settle is the quiet time before each RSS reading, so that what a phase's
// last requests left behind (goroutines ending, buffers freed) is the same
// for every reading.
const settle = time.Second

// meshClients bounds the concurrent connections that force the mesh.
const meshClients = 4

// startupSample is what one start of `olio serve --workers N` measured.
type startupSample struct {
	Workers     int           `json:"workers"`
	Ready       time.Duration `json:"ready_ns"`     // exec → "all workers ready"
	OlioStartup string        `json:"olio_startup"` // the line's own startup= figure
	MasterRSS   uint64        `json:"master_rss"`
	RouterRSS   []uint64      `json:"router_rss"`  // idle, per router
	RouterAnon  []uint64      `json:"router_anon"` // idle RssAnon: the router's own pages
	RouterPSS   []uint64      `json:"router_pss"`  // idle Pss: shared pages divided among their users
	AppRSS      []uint64      `json:"app_rss"`
	LocalRSS    []uint64      `json:"local_rss"` // after every router served requests locally
	MeshRSS     []uint64      `json:"mesh_rss"`  // after every router forwarded to every peer
	Conns       int           `json:"conns"`     // connections opened to reach every router (both phases)
	Accepts     []int         `json:"accepts"`   // per router: how many of them it accepted
	Requests    int           `json:"requests"`
	Errors      int           `json:"errors"`
	Forwarded   uint64        `json:"forwarded"` // olio's forwarded counters, summed, after the mesh
	// Goroutines and FDs per router (median) idle and after the mesh, from
	// olio status.
	GoroutinesIdle int           `json:"goroutines_idle"`
	GoroutinesMesh int           `json:"goroutines_mesh"`
	FDsIdle        int           `json:"fds_idle"`
	FDsMesh        int           `json:"fds_mesh"`
	Stop           time.Duration `json:"stop_ns"`  // graceful stop of the whole tree
	Leftover       int           `json:"leftover"` // routers and apps alive after the stop (must be 0)
}

// runStartup measures each size cfg.rounds times, one olio at a time.
func runStartup(ctx context.Context, b *bench, root string) error {
	cfg := b.cfg
	load0 := loadAvg()
	fmt.Fprintf(os.Stderr, "startup of %v workers, %d rounds; load average %s\n", cfg.sizes, cfg.rounds, load0)
	res := map[int][]startupSample{}
	for round := 0; round < cfg.rounds; round++ {
		for _, n := range cfg.sizes {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := startupOnce(ctx, b, n)
			if err != nil {
				return fmt.Errorf("round %d, %d workers: %w", round+1, n, err)
			}
			res[n] = append(res[n], s)
			fmt.Fprintf(os.Stderr, "round %d/%d, %d workers: ready %s, router RSS median %s, mesh +%s (%d conns), stop %s, leftover %d\n",
				round+1, cfg.rounds, n, fmtDur(float64(s.Ready)), fmtMiB(medianU(s.RouterRSS)),
				fmtMiB(float64(sumU(s.MeshRSS))-float64(sumU(s.LocalRSS))), s.Conns, fmtDur(float64(s.Stop)), s.Leftover)
		}
	}
	meta := reportMeta{
		date:    time.Now(),
		machine: describeMachine(),
		commit:  gitDescribe(root),
		settings: fmt.Sprintf("olio serve --workers N (demo app), one at a time; %d rounds (medians); at most %d connections at once; load average %s before, %s after",
			cfg.rounds, meshClients, load0, loadAvg()),
	}
	report := renderStartup(meta, cfg.sizes, res)
	fmt.Print(report)
	raw := map[string][]startupSample{}
	for n, ss := range res {
		raw[strconv.Itoa(n)] = ss
	}
	return writeReport(root, cfg.out, report, raw)
}

// startupOnce starts n workers, reads their memory idle, after local
// requests and after the mesh, and stops them.
func startupOnce(ctx context.Context, b *bench, n int) (startupSample, error) {
	s := startupSample{Workers: n}
	o, err := startServe(ctx, b, n)
	if err != nil {
		return s, err
	}
	defer o.stop()
	line, err := o.readyLine(ctx)
	if err != nil {
		return s, err
	}
	s.Ready = time.Since(o.started)
	if t, ok := logTime(line); ok && t.After(o.started) {
		s.Ready = t.Sub(o.started)
	}
	s.OlioStartup, _ = logValue(line, "startup")

	st, err := o.Status(ctx)
	if err != nil {
		return s, err
	}
	if len(st.Workers) != n {
		return s, fmt.Errorf("olio status lists %d workers, want %d", len(st.Workers), n)
	}
	tree := processTree(st)
	read := func() ([]uint64, error) {
		if err := pause(ctx, o.proc, settle); err != nil {
			return nil, err
		}
		return routerRSS(st)
	}
	if err := s.readIdle(st, read); err != nil {
		return s, err
	}
	if err := s.readTouched(ctx, o, n, read); err != nil {
		return s, err
	}

	t0 := time.Now()
	o.stop()
	s.Stop = time.Since(t0)
	for _, k := range tree {
		if k.Alive() {
			s.Leftover++
		}
	}
	return s, nil
}

// processTree is the routers and apps of st, to check that the stop ended them all.
func processTree(st *listener.Status) []harness.ProcKey {
	var tree []harness.ProcKey
	for _, w := range st.Workers {
		for _, pid := range []int{w.RouterPID, w.AppPID} {
			if ps, err := harness.ReadStat(pid); err == nil {
				tree = append(tree, ps.ProcKey)
			}
		}
	}
	return tree
}

// readIdle fills in the memory, goroutines and fds of the idle cluster st; read settles
// and reads the routers' RSS.
func (s *startupSample) readIdle(st *listener.Status, read func() ([]uint64, error)) error {
	var err error
	if s.RouterRSS, err = read(); err != nil {
		return err
	}
	for _, w := range st.Workers {
		if v, err := harness.ProcBytes(w.RouterPID, "status", "RssAnon"); err == nil {
			s.RouterAnon = append(s.RouterAnon, v)
		}
		if v, err := harness.ProcBytes(w.RouterPID, "smaps_rollup", "Pss"); err == nil {
			s.RouterPSS = append(s.RouterPSS, v)
		}
	}
	s.GoroutinesIdle, s.FDsIdle = perRouter(st)
	if s.MasterRSS, err = vmRSS(st.PID); err != nil {
		return err
	}
	for _, w := range st.Workers {
		if v, err := vmRSS(w.AppPID); err == nil {
			s.AppRSS = append(s.AppRSS, v)
		}
	}
	return nil
}

// readTouched sends the same requests twice, reading the routers' RSS after each: first
// each served by the router that accepted it, so the routers' HTTP side is warm; then
// addressed to every peer, so that only the mesh differs.
func (s *startupSample) readTouched(ctx context.Context, o *served, n int, read func() ([]uint64, error)) error {
	s.Accepts = make([]int, n)
	for _, peers := range []bool{false, true} {
		m := touchAll(ctx, o.Addr, o.Secret, n, peers)
		for i, a := range m.accepts {
			s.Accepts[i] += a
		}
		s.Conns += m.conns
		s.Requests += m.requests
		s.Errors += m.errors
		if m.err != nil {
			return m.err
		}
		rss, err := read()
		if err != nil {
			return err
		}
		if peers {
			s.MeshRSS = rss
		} else {
			s.LocalRSS = rss
		}
	}
	if st1, err := o.Status(ctx); err == nil {
		for _, w := range st1.Workers {
			s.Forwarded += w.Forwarded
		}
		s.GoroutinesMesh, s.FDsMesh = perRouter(st1)
	}
	return nil
}

// routerRSS reads VmRSS of every router of st (status's rss_bytes is router
// and app together).
func routerRSS(st *listener.Status) ([]uint64, error) {
	var out []uint64
	for _, w := range st.Workers {
		v, err := vmRSS(w.RouterPID)
		if err != nil {
			return nil, fmt.Errorf("router %d: %w", w.Index, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// perRouter is the median goroutine and open fd count of the routers.
func perRouter(st *listener.Status) (goroutines, fds int) {
	g := medianOf(st.Workers, func(w listener.WorkerStatus) float64 { return float64(w.Goroutines) })
	f := medianOf(st.Workers, func(w listener.WorkerStatus) float64 { return float64(w.OpenFDs) })
	return int(g), int(f)
}

// vmRSS is a process's resident set size in bytes, from /proc/<pid>/status.
func vmRSS(pid int) (uint64, error) { return harness.ProcBytes(pid, "status", "VmRSS") }

// touched is what touchAll did.
type touched struct {
	conns, requests, errors int
	accepts                 []int // per router, the connections it accepted
	err                     error
}

// touchAll opens fresh connections until it has held one on every router.
// The first request on a connection carries no key, so the router that
// accepted it serves it and the demo app's answer names that router. On a
// connection to a router not yet reached it then sends n-1 more requests:
// with peers, one to each other worker by X-Olio-Index and the secret (so
// the router opens its yamux session to every peer; direct addressing is
// never handed off); without, keyless ones it serves itself. A connection to
// a router already reached is closed at once.
func touchAll(ctx context.Context, addr, secret string, n int, peers bool) touched {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tc := &toucher{addr: addr, secret: secret, n: n, peers: peers,
		reached: make([]bool, n), left: n, maxConns: 200 * n, t: touched{accepts: make([]int, n)}}
	var wg sync.WaitGroup
	for range meshClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && tc.touchOne(ctx) {
			}
		}()
	}
	wg.Wait()
	t := tc.t
	if t.err == nil && tc.left > 0 {
		t.err = fmt.Errorf("reached %d of %d routers in %d connections", n-tc.left, n, t.conns)
	}
	if t.err == nil && ctx.Err() != nil {
		t.err = ctx.Err()
	}
	return t
}

// toucher is the state touchAll's clients share.
type toucher struct {
	addr, secret string
	n            int
	peers        bool
	maxConns     int

	mu      sync.Mutex
	reached []bool
	left    int
	t       touched
}

// touchOne opens one connection; if its router is one not reached before, it sends the
// n−1 requests on it. It reports whether to go on.
func (tc *toucher) touchOne(ctx context.Context) (more bool) {
	tc.mu.Lock()
	tc.t.conns++
	tc.mu.Unlock()
	c, err := dialRaw(ctx, tc.addr)
	if err != nil {
		tc.record(&rawConn{}, err)
		return false
	}
	acc, err := c.get(ctx, nil)
	mine, more := false, true
	if err == nil {
		mine, more = tc.claim(acc)
	}
	if mine {
		err = tc.sendAll(ctx, c, acc)
	}
	c.close()
	tc.record(c, err)
	return more && err == nil
}

// sendAll sends on c, accepted by router acc, one request for each other worker: served
// by acc itself, or with peers addressed to that worker.
func (tc *toucher) sendAll(ctx context.Context, c *rawConn, acc int) error {
	for j := 0; j < tc.n; j++ {
		if j == acc {
			continue
		}
		var hdr []string
		if tc.peers {
			hdr = []string{"X-Olio-Index: " + strconv.Itoa(j), "X-Olio-Secret: " + tc.secret}
		}
		got, err := c.get(ctx, hdr)
		if err != nil {
			return err
		}
		if tc.peers && got != j {
			return fmt.Errorf("X-Olio-Index %d answered by worker %d", j, got)
		}
	}
	return nil
}

// claim counts a connection accepted by router i and reports whether it is the first to
// reach i, and whether to go on.
func (tc *toucher) claim(i int) (mine, more bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if i < 0 || i >= tc.n {
		return false, true
	}
	tc.t.accepts[i]++
	if !tc.reached[i] {
		tc.reached[i], mine = true, true
		tc.left--
	}
	return mine, tc.left > 0 && tc.t.conns < tc.maxConns && tc.t.err == nil
}

// record adds what connection c did, and keeps the first error.
func (tc *toucher) record(c *rawConn, err error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.t.requests += c.requests
	tc.t.errors += c.errors
	if err != nil && tc.t.err == nil {
		tc.t.err = err
	}
}

// rawConn is one client connection that sends GET / with given headers and
// reads the demo app's answer (net/http's client would pick its own
// connection for each request; here the connection is the point).
type rawConn struct {
	c                net.Conn
	br               *bufio.Reader
	requests, errors int
}

func dialRaw(ctx context.Context, addr string) (*rawConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, br: bufio.NewReader(c)}, nil
}

// get sends one request with the extra header lines and returns the index
// of the worker whose app answered.
func (r *rawConn) get(ctx context.Context, header []string) (int, error) {
	r.requests++
	idx, err := r.roundTrip(ctx, header)
	if err != nil {
		r.errors++
	}
	return idx, err
}

func (r *rawConn) roundTrip(ctx context.Context, header []string) (int, error) {
	deadline := time.Now().Add(requestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := r.c.SetDeadline(deadline); err != nil {
		return -1, err
	}
	var req strings.Builder
	req.WriteString("GET / HTTP/1.1\r\nHost: bench\r\n")
	for _, h := range header {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(r.c, req.String()); err != nil {
		return -1, err
	}
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		return -1, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if err != nil {
		return -1, err
	}
	if resp.StatusCode != http.StatusOK {
		return -1, fmt.Errorf("%w %d: %s", errStatus, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	idx, ok := parseIndex(body)
	if !ok {
		return -1, fmt.Errorf("%w: no index in %q", errProtocol, body)
	}
	return idx, nil
}

func (r *rawConn) close() { r.c.Close() }

// renderStartup is the startup scenario's markdown report.
func renderStartup(meta reportMeta, sizes []int, res map[int][]startupSample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## olio startup and memory — %s\n\n", meta.date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- machine: %s\n- olio: %s\n- run: %s\n", meta.machine, meta.commit, meta.settings)

	startupTable(&b, "start and idle memory", "| workers | processes | exec → all workers ready | (olio's own) | router RSS min / median / max | routers ≤ 15 MiB | router RssAnon / Pss median | routers' sum | master RSS | app RSS median | graceful stop | left after stop |", sizes, res, startupRow)
	startupTable(&b, "the yamux mesh", "| workers | sessions n·(n−1) | routers' sum: idle | after local requests | after the mesh | mesh Δ | per router | per session | router goroutines / fds, idle → mesh | connections / requests | accepted per router min / median / max | errors |", sizes, res, meshRow)
	b.WriteString(startupNotes)
	return b.String()
}

// startupTable writes a section of the startup report: its title, the table's header, and
// a row for each size that has rounds.
func startupTable(b *strings.Builder, title, header string, sizes []int, res map[int][]startupSample, row func(int, []startupSample) string) {
	fmt.Fprintf(b, "\n### %s\n\n%s\n", title, header)
	b.WriteString("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, n := range sizes {
		if ss := res[n]; len(ss) > 0 {
			b.WriteString(row(n, ss))
		}
	}
}

// startupRow is the start-and-idle-memory row of the rounds ss with n workers.
func startupRow(n int, ss []startupSample) string {
	med := func(f func(startupSample) float64) float64 { return medianOf(ss, f) }
	over, left := 0, 0
	for _, s := range ss {
		left += s.Leftover
		for _, v := range s.RouterRSS {
			if v > routerRSSTarget {
				over++
			}
		}
	}
	within := "all"
	if over > 0 {
		within = fmt.Sprintf("%d over", over)
	}
	return fmt.Sprintf("| %d | %d | %s | %s | %s / %s / %s | %s | %s | %s | %s | %s | %s | %d |\n",
		n, 2*n+1,
		fmtDur(med(func(s startupSample) float64 { return float64(s.Ready) })),
		medianDurStr(ss),
		fmtMiB(med(func(s startupSample) float64 { return float64(slices.Min(s.RouterRSS)) })),
		fmtMiB(med(func(s startupSample) float64 { return medianU(s.RouterRSS) })),
		fmtMiB(med(func(s startupSample) float64 { return float64(slices.Max(s.RouterRSS)) })),
		within,
		fmtMiB(med(func(s startupSample) float64 { return medianU(s.RouterAnon) }))+" / "+
			fmtMiB(med(func(s startupSample) float64 { return medianU(s.RouterPSS) })),
		fmtMiB(med(func(s startupSample) float64 { return float64(sumU(s.RouterRSS)) })),
		fmtMiB(med(func(s startupSample) float64 { return float64(s.MasterRSS) })),
		fmtMiB(med(func(s startupSample) float64 { return medianU(s.AppRSS) })),
		fmtDur(med(func(s startupSample) float64 { return float64(s.Stop) })),
		left)
}

// meshRow is the yamux-mesh row of the rounds ss with n workers.
func meshRow(n int, ss []startupSample) string {
	med := func(f func(startupSample) float64) float64 { return medianOf(ss, f) }
	sessions := n * (n - 1)
	delta := med(func(s startupSample) float64 { return float64(sumU(s.MeshRSS)) - float64(sumU(s.LocalRSS)) })
	errs := 0
	for _, s := range ss {
		errs += s.Errors
	}
	perSession := "—"
	if sessions > 0 {
		perSession = fmtKiB(delta / float64(sessions))
	}
	return fmt.Sprintf("| %d | %d | %s | %s | %s | %s | %s | %s | %.0f / %.0f → %.0f / %.0f | %.0f / %.0f | %.0f / %.0f / %.0f | %d |\n",
		n, sessions,
		fmtMiB(med(func(s startupSample) float64 { return float64(sumU(s.RouterRSS)) })),
		fmtMiB(med(func(s startupSample) float64 { return float64(sumU(s.LocalRSS)) })),
		fmtMiB(med(func(s startupSample) float64 { return float64(sumU(s.MeshRSS)) })),
		fmtMiB(delta), fmtMiB(delta/float64(n)), perSession,
		med(func(s startupSample) float64 { return float64(s.GoroutinesIdle) }),
		med(func(s startupSample) float64 { return float64(s.FDsIdle) }),
		med(func(s startupSample) float64 { return float64(s.GoroutinesMesh) }),
		med(func(s startupSample) float64 { return float64(s.FDsMesh) }),
		med(func(s startupSample) float64 { return float64(s.Conns) }),
		med(func(s startupSample) float64 { return float64(s.Requests) }),
		med(func(s startupSample) float64 { return float64(slices.Min(s.Accepts)) }),
		med(func(s startupSample) float64 { return medianOf(s.Accepts, func(a int) float64 { return float64(a) }) }),
		med(func(s startupSample) float64 { return float64(slices.Max(s.Accepts)) }),
		errs)
}

// startupNotes says how to read the startup report.
const startupNotes = `
How to read it: medians over the rounds; one olio at a time, each stopped
(and checked gone) before the next. "exec → all workers ready" runs from just
before the exec to the master's log line (its millisecond timestamp); olio's
own figure is the line's startup= field. RSS is VmRSS from /proc/<pid>/status
of each router alone (olio status's rss_bytes adds the app), read after a
quiet second; RssAnon is the part not backed by a file (the binary's pages,
shared by every router, are in VmRSS but not in RssAnon); Pss (from
smaps_rollup) divides each shared page among the processes that map it.
processes is the master, the routers and the apps. For the mesh, every
router is reached by a fresh connection (the first, keyless request names
the router that accepted it) that then sends n−1 requests: first served
by that router itself ("after local requests"), then one to each other worker
by X-Olio-Index with the secret, which makes each router open its yamux
session to every peer ("after the mesh"). The mesh Δ is the difference of the
two, both ends of every session; per session divides it by n·(n−1).
"accepted per router" counts, over both phases, the connections each router
accepted from the one shared listening socket (the kernel's choice).
`

// medianDurStr is the median of the rounds' own startup= figures.
func medianDurStr(ss []startupSample) string {
	var ds []float64
	for _, s := range ss {
		if d, err := time.ParseDuration(s.OlioStartup); err == nil {
			ds = append(ds, float64(d))
		}
	}
	return fmtDur(median(ds))
}

func sumU(xs []uint64) uint64 {
	var t uint64
	for _, x := range xs {
		t += x
	}
	return t
}

func medianU(xs []uint64) float64 {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x)
	}
	return median(f)
}

func fmtMiB(bytes float64) string {
	if math.IsNaN(bytes) {
		return "—"
	}
	return fmt.Sprintf("%.1f MiB", bytes/(1<<20))
}

func fmtKiB(bytes float64) string {
	if math.IsNaN(bytes) {
		return "—"
	}
	return fmt.Sprintf("%.1f KiB", bytes/(1<<10))
}
