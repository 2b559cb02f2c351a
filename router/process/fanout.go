package process

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"unicode/utf8"

	"github.com/olio-dev/olio/router/internal/httprules"
)

// FanoutIndex is the X-Olio-Index value (with the right X-Olio-Secret) that sends one
// request to every worker and answers with a JSON array of FanoutAnswer, one per worker in
// index order.
const FanoutIndex = "*"

// Fan-out bounds: the request body is read once and replayed to every worker, and each
// worker's answer is buffered; both are capped.
const (
	MaxFanoutBody   = 1 << 20 // request body; larger gets 413
	MaxFanoutAnswer = 1 << 20 // each worker's response body; the rest is dropped (Truncated)
)

// FanoutAnswer is one worker's answer to a fanned-out request.
type FanoutAnswer struct {
	Index   int         `json:"index"`
	Status  int         `json:"status"`
	Headers http.Header `json:"headers"`
	// Body is the response body when it is UTF-8 text; otherwise it is empty and
	// BodyBase64 holds the body base64-encoded.
	Body       string `json:"body"`
	BodyBase64 string `json:"body_base64,omitempty"`
	Truncated  bool   `json:"truncated,omitempty"` // the body was longer than MaxFanoutAnswer
}

// fanout sends req to every worker, this one through its app and the others through
// their routers, and answers with every answer. Each leg gets its own copy of the
// request and of the body.
func (r *Router) fanout(w http.ResponseWriter, req *http.Request) {
	workers := r.workers()
	if workers <= 0 {
		w.Header().Set("Retry-After", "1")
		r.fail(w, http.StatusServiceUnavailable, "olio: no workers to fan out to")
		return
	}
	if httprules.HasToken(req.Header["Connection"], "upgrade") {
		r.fail(w, http.StatusBadRequest, "olio: X-Olio-Index: * cannot carry a connection upgrade")
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, MaxFanoutBody+1))
	if err != nil {
		r.fail(w, http.StatusBadRequest, "olio: reading the request body: "+err.Error())
		return
	}
	if len(body) > MaxFanoutBody {
		r.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("olio: a fanned-out request body may hold at most %d bytes", MaxFanoutBody))
		return
	}
	stripOlio(req.Header)

	// The legs run without the request's context values, but end when the client goes
	// away. They carry a server's, so that a copy that fails — the answer cut at
	// MaxFanoutAnswer, or broken off by the app — ends the leg at once with
	// http.ErrAbortHandler, as under a real server (ReverseProxy and the other legs panic
	// with it only there), and closes that connection to the app instead of reading on.
	srv, _ := req.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		srv = &http.Server{}
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), http.ServerContextKey, srv))
	defer cancel()
	defer context.AfterFunc(req.Context(), cancel)()

	answers := make([]FanoutAnswer, workers)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = r.fanoutLeg(ctx, req, body, i)
		}()
	}
	wg.Wait()
	if req.Context().Err() != nil {
		return // nobody reads the answer
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	json.NewEncoder(w).Encode(answers)
}

// fanoutLeg sends one copy of req to worker i and records its answer.
func (r *Router) fanoutLeg(ctx context.Context, req *http.Request, body []byte, i int) (a FanoutAnswer) {
	out := req.Clone(ctx)
	out.ContentLength = int64(len(body))
	out.Body = http.NoBody
	if len(body) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(body))
	}
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	out.TransferEncoding = nil
	rec := &fanoutWriter{header: http.Header{}}
	func() {
		defer func() {
			// A copy that failed (see fanout) ends here; the answer is what was kept.
			if v := recover(); v != nil && v != http.ErrAbortHandler {
				panic(v)
			}
		}()
		if i == r.index {
			r.serveLocal(rec, out, nil)
		} else {
			r.counters.forwardedOut.Add(1)
			r.forward(rec, out.WithContext(context.WithValue(ctx, ownerKey{}, i)))
		}
	}()
	a = FanoutAnswer{Index: i, Status: rec.status, Headers: rec.header, Truncated: rec.truncated}
	if a.Status == 0 {
		a.Status = http.StatusOK
	}
	a.setBody(rec.body.Bytes())
	return a
}

// setBody stores b as text when it is UTF-8, else base64-encoded.
func (a *FanoutAnswer) setBody(b []byte) {
	if utf8.Valid(b) {
		a.Body = string(b)
	} else {
		a.BodyBase64 = base64.StdEncoding.EncodeToString(b)
	}
}

// fanoutWriter buffers one leg's response, up to MaxFanoutAnswer bytes of body.
type fanoutWriter struct {
	header    http.Header
	status    int
	body      bytes.Buffer
	truncated bool
}

func (f *fanoutWriter) Header() http.Header { return f.header }

func (f *fanoutWriter) WriteHeader(code int) {
	if f.status == 0 && code >= 200 {
		f.status = code
	}
}

// errFanoutCut ends a fan-out leg whose answer went past MaxFanoutAnswer.
var errFanoutCut = errors.New("router: a fanned-out answer was cut at MaxFanoutAnswer bytes")

// Write keeps what fits; past MaxFanoutAnswer it fails, so that the leg stops reading the
// answer (and closes its connection) instead of reading the rest only to drop it.
func (f *fanoutWriter) Write(p []byte) (int, error) {
	if f.status == 0 {
		f.status = http.StatusOK
	}
	if room := MaxFanoutAnswer - f.body.Len(); len(p) > room {
		f.body.Write(p[:room])
		f.truncated = true
		return room, errFanoutCut
	}
	f.body.Write(p)
	return len(p), nil
}

// Flush does nothing: the answer is sent whole.
func (f *fanoutWriter) Flush() {}
