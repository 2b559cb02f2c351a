package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/olio-dev/olio/test/harness"
)

// readyTimeout bounds how long a setup may take to start answering.
const readyTimeout = 60 * time.Second

// stopGrace is how long a setup gets to exit after SIGTERM.
const stopGrace = 10 * time.Second

// bench is what every setup shares: flags, the temp dir, the olio binary
// and the four apps that direct, HAProxy and nginx balance over.
type bench struct {
	cfg   *config
	procs *harness.Procs
	dir   string // temp dir, removed on exit
	olio  string // olio binary
	// example is the embedded example (cmd/olio-demo): the demo handler behind
	// router.Serve. The shared apps are standalone copies of it, and the embedded
	// setups run it as olio's workers: the same app code both ways.
	example string
	apps    []string // addresses of the shared apps
	appPids []int    // and their pids, whose CPU the serving side includes
	engines string   // the prototype proxies (test/bench/engines), built when a setup needs them
}

// setup is one way of putting the apps behind an address.
type setup struct {
	id    string // as in -setups
	name  string // as in the report
	proxy bool   // a single address in front of the apps (wrk can load it)
	start func(ctx context.Context, b *bench) (*instance, error)
}

var setups = []setup{
	{id: "direct", name: "direct", start: startDirect},
	{id: "olio4", name: "olio --workers 4", proxy: true, start: func(ctx context.Context, b *bench) (*instance, error) {
		return startOlio(ctx, b, b.cfg.workers)
	}},
	{id: "olio1", name: "olio --workers 1", proxy: true, start: func(ctx context.Context, b *bench) (*instance, error) {
		return startOlio(ctx, b, 1)
	}},
	{id: "olio4-nohandoff", name: "olio --workers 4 --handoff=false", proxy: true, start: func(ctx context.Context, b *bench) (*instance, error) {
		return startOlio(ctx, b, b.cfg.workers, "--handoff=false")
	}},
	{id: "olio4-accesslog", name: "olio --workers 4 --access-log FILE", proxy: true, start: func(ctx context.Context, b *bench) (*instance, error) {
		return startOlio(ctx, b, b.cfg.workers, "--access-log", filepath.Join(b.dir, "access.log"))
	}},
	{id: "olio4-embedded", name: "olio --embedded --workers 4", proxy: true, start: func(ctx context.Context, b *bench) (*instance, error) {
		return startOlio(ctx, b, b.cfg.workers, "--embedded", "--", b.example)
	}},
	{id: "olio1-embedded", name: "olio --embedded --workers 1", proxy: true, start: func(ctx context.Context, b *bench) (*instance, error) {
		return startOlio(ctx, b, 1, "--embedded", "--", b.example)
	}},
	// The -before binary (an earlier build of olio), for before/after ratios in one run.
	{id: "olio4-before", name: "olio --workers 4 (-before)", proxy: true, start: func(ctx context.Context, b *bench) (*instance, error) {
		return startOlioBin(ctx, b, b.cfg.before, b.cfg.workers)
	}},
	{id: "olio1-before", name: "olio --workers 1 (-before)", proxy: true, start: func(ctx context.Context, b *bench) (*instance, error) {
		return startOlioBin(ctx, b, b.cfg.before, 1)
	}},
	// The -before binary's own demo, embedded: the same handler as the example's.
	{id: "olio4-embedded-before", name: "olio --embedded --workers 4 (-before)", proxy: true, start: func(ctx context.Context, b *bench) (*instance, error) {
		return startOlioBin(ctx, b, b.cfg.before, b.cfg.workers, "--embedded")
	}},
	{id: "haproxy", name: "HAProxy", proxy: true, start: startHAProxy},
	{id: "nginx", name: "nginx", proxy: true, start: startNginx},
	// The prototype proxies of test/bench/engines: one HTTP engine on each leg.
	{id: "fast-proxy", name: "engines: fasthttp → fasthttp", proxy: true, start: engine("fast-proxy")},
	{id: "nethttp-proxy", name: "engines: net/http → ReverseProxy", proxy: true, start: engine("nethttp-proxy")},
	{id: "fast-public", name: "engines: fasthttp → ReverseProxy", proxy: true, start: engine("fast-public")},
	{id: "fast-app", name: "engines: net/http → fasthttp", proxy: true, start: engine("fast-app")},
}

