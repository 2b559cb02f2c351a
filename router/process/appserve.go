package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"

	"github.com/olio-dev/olio/router/internal/appleg"
	"github.com/olio-dev/olio/router/internal/httprules"
)

// The glue between serveLocal and the app leg (package appleg): the leg sends the request
// and writes the answer; the router answers a request that failed before any answer
// (localError: a retry on the app's replacement, 502, 504), and joins the client to the app
// after a 101, tracked for a hand-over (switchProtocols).

// newAppLeg is the app leg with this router's hooks: the answer timeout stops at the
// answer's head (answered), a broken client body is the client's fault (clientBody,
// failBody), complaints go to errorLog.
func newAppLeg(errorLog *log.Logger) *appleg.Leg {
	return &appleg.Leg{
		ErrorLog: errorLog,
		Answered: func(req *http.Request, status int) {
			answered(&http.Response{StatusCode: status, Request: req})
		},
		ClientBody: func(body io.ReadCloser) io.Reader { return clientBody{body} },
		BodyBroke: func(err error) bool {
			var be *bodyError
			return errors.As(err, &be) || errors.Is(err, errBodyTimeout)
		},
	}
}

// serveApp serves req through inst's app.
func (r *Router) serveApp(w http.ResponseWriter, req *http.Request, inst *instance) {
	up, err := r.appLeg.Serve(w, req, inst.transport, forwardedOf(req))
	switch {
	case err != nil:
		r.localError(w, req, err, inst)
	case up != nil:
		r.switchProtocols(w, req, up, inst)
	}
}

// switchProtocols joins the client to the app after its 101, as ReverseProxy does: the
// answer goes out on the client's hijacked connection, then bytes are copied both ways
// (the app's side through the tunnel a hand-over can end, tunnelUpgrade) until either side
// ends. resp.Body is the app's side of the connection, never reused.
func (r *Router) switchProtocols(w http.ResponseWriter, req *http.Request, resp *http.Response, inst *instance) {
	defer resp.Body.Close()
	answered(resp) // a 101: the upgrade's counts, and the tunnel a hand-over can end
	if got, asked := httprules.UpgradeType(resp.Header), httprules.UpgradeType(req.Header); !httprules.Printable(got) || !strings.EqualFold(got, asked) {
		r.localError(w, req, fmt.Errorf("router: the app switched to protocol %q when %q was asked for", got, asked), inst)
		return
	}
	back := resp.Body.(io.ReadWriteCloser)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		r.localError(w, req, fmt.Errorf("router: cannot switch protocols: %w", err), inst)
		return
	}
	defer conn.Close()
	defer context.AfterFunc(req.Context(), func() { back.Close() })()
	defer back.Close()
	if writeSwitch(w, brw, resp) != nil {
		return
	}
	done := make(chan struct{}, 2)
	go tunnelCopy(conn, back, done)
	go tunnelCopy(back, conn, done)
	<-done // either side ended: the deferred closes end the other
}

// writeSwitch writes a 101 answer on the client's hijacked connection, with the header the
// handler had set before it and the answer's own, as ReverseProxy does.
func writeSwitch(w http.ResponseWriter, brw *bufio.ReadWriter, resp *http.Response) error {
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = append(h[k], vs...)
	}
	resp.Header, resp.Body = h, nil // Write sends the header alone
	if err := resp.Write(brw); err != nil {
		return err
	}
	return brw.Flush()
}
