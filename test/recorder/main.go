// Command recorder is the app of the exclusive-ownership tests (test/overlap_test.go): it
// records, for every keyed request, which process served it and when, so that the tests
// can check that no key was ever served by two processes at the same time.
//
// It serves through router.Serve, so the same binary runs as a plain app
// (olio serve -- recorder, serving on 127.0.0.1:$PORT) and as an embedded worker
// (olio serve --embedded -- recorder). Every request with an X-Olio-Key header appends one
// line to $RECORDER_DIR/<pid>.log, written in one write on a file opened with O_APPEND:
//
//	KEY PID INDEX START END
//
// KEY is path-escaped, INDEX is $OLIO_INDEX, START and END are CLOCK_MONOTONIC
// nanoseconds (one clock for the whole machine, so records of different processes
// compare) taken when the handler begins and when it has done its work, before it
// answers. The work is a wait of ?ms=N milliseconds (default 5, at most 1000), cut short
// if the client goes away. The answer is the demo app's JSON: {"index":…,"pid":…,…}.
//
// It also records the hand-over notices olio sends before keys leave it — a POST of the
// Handover JSON to /olio/handover (olio serve --handover-path /olio/handover), or, embedded,
// Server.OnHandover — as lines in $RECORDER_DIR/handover-<pid>.notices:
//
//	PID REASON WORKERS NEW_WORKERS
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/olio-dev/olio/router"
	"golang.org/x/sys/unix"
)

// EnvDir names the directory the records go to.
const EnvDir = "RECORDER_DIR"

const (
	defaultWork = 5 * time.Millisecond
	maxWork     = time.Second
)

func main() {
	dir := os.Getenv(EnvDir)
	if dir == "" {
		fmt.Fprintln(os.Stderr, "recorder: "+EnvDir+" is not set: set it to the directory that gets one <pid>.log of request records per process")
		os.Exit(2)
	}
	name := filepath.Join(dir, strconv.Itoa(os.Getpid())+".log")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "recorder:", err)
		os.Exit(1)
	}
	rec := &recorder{out: f, pid: os.Getpid(), handovers: filepath.Join(dir, "handover-"+strconv.Itoa(os.Getpid())+".notices")}
	srv := &router.Server{Handler: rec, OnHandover: func(_ context.Context, h router.Handover) error { return rec.noteHandover(h) }}
	if err := srv.Serve(); err != nil {
		fmt.Fprintln(os.Stderr, "recorder:", err)
		os.Exit(1)
	}
}

// recorder is the handler: it waits ?ms, records the request, answers.
type recorder struct {
	out       *os.File
	pid       int
	handovers string // where hand-over notices are recorded
}

// HandoverPath is where the tests have olio POST hand-over notices (--handover-path).
const HandoverPath = "/olio/handover"

// noteHandover records one hand-over notice.
func (rec *recorder) noteHandover(h router.Handover) error {
	f, err := os.OpenFile(rec.handovers, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%d %s %d %d\n", rec.pid, h.Reason, h.Workers, h.NewWorkers)
	return err
}

// answer is the demo app's answer, as the tests decode it.
type answer struct {
	Index  int    `json:"index"`
	PID    int    `json:"pid"`
	Method string `json:"method"`
	Path   string `json:"path"`
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == HandoverPath && r.Method == http.MethodPost {
		var h router.Handover
		if err := json.NewDecoder(r.Body).Decode(&h); err != nil {
			http.Error(w, "recorder: hand-over notice: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := rec.noteHandover(h); err != nil {
			http.Error(w, "recorder: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	start := monotonic()
	work := defaultWork
	if v := r.URL.Query().Get("ms"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			http.Error(w, "recorder: ?ms must be a number of milliseconds, 0 or more", http.StatusBadRequest)
			return
		}
		work = min(time.Duration(ms)*time.Millisecond, maxWork)
	}
	t := time.NewTimer(work)
	select {
	case <-t.C:
	case <-r.Context().Done():
		t.Stop()
	}
	end := monotonic()
	index, _ := strconv.Atoi(os.Getenv("OLIO_INDEX"))
	if key := r.Header.Get("X-Olio-Key"); key != "" {
		line := fmt.Sprintf("%s %d %d %d %d\n", url.PathEscape(key), rec.pid, index, start, end)
		if _, err := rec.out.WriteString(line); err != nil {
			http.Error(w, "recorder: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	b, _ := json.Marshal(answer{Index: index, PID: rec.pid, Method: r.Method, Path: r.URL.Path})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// monotonic is CLOCK_MONOTONIC in nanoseconds.
func monotonic() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err) // cannot fail on Linux with a valid clock id
	}
	return ts.Nano()
}
