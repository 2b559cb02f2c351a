package router_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"

	"github.com/olio-dev/olio/router"
)

// A service's main: under `olio serve --embedded -- ./service` each worker process routes
// requests by key and calls the handler for its own keys; run alone, it serves the handler
// on 127.0.0.1:$PORT.
func ExampleServe() {
	rooms := map[string]int{} // each worker's own keys only: no lock across processes
	_ = rooms
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "room %s on worker %d of %d\n", r.Header.Get(router.HeaderKey), router.Index(), router.Workers())
	})
	if os.Getenv("EXAMPLE_RUN") != "" { // Serve blocks until the worker stops
		log.Fatal(router.Serve(h))
	}
}

// Options go in a Server, whose zero value (but for Handler) works: here a logger, the
// hand-over notice before keys leave this process, and a hook for a graceful stop.
func ExampleServer() {
	srv := &router.Server{
		Handler: http.NotFoundHandler(),
		Logger:  slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		OnHandover: func(ctx context.Context, h router.Handover) error {
			log.Printf("keys leave worker %d: %s, %d → %d workers", h.Index, h.Reason, h.Workers, h.NewWorkers)
			return nil // save or hand over their state here, before ctx ends
		},
		OnShutdown: func() { log.Print("stopping: closing WebSockets") },
	}
	if os.Getenv("EXAMPLE_RUN") != "" {
		log.Fatal(srv.Serve())
	}
}

// Owner tells which worker owns a key, as every router computes it: a service can call
// the owner of another key directly (X-Olio-Index and X-Olio-Secret).
func ExampleOwner() {
	fmt.Println(router.Owner("alice", 4), router.Owner("alice", 5))
	// Output: 1 1
}
