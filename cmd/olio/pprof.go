//go:build pprof

package main

// Built with -tags pprof, every olio process serves net/http/pprof on loopback when
// $OLIO_PPROF is set: the master on $OLIO_PPROF, router i on its port + 1 + i. A developer
// tool for profiling the hot path under load; release builds do not include it.

import (
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"strconv"
)

func init() {
	base := os.Getenv("OLIO_PPROF")
	if base == "" {
		return
	}
	host, port, err := net.SplitHostPort(base)
	if err != nil {
		return
	}
	p, _ := strconv.Atoi(port)
	for i, a := range os.Args {
		if a == "--index" && i+1 < len(os.Args) {
			n, _ := strconv.Atoi(os.Args[i+1])
			p += 1 + n
		}
	}
	if len(os.Args) > 1 && os.Args[1] == "demo" {
		return
	}
	go http.ListenAndServe(net.JoinHostPort(host, strconv.Itoa(p)), nil)
}
