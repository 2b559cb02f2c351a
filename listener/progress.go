package listener

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// Progress of long operations (reload, scale) over the control socket. A client that asks
// for it (POST /reload?progress=1, POST /scale?workers=N&progress=1) gets a stream of
// newline-delimited JSON (Content-Type application/x-ndjson): one "progress" event per
// worker as it completes a step, then one "result" line with the answer, its HTTP status
// in "code". A client that does not ask gets the one JSON answer as before; a master that
// does not know the parameter ignores it and answers plain JSON, which a client tells by
// the Content-Type.

// Progress steps.
const (
	StepRestart  = "restart"  // a rolling restart replaced the worker's app
	StepStart    = "start"    // a new worker (scale up) is ready
	StepStop     = "stop"     // a surplus worker (scale down) has stopped
	StepRollBack = "rollback" // a failed reload put the worker back on the previous app
)

// Progress is one worker completing one step of an operation.
type Progress struct {
	Step    string  `json:"step"`
	Index   int     `json:"index"`   // the worker
	Done    int     `json:"done"`    // workers done with this step so far, this one included
	Total   int     `json:"total"`   // workers this step goes through
	AppPID  int     `json:"app_pid"` // the worker's app now (0: none, e.g. stopped)
	Seconds float64 `json:"seconds"` // how long this worker's step took
}

// OpSummary ends an operation's progress stream.
type OpSummary struct {
	Took float64 `json:"took"` // seconds, the whole operation
	// Held is the longest time, in seconds, that a router's last hand-over held requests
	// for keys whose owner was changing (exclusive hand-over), after the operation.
	Held float64 `json:"held"`
	// HeldRequests counts the requests that waited during the operation, for their key's
	// new owner or for their worker's app, in the routers that run after it.
	HeldRequests uint64 `json:"held_requests"`
}

// streamLine is one line of a progress stream.
type streamLine struct {
	Type     string    `json:"type"` // "progress" or "result"
	Progress *Progress `json:"progress,omitempty"`
	// The result: the answer's HTTP status and the answer a client without progress gets.
	Code int `json:"code,omitempty"`
	controlAnswer
	Summary *OpSummary `json:"summary,omitempty"`
}

// ndjson is the progress stream's Content-Type.
const ndjson = "application/x-ndjson"

type progressKey struct{}

// withProgress makes ctx carry f, which long operations call as workers complete steps.
// f may be called from several goroutines at once.
func withProgress(ctx context.Context, f func(Progress)) context.Context {
	return context.WithValue(ctx, progressKey{}, f)
}

// stepper counts one step's workers and reports each to ctx's progress function.
type stepper struct {
	f     func(Progress)
	step  string
	total int
	mu    sync.Mutex
	done  int
}

func newStepper(ctx context.Context, step string, total int) *stepper {
	f, _ := ctx.Value(progressKey{}).(func(Progress))
	return &stepper{f: f, step: step, total: total}
}

// did reports that worker index finished the step, begun at start.
func (s *stepper) did(index, appPID int, start time.Time) {
	if s == nil || s.f == nil {
		return
	}
	s.mu.Lock()
	s.done++
	p := Progress{Step: s.step, Index: index, Done: s.done, Total: s.total, AppPID: appPID,
		Seconds: time.Since(start).Seconds()}
	s.f(p) // under the lock: events reach the client in the order of Done
	s.mu.Unlock()
}

// progressStream writes a progress stream to w, for a control handler.
type progressStream struct {
	mu    sync.Mutex
	w     http.ResponseWriter
	enc   *json.Encoder
	start time.Time
}

// streamProgress answers with a progress stream when the client asked for one (nil
// otherwise), sending the header at once.
func streamProgress(w http.ResponseWriter, r *http.Request) *progressStream {
	if r.URL.Query().Get("progress") != "1" {
		return nil
	}
	w.Header().Set("Content-Type", ndjson)
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	return &progressStream{w: w, enc: json.NewEncoder(w), start: time.Now()}
}

func (s *progressStream) progress(p Progress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enc.Encode(streamLine{Type: "progress", Progress: &p}) // a client that went away: the operation goes on
	http.NewResponseController(s.w).Flush()
}

// result ends the stream with the operation's answer and sum, whose Took it sets.
func (s *progressStream) result(code int, a controlAnswer, sum *OpSummary) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sum == nil {
		sum = &OpSummary{}
	}
	sum.Took = time.Since(s.start).Seconds()
	s.enc.Encode(streamLine{Type: "result", Code: code, controlAnswer: a, Summary: sum})
}

// heldCounts asks the routers how many requests they have held so far, by router pid
// (a router replaced during an operation starts again from zero).
func (m *Master) heldCounts(ctx context.Context) map[int]uint64 {
	ctx, cancel := context.WithTimeout(ctx, StatsTimeout)
	defer cancel()
	st, stats := m.gather(ctx)
	out := map[int]uint64{}
	for i, s := range stats {
		if s != nil {
			out[st.Workers[i].RouterPID] = s.Held
		}
	}
	return out
}

// opSummary is what the routers say after an operation: the requests they held since
// before (heldCounts), and their longest last hold.
func (m *Master) opSummary(ctx context.Context, before map[int]uint64) *OpSummary {
	ctx, cancel := context.WithTimeout(ctx, StatsTimeout)
	defer cancel()
	st, stats := m.gather(ctx)
	sum := &OpSummary{}
	for i, s := range stats {
		if s == nil {
			continue
		}
		sum.Held = max(sum.Held, s.LastHold.Seconds())
		if b := before[st.Workers[i].RouterPID]; s.Held >= b {
			sum.HeldRequests += s.Held - b
		}
	}
	return sum
}