// engine starts the prototype proxy of test/bench/engines in mode over the shared apps.
func engine(mode string) func(context.Context, *bench) (*instance, error) {
	return func(ctx context.Context, b *bench) (*instance, error) {
		port, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		argv := []string{b.engines, "-mode", mode, "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-apps", strings.Join(b.apps, ",")}
		return startProxy(ctx, b, mode, argv, port)
	}
}

// sharedApps reports whether a setup runs over the shared apps rather than its own.
func sharedApps(id string) bool {
	return id == "direct" || id == "haproxy" || id == "nginx" || isEngine(id)
}

// isEngine reports whether a setup is one of test/bench/engines' prototypes.
func isEngine(id string) bool {
	return strings.HasPrefix(id, "fast-") || strings.HasPrefix(id, "nethttp-")
}

// instance is a running setup.
type instance struct {
	target target
	// layer is the processes between the load and the apps, whose CPU and
	// memory the report charges to the setup, and the apps behind them, which
	// the whole serving side adds; for direct, the apps alone.
	layer *layer
	// forwarded is the expected share of requests that take a second hop
	// inside the layer (olio's router-to-router forward), or -1 when the
	// notion does not apply.
	forwarded float64
	// metrics is olio's Prometheus address, where the measured share of
	// forwarded requests comes from; "" for the others.
	metrics string
	proc    *harness.Child // nil for direct
}

func (in *instance) stop() {
	if in.proc != nil {
		in.proc.Stop(stopGrace)
	}
}

// appEnv is the environment of a child: the harness's own, less any OLIO_*
// variable, plus extra.
func appEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OLIO_") && !strings.HasPrefix(kv, "PORT=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// startApps starts the shared apps, one per worker index, as olio itself
// would (PORT, OLIO_INDEX, OLIO_WORKERS): standalone copies of the embedded
// example, which serve the demo handler on $PORT.
func startApps(ctx context.Context, b *bench) error {
	n := b.cfg.workers
	var kids []*harness.Child
	for i := 0; i < n; i++ {
		port, err := harness.FreePort()
		if err != nil {
			return err
		}
		env := appEnv("PORT="+strconv.Itoa(port), "OLIO_INDEX="+strconv.Itoa(i), "OLIO_WORKERS="+strconv.Itoa(n))
		c, err := b.procs.Start(fmt.Sprintf("app %d", i), []string{b.example}, env,
			filepath.Join(b.dir, fmt.Sprintf("app-%d.log", i)))
		if err != nil {
			return err
		}
		kids = append(kids, c)
		b.appPids = append(b.appPids, c.Pid)
		b.apps = append(b.apps, fmt.Sprintf("127.0.0.1:%d", port))
	}
	for i, c := range kids {
		if err := waitHTTP(ctx, c, b.apps[i]); err != nil {
			return err
		}
	}
	return nil
}

func startDirect(_ context.Context, b *bench) (*instance, error) {
	return &instance{target: target{addrs: b.apps, direct: true}, layer: &layer{apps: b.appPids}, forwarded: 0}, nil
}

// startOlio runs `olio serve` with its built-in demo app and extra flags.
func startOlio(ctx context.Context, b *bench, workers int, extra ...string) (*instance, error) {
	return startOlioBin(ctx, b, b.olio, workers, extra...)
}

// startOlioBin is startOlio with the olio binary bin.
func startOlioBin(ctx context.Context, b *bench, bin string, workers int, extra ...string) (*instance, error) {
	s, err := harness.NewServe(b.dir)
	if err != nil {
		return nil, err
	}
	mport, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	maddr := fmt.Sprintf("127.0.0.1:%d", mport)
	argv := s.Args(bin, workers, append([]string{"--metrics", maddr}, extra...)...)
	c, err := b.procs.Start(strings.Join(argv[1:], " "), argv, appEnv(), s.Log)
	if err != nil {
		return nil, err
	}
	in := &instance{
		target: target{addrs: []string{s.Addr}},
		// master and routers; the app children (depth 2) are not the layer's
		// cost, but are the serving side's. An embedded worker is router and
		// app in one process: its layer CPU includes the handler's, which the
		// other setups' layer leaves out, and it has no apps apart.
		layer: &layer{root: c.Pid, maxDepth: 1},
		// the accepting router is independent of the key, so a request is
		// forwarded unless it happens to land on its owner: (N-1)/N at most
		// (a connection handed off to its owner forwards less)
		forwarded: float64(workers-1) / float64(workers),
		metrics:   maddr,
		proc:      c,
	}
	if err := waitOlio(ctx, c, s, workers); err != nil {
		c.Stop(stopGrace)
		return nil, err
	}
	return in, nil
}

