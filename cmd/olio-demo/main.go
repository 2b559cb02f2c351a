// Command olio-demo is the example of a Go service that embeds olio: its main hands its
// handler (here olio's built-in demo app, the same code `olio demo` serves on $PORT) to
// router.Serve. Run it under olio, where each worker is one process that routes and
// serves:
//
//	go build -o olio-demo ./cmd/olio-demo
//	olio serve --embedded --workers 4 -- ./olio-demo
//
// or on its own, where it serves the handler on 127.0.0.1:$PORT (8080 without PORT).
package main

import (
	"fmt"
	"os"

	"github.com/olio-dev/olio/router"
	"github.com/olio-dev/olio/router/demo"
)

func main() {
	app := demo.New(router.Index())
	// OnShutdown closes the WebSocket sessions when the worker drains.
	if err := (&router.Server{Handler: app, OnShutdown: app.GoAway}).Serve(); err != nil {
		fmt.Fprintln(os.Stderr, "olio-demo:", err)
		os.Exit(1)
	}
}
