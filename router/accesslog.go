package router

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/olio-dev/olio/descend"
)

// The access log (--access-log): one line per request, written by the router that answered
// the client. A request only hands its entry to a bounded queue; one writer goroutine
// formats the entries and writes them through a buffer, flushed when full or 100 ms after
// its first line. When the writer falls behind (a slow disk, a stdout nobody reads) and the
// queue is full, the entry is dropped and counted (olio_access_log_dropped_total): a request
// never waits for the disk.

// Routes, as the access log names them.
const (
	RouteLocal     = "local"      // the accepting router owns the key (or there is none)
	RouteForwarded = "forwarded"  // sent to the owner over a mux stream
	RouteHandedOff = "handed-off" // served on a connection another router handed to its owner
	RouteFanout    = "fan-out"    // X-Olio-Index: * (every worker)
	RouteDirect    = "direct"     // X-Olio-Index: i with the secret
)

// FDStdout is the descriptor on which a router (or an embedded worker) gets the master's
// stdout when the access log is "-".
const FDStdout = 5

// stdoutFile is the master's stdout, made once: a second *os.File for the descriptor would
// close it when collected.
var stdoutFile = sync.OnceValue(func() *os.File { return os.NewFile(FDStdout, "stdout") })

// keepStdout makes the master's stdout (FDStdout), when passed, close-on-exec: inherited
// descriptors are not, and the app must not hold olio's output.
func keepStdout() {
	if _, err := unix.FcntlInt(FDStdout, unix.F_GETFD, 0); err == nil {
		unix.CloseOnExec(FDStdout)
	}
}

// accessQueue bounds the entries waiting for the writer; past it they are dropped.
const accessQueue = 4096

// flushEvery bounds how long a written line waits in the writer's buffer.
const flushEvery = 100 * time.Millisecond

// Worker values of an entry that names no single worker.
const (
	workerNone = -1 // refused before routing (a bad X-Olio-Index or secret)
	workerAll  = -2 // fan-out
)

// accessEntry is one request, as the writer formats it.
type accessEntry struct {
	start    time.Time
	total    time.Duration
	app      time.Duration // < 0: unknown
	client   string
	method   string
	uri      string
	proto    string
	status   int
	in, out  int64
	key      string // as --key-stats shows it; "": none
	hasKey   bool
	worker   int
	route    string
	upgraded bool
	ended    bool // an upgraded connection a hand-over ended (its key moved)
}

// accessLog is one open access log: its queue and the writer goroutine that owns the file.
type accessLog struct {
	path    string // "-": stdout
	format  string // "text" or "json"
	queue   chan accessEntry
	reopens chan chan error
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	dropped *atomic.Uint64 // shared by the logs a router has had, so the count never goes back
}

// openAccessLog opens path ("-": the descriptor FDStdout) and starts its writer.
func openAccessLog(path, format string, dropped *atomic.Uint64) (*accessLog, error) {
	f, err := openAccessFile(path)
	if err != nil {
		return nil, err
	}
	return startAccessLog(f, path, format, dropped), nil
}