// waitOlio waits until the status shows every worker ready, or every worker
// index has answered, then until a request succeeds.
func waitOlio(ctx context.Context, c *harness.Child, s *harness.Serve, workers int) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	seen := map[int]bool{}
	for i := 0; ; i++ {
		if st, err := s.Status(ctx); err == nil && harness.Settled(st, workers, nil) {
			break
		}
		if idx, err := probe(ctx, client, s.Addr, randomKey(i)); err == nil && idx >= 0 {
			seen[idx] = true
			if len(seen) == workers {
				break
			}
		}
		if err := pause(ctx, c, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return waitHTTP(ctx, c, s.Addr)
}

// startHAProxy runs HAProxy in the foreground, hashing X-Olio-Key over the
// shared apps with a consistent hash.
func startHAProxy(ctx context.Context, b *bench) (*instance, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	var servers strings.Builder
	for i, a := range b.apps {
		fmt.Fprintf(&servers, "    server app%d %s\n", i, a)
	}
	cfg := fmt.Sprintf(`# olio bench: HAProxy hashing X-Olio-Key over the apps
global
    nbthread %d
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend bench
    bind 127.0.0.1:%d
    default_backend apps

backend apps
    balance hdr(%s)
    hash-type consistent
%s`, b.cfg.threads, port, keyHeader, servers.String())
	path := filepath.Join(b.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return startProxy(ctx, b, "haproxy", []string{"haproxy", "-db", "-f", path}, port)
}

// startNginx runs nginx in the foreground with everything it writes under
// the temp dir, hashing X-Olio-Key over the apps with keep-alive upstreams.
func startNginx(ctx context.Context, b *bench) (*instance, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	prefix := filepath.Join(b.dir, "nginx")
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		return nil, err
	}
	var servers strings.Builder
	for _, a := range b.apps {
		fmt.Fprintf(&servers, "        server %s;\n", a)
	}
	cfg := fmt.Sprintf(`# olio bench: nginx hashing X-Olio-Key over the apps
worker_processes %[1]d;
error_log %[2]s/error.log warn;
pid %[2]s/nginx.pid;

events {
    worker_connections 8192;
}

http {
    access_log off;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    keepalive_requests 1000000;

    upstream apps {
        hash $http_x_olio_key consistent;
%[3]s        keepalive %[4]d;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:%[5]d;
        location / {
            proxy_pass http://apps;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, b.cfg.threads, prefix, servers.String(), b.cfg.conns, port)
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	argv := []string{"nginx", "-p", prefix, "-c", path, "-e", filepath.Join(prefix, "error.log"), "-g", "daemon off;"}
	return startProxy(ctx, b, "nginx", argv, port)
}

func startProxy(ctx context.Context, b *bench, name string, argv []string, port int) (*instance, error) {
	c, err := b.procs.Start(name, argv, appEnv(), filepath.Join(b.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	in := &instance{
		target:    target{addrs: []string{fmt.Sprintf("127.0.0.1:%d", port)}},
		layer:     &layer{root: c.Pid, maxDepth: -1, apps: b.appPids},
		forwarded: -1,
		proc:      c,
	}
	if err := waitHTTP(ctx, c, in.target.addrs[0]); err != nil {
		c.Stop(stopGrace)
		return nil, err
	}
	return in, nil
}

// waitHTTP polls addr until it answers 200, c exits, or readyTimeout passes.
func waitHTTP(ctx context.Context, c *harness.Child, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	for {
		if _, err := probe(ctx, client, addr, "ready"); err == nil {
			return nil
		}
		if err := pause(ctx, c, 20*time.Millisecond); err != nil {
			return fmt.Errorf("%s not answering on %s: %w", c.Name, addr, err)
		}
	}
}

// probe sends one request with key to addr and returns the index of the app
// that answered (index < 0 if the answer has none); an error unless it got a
// 200.
func probe(ctx context.Context, client *http.Client, addr, key string) (index int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return -1, err
	}
	req.Header.Set(keyHeader, key)
	resp, err := client.Do(req)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return -1, err
	}
	if resp.StatusCode != http.StatusOK {
		return -1, fmt.Errorf("%w %d", errStatus, resp.StatusCode)
	}
	if idx, ok := parseIndex(body); ok {
		return idx, nil
	}
	return -1, nil
}

// pause waits d, failing early if c exits or ctx ends.
func pause(ctx context.Context, c *harness.Child, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-c.Done():
		return c.ExitError()
	case <-ctx.Done():
		return ctx.Err()
	}
}
