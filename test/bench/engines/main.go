// Command engines is the benchmark's prototype proxies: each hashes X-Olio-Key
// (xxhash64 + jump hash, as olio does) over the apps given by -apps, with one HTTP engine on
// each leg, so the benchmark can charge each leg's CPU to its engine in the same run as olio
// and HAProxy:
//
//	fast-proxy     public fasthttp.Server, app leg fasthttp.HostClient (the 40-line proxy)
//	nethttp-proxy  public net/http Server, app leg httputil.ReverseProxy (tuned http.Transport)
//	fast-public    public fasthttp.Server, app leg httputil.ReverseProxy (through fasthttpadaptor)
//	fast-app       public net/http Server, app leg fasthttp.HostClient
//
// They are measuring instruments, not olio: no hop-by-hop cleaning beyond what each library
// does, no limits, no timeouts. A request without a key goes to the first app.
//
//	go run ./test/bench -setups olio1,haproxy,fast-proxy,nethttp-proxy,fast-public,fast-app
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/olio-dev/olio/router/keys"
)

const keyHeader = "X-Olio-Key"

// conns bounds each engine's connections to one app, as olio's idle pool does.
const conns = 1024

func main() {
	mode := flag.String("mode", "fast-proxy", "fast-proxy, nethttp-proxy, fast-public or fast-app")
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (loopback)")
	apps := flag.String("apps", "", "the apps' addresses, comma-separated")
	flag.Parse()
	addrs := strings.Split(*apps, ",")
	if *apps == "" {
		fmt.Fprintln(os.Stderr, "engines: -apps is empty")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "engines:", err)
		os.Exit(1)
	}
	switch *mode {
	case "fast-proxy":
		err = fastServer(fastProxy(addrs)).Serve(ln)
	case "nethttp-proxy":
		err = netServer(netProxy(addrs)).Serve(ln)
	case "fast-public":
		err = fastServer(fasthttpadaptor.NewFastHTTPHandler(netProxy(addrs))).Serve(ln)
	case "fast-app":
		err = netServer(fastApp(addrs)).Serve(ln)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	fmt.Fprintln(os.Stderr, "engines:", err)
	os.Exit(1)
}

// owner is the index of the app that owns key.
func owner(key []byte, n int) int {
	if len(key) == 0 {
		return 0
	}
	return keys.Jump(xxhash.Sum64(key), n)
}

func fastServer(h fasthttp.RequestHandler) *fasthttp.Server {
	return &fasthttp.Server{Handler: h, NoDefaultServerHeader: true, NoDefaultDate: true, IdleTimeout: 90 * time.Second}
}

func netServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second}
}

func hostClients(addrs []string) []*fasthttp.HostClient {
	hcs := make([]*fasthttp.HostClient, len(addrs))
	for i, a := range addrs {
		hcs[i] = &fasthttp.HostClient{Addr: a, MaxConns: conns, MaxIdleConnDuration: 90 * time.Second}
	}
	return hcs
}

// fastProxy is fasthttp on both legs: the client request is sent on as it was parsed.
func fastProxy(addrs []string) fasthttp.RequestHandler {
	hcs := hostClients(addrs)
	return func(ctx *fasthttp.RequestCtx) {
		hc := hcs[owner(ctx.Request.Header.Peek(keyHeader), len(hcs))]
		ctx.Request.Header.Add("X-Forwarded-For", ctx.RemoteIP().String())
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
	}
}

// netProxy is httputil.ReverseProxy with a keep-alive pool as large as olio's.
func netProxy(addrs []string) http.Handler {
	targets := make([]*url.URL, len(addrs))
	for i, a := range addrs {
		targets[i] = &url.URL{Scheme: "http", Host: a}
	}
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(targets[owner([]byte(pr.In.Header.Get(keyHeader)), len(targets))])
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: tr,
	}
}

// fastApp is a net/http handler that sends the request on with fasthttp's client.
func fastApp(addrs []string) http.Handler {
	hcs := hostClients(addrs)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hc := hcs[owner([]byte(r.Header.Get(keyHeader)), len(hcs))]
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod(r.Method)
		req.SetRequestURI(r.URL.RequestURI())
		req.Header.SetHost(r.Host)
		for k, vs := range r.Header {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
		req.Header.Add("X-Forwarded-For", r.RemoteAddr)
		if r.ContentLength != 0 {
			req.SetBodyStream(r.Body, int(r.ContentLength))
		}
		if err := hc.Do(req, resp); err != nil {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		h := w.Header()
		for k, v := range resp.Header.All() {
			h.Add(string(k), string(v))
		}
		w.WriteHeader(resp.StatusCode())
		w.Write(resp.Body())
	})
}