// startAccessLog starts the writer of an access log on f, which it owns from now on.
func startAccessLog(f *os.File, path, format string, dropped *atomic.Uint64) *accessLog {
	l := &accessLog{
		path: path, format: format, dropped: dropped,
		queue:   make(chan accessEntry, accessQueue),
		reopens: make(chan chan error),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go l.write(f)
	return l
}

func openAccessFile(path string) (*os.File, error) {
	if path == "-" {
		f := stdoutFile()
		if _, err := f.Stat(); err != nil {
			return nil, fmt.Errorf("router: access log on stdout, but descriptor %d is not open (it is passed by olio serve)", FDStdout)
		}
		return f, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("router: open access log: %w", err)
	}
	return f, nil
}

// add queues e, or drops and counts it when the writer is behind. It never blocks.
func (l *accessLog) add(e *accessEntry) {
	select {
	case l.queue <- *e:
	default:
		l.dropped.Add(1)
	}
}

// reopen makes the writer open the path again (logrotate renamed the file).
func (l *accessLog) reopen() error {
	if l.path == "-" {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case l.reopens <- reply:
		return <-reply
	case <-l.done:
		return nil
	}
}

// close writes what is queued, closes the file and waits for the writer. Safe twice.
func (l *accessLog) close() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

// write is the writer goroutine: it owns the file until close.
func (l *accessLog) write(f *os.File) {
	defer close(l.done)
	bw := bufio.NewWriterSize(f, 64<<10)
	defer func() {
		bw.Flush()
		if l.path != "-" {
			f.Close()
		}
	}()
	var line []byte
	// Lines are written when the buffer fills, or flushEvery after the first line that
	// waits in it: one write(2) for many requests.
	flush := time.NewTimer(flushEvery)
	flush.Stop()
	defer flush.Stop()
	armed := false
	for {
		select {
		case e := <-l.queue:
			line = l.format1(line[:0], &e)
			bw.Write(line) // a failed write is dropped: logging never stops olio
			if !armed && bw.Buffered() > 0 {
				flush.Reset(flushEvery)
				armed = true
			}
		case <-flush.C:
			armed = false
			bw.Flush()
		case reply := <-l.reopens:
			line = l.drain(bw, line) // lines queued before the reopen go to the old file
			bw.Flush()
			nf, err := openAccessFile(l.path)
			if err == nil {
				f.Close()
				f = nf
				bw.Reset(f)
			}
			reply <- err
		case <-l.stop:
			l.drain(bw, line)
			return
		}
	}
}

// drain writes the queued entries to bw, without waiting for more.
func (l *accessLog) drain(bw *bufio.Writer, line []byte) []byte {
	for {
		select {
		case e := <-l.queue:
			line = l.format1(line[:0], &e)
			bw.Write(line)
		default:
			return line
		}
	}
}

func (l *accessLog) format1(b []byte, e *accessEntry) []byte {
	if l.format == "json" {
		return appendJSON(b, e)
	}
	return appendText(b, e)
}

// accessTime is how an entry's time is written.
const accessTime = "2006-01-02T15:04:05.000Z07:00"

// appendText formats e as one text line:
//
//	TIME CLIENT "METHOD URI PROTO" STATUS BYTES_IN BYTES_OUT DURATION APP KEY WORKER ROUTE [ended-by-handover]
//
// durations in seconds; APP, KEY and WORKER are - when unknown or none, WORKER is * for a
// fan-out; the request line and the key are quoted as Go strings.
func appendText(b []byte, e *accessEntry) []byte {
	b = e.start.AppendFormat(b, accessTime)
	b = append(b, ' ')
	b = append(b, e.client...)
	b = append(b, ' ')
	b = strconv.AppendQuote(b, e.method+" "+e.uri+" "+e.proto)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.in, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.out, 10)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, e.total.Seconds(), 'f', 6, 64)
	b = append(b, ' ')
	if e.app >= 0 {
		b = strconv.AppendFloat(b, e.app.Seconds(), 'f', 6, 64)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	if e.hasKey {
		b = strconv.AppendQuote(b, e.key)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	switch e.worker {
	case workerNone:
		b = append(b, '-')
	case workerAll:
		b = append(b, '*')
	default:
		b = strconv.AppendInt(b, int64(e.worker), 10)
	}
	b = append(b, ' ')
	b = append(b, e.route...)
	if e.ended {
		b = append(b, " ended-by-handover"...)
	}
	return append(b, '\n')
}

// AccessLine is the JSON form of one access log line (--log-format json).
type AccessLine struct {
	Time     string   `json:"time"`
	Client   string   `json:"client"`
	Method   string   `json:"method"`
	URI      string   `json:"uri"` // path and query as the client sent them
	Proto    string   `json:"proto"`
	Status   int      `json:"status"`
	BytesIn  int64    `json:"bytes_in"`
	BytesOut int64    `json:"bytes_out"`
	Duration float64  `json:"duration"`     // seconds, from the request's header to its end
	App      *float64 `json:"app_duration"` // seconds, the app's share; null: unknown
	Key      *string  `json:"key"`          // null: none (or --key-stats off)
	Worker   *int     `json:"worker"`       // null: none or every worker (fan-out)
	Route    string   `json:"route"`
	Upgraded bool     `json:"upgraded,omitempty"` // an upgraded connection (WebSocket), logged at its close
	EndedBy  string   `json:"ended_by,omitempty"` // "handover": a hand-over ended it (its key moved)
}

func appendJSON(b []byte, e *accessEntry) []byte {
	a := AccessLine{
		Time: e.start.Format(accessTime), Client: e.client, Method: e.method, URI: e.uri,
		Proto: e.proto, Status: e.status, BytesIn: e.in, BytesOut: e.out,
		Duration: e.total.Seconds(), Route: e.route, Upgraded: e.upgraded,
	}
	if e.ended {
		a.EndedBy = "handover"
	}
	if e.app >= 0 {
		s := e.app.Seconds()
		a.App = &s
	}
	if e.hasKey {
		a.Key = &e.key
	}
	if e.worker >= 0 {
		a.Worker = &e.worker
	}
	j, err := json.Marshal(&a)
	if err != nil {
		return b
	}
	b = append(b, j...)
	return append(b, '\n')
}

// setAccessLog opens, swaps or closes the access log to match the config.
func (r *Router) setAccessLog(cfg *descend.Config) error {
	r.alogMu.Lock()
	defer r.alogMu.Unlock()
	old := r.alog.Load()
	format := cfg.AccessLogFormat
	if format == "" {
		format = "text"
	}
	if old != nil && old.path == cfg.AccessLog && old.format == format {
		return nil
	}
	var l *accessLog
	if cfg.AccessLog != "" {
		var err error
		if l, err = openAccessLog(cfg.AccessLog, format, &r.counters.accessDropped); err != nil {
			return err
		}
	}
	r.alog.Store(l)
	if old != nil {
		old.close() // requests that took it before the swap may still add: dropped unless queued
	}
	return nil
}

// closeAccessLog writes the last entries and closes the log.
func (r *Router) closeAccessLog() {
	r.alogMu.Lock()
	defer r.alogMu.Unlock()
	if l := r.alog.Swap(nil); l != nil {
		l.close()
	}
}

func (r *Router) onReopen(m descend.Message) error {
	res := &descend.Result{ID: m.(*descend.Reopen).ID}
	r.alogMu.Lock()
	l := r.alog.Load()
	r.alogMu.Unlock()
	if l != nil {
		if err := l.reopen(); err != nil {
			res.Error = err.Error()
		}
	}
	return r.ctl.Send(res)
}
