// Package accesslog is the access log (--access-log): one line per request, written by
// the router that answered the client. The router fills an Entry per request (a Writer
// wrapping the request's ResponseWriter sees the answer) and hands it to a Log, which never
// makes the request wait.
//
// A request only hands its entry to a queue bounded in lines and in bytes (a field longer
// than accessFieldMax is cut first); one writer goroutine formats the entries and writes
// them through a buffer, flushed when full or 100 ms after its first line. When the writer
// falls behind (a slow disk, a stdout nobody reads) and the queue is full, the entry is
// dropped and counted (olio_access_log_dropped_total): a request never waits for the disk.
// A failed write (a full disk) drops the lines it carried, counted and logged; the next
// write tries again, so the log resumes by itself once there is room.
package accesslog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// FDStdout is the descriptor on which a router (or an embedded worker) gets the master's
// stdout when the access log is "-".
const FDStdout = 5

// stdoutFile is the master's stdout, made once: a second *os.File for the descriptor would
// close it when collected.
var stdoutFile = sync.OnceValue(func() *os.File { return os.NewFile(FDStdout, "stdout") })

// KeepStdout makes the master's stdout (FDStdout), when passed, close-on-exec: inherited
// descriptors are not, and the app must not hold olio's output.
func KeepStdout() {
	if _, err := unix.FcntlInt(FDStdout, unix.F_GETFD, 0); err == nil {
		unix.CloseOnExec(FDStdout)
	}
}

// accessQueue bounds the entries waiting for the writer; past it they are dropped.
const accessQueue = 4096

// accessQueueBytes bounds the bytes the waiting entries hold (their fields and a fixed
// share each): past it they are dropped too. With fields cut at accessFieldMax, a
// router's queue holds at most this much, whatever its clients send.
const accessQueueBytes = 4 << 20

// accessFieldMax is the longest field (URI, method, key, ...) a line carries; a longer
// one is cut to its first accessFieldMax bytes and marked (see cutField).
const accessFieldMax = 4 << 10

// entryBytes is what an entry costs in the queue besides its fields' bytes.
const entryBytes = 256

// accessBuffer is the size at which the writer's buffer is written.
const accessBuffer = 64 << 10

// flushEvery bounds how long a written line waits in the writer's buffer.
const flushEvery = 100 * time.Millisecond

// reportEvery spaces the log messages about dropped lines: at most one of each kind (write
// failed, writer behind) per reportEvery, with the count since the last.
const reportEvery = 10 * time.Second

// stuckWait bounds how long closing or reopening the log waits for a writer that is stuck
// in a write (a pipe nobody reads): past it, the writer is left to its write, and the
// lines it still holds are lost.
const stuckWait = 5 * time.Second

// Worker values of an entry that names no single worker.
const (
	WorkerNone = -1 // refused before routing (a bad X-Olio-Index or secret)
	WorkerAll  = -2 // fan-out
)

// Entry is one request, as the writer formats it.
type Entry struct {
	Start    time.Time
	Total    time.Duration
	App      time.Duration // < 0: unknown
	Client   string
	Method   string
	URI      string
	Proto    string
	Status   int
	In, Out  int64
	Key      string // as --key-stats shows it; "": none
	HasKey   bool
	Worker   int // or WorkerNone, WorkerAll
	Route    string
	Upgraded bool
	Ended    bool // an upgraded connection a hand-over ended (its key moved)
}

// Log is one open access log: its queue and the writer goroutine that owns the file.
type Log struct {
	path    string // "-": stdout
	format  string // "text" or "json"
	queue   chan Entry
	queued  atomic.Int64 // bytes the entries in queue hold (entry.size)
	reopens chan chan error
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	dropped *atomic.Uint64 // shared by the logs a router has had, so the count never goes back
	logger  *slog.Logger

	// Lines dropped because the queue was full, since the last message saying so, and when
	// that was (unix nanoseconds): the requests that drop them log, at most every reportEvery.
	behind     atomic.Uint64
	behindSaid atomic.Int64
}

// Open opens path ("-": the descriptor FDStdout) and starts its writer, which writes the
// lines in format ("text" or "json"). dropped counts the lines dropped; logger says why.
func Open(path, format string, dropped *atomic.Uint64, logger *slog.Logger) (*Log, error) {
	f, err := openAccessFile(path)
	if err != nil {
		return nil, err
	}
	return startAccessLog(f, path, format, dropped, logger), nil
}

// startAccessLog starts the writer of an access log on w, which it owns from now on (and
// closes at the end, if it is an io.Closer and not stdout).
func startAccessLog(w io.Writer, path, format string, dropped *atomic.Uint64, logger *slog.Logger) *Log {
	l := &Log{
		path: path, format: format, dropped: dropped, logger: logger,
		queue:   make(chan Entry, accessQueue),
		reopens: make(chan chan error),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go l.write(w)
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

// Path is the log's path, "-" for stdout.
func (l *Log) Path() string { return l.path }

// Format is the log's format, "text" or "json".
func (l *Log) Format() string { return l.format }

// Add queues e, its long fields cut, or drops and counts it when the writer is behind. It
// never blocks.
func (l *Log) Add(e *Entry) {
	select {
	case <-l.stop: // closed: the writer takes no more lines
		l.dropped.Add(1)
		return
	default:
	}
	q := *e
	q.detach()
	n := q.size()
	if l.queued.Add(n) <= accessQueueBytes {
		select {
		case l.queue <- q:
			return
		default:
		}
	}
	l.queued.Add(-n)
	l.dropped.Add(1)
	l.behind.Add(1)
	now := time.Now().UnixNano()
	if said := l.behindSaid.Load(); now-said >= int64(reportEvery) && l.behindSaid.CompareAndSwap(said, now) {
		l.logger.Warn("access log: the writer is behind (a slow disk, or a reader that does not read): lines dropped",
			"dropped", l.behind.Swap(0), "path", l.path)
	}
}

// detach copies e's fields, each cut to accessFieldMax, into one allocation of their own:
// the request's fields are substrings of its header lines (the method, the URI and the
// protocol share the request line, a query key is part of the URI), which a queued entry
// must not keep alive.
func (e *Entry) detach() {
	f := [...]*string{&e.Client, &e.Method, &e.URI, &e.Proto, &e.Key}
	n := 0
	for _, p := range f {
		*p = cutField(*p)
		n += len(*p)
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range f {
		b.WriteString(*p)
	}
	all := b.String()
	for _, p := range f {
		*p, all = all[:len(*p)], all[len(*p):]
	}
}

// cutField returns s, or, when it is longer than accessFieldMax, a copy of its head (the
// queue must not keep the request's whole field alive) marked with the length it had.
func cutField(s string) string {
	if len(s) <= accessFieldMax {
		return s
	}
	n := accessFieldMax
	for n > accessFieldMax-utf8.UTFMax && !utf8.RuneStart(s[n]) {
		n-- // not inside a character (the line quotes invalid UTF-8 as it is)
	}
	return s[:n] + "…[cut: " + strconv.Itoa(len(s)) + " bytes]"
}

// size is what e holds in the queue.
func (e *Entry) size() int64 {
	return int64(entryBytes + len(e.Client) + len(e.Method) + len(e.URI) + len(e.Proto) + len(e.Key))
}

// Reopen makes the writer open the path again (logrotate renamed the file).
func (l *Log) Reopen() error {
	if l.path == "-" {
		return nil
	}
	reply := make(chan error, 1)
	stuck := time.NewTimer(stuckWait)
	defer stuck.Stop()
	select {
	case l.reopens <- reply:
		return <-reply
	case <-l.done:
		return nil
	case <-stuck.C:
		return fmt.Errorf("router: access log %s not reopened: its writer has been stuck in a write for %s", l.path, stuckWait)
	}
}

// Close writes what is queued, closes the file and waits for the writer, up to stuckWait
// when it is stuck in a write. Safe twice.
func (l *Log) Close() {
	l.once.Do(func() { close(l.stop) })
	stuck := time.NewTimer(stuckWait)
	defer stuck.Stop()
	select {
	case <-l.done:
	case <-stuck.C:
		l.logger.Warn("access log: its writer is stuck in a write; the lines it holds are lost", "path", l.path)
	}
}

// write is the writer goroutine: it owns the file until close.
func (l *Log) write(w io.Writer) {
	defer close(l.done)
	out := &accessOut{w: w, dropped: l.dropped, logger: l.logger, path: l.path, now: time.Now}
	defer func() {
		out.flush()
		if c, ok := out.w.(io.Closer); ok && l.path != "-" {
			c.Close()
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
			line = l.take(out, line, &e)
			if !armed && len(out.buf) > 0 {
				flush.Reset(flushEvery)
				armed = true
			}
		case <-flush.C:
			armed = false
			out.flush()
		case reply := <-l.reopens:
			line = l.drain(out, line) // lines queued before the reopen go to the old file
			out.flush()
			nf, err := openAccessFile(l.path)
			if err == nil {
				if c, ok := out.w.(io.Closer); ok {
					c.Close()
				}
				out.w = nf
			}
			reply <- err
		case <-l.stop:
			l.drain(out, line)
			return
		}
	}
}

// take formats e into out's buffer and releases its bytes from the queue.
func (l *Log) take(out *accessOut, line []byte, e *Entry) []byte {
	l.queued.Add(-e.size())
	line = l.format1(line[:0], e)
	out.add(line)
	return line
}

// drain writes the queued entries to out, without waiting for more.
func (l *Log) drain(out *accessOut, line []byte) []byte {
	for {
		select {
		case e := <-l.queue:
			line = l.take(out, line, &e)
		default:
			return line
		}
	}
}

// accessOut is the writer goroutine's side of the file: the lines waiting for a write,
// and the lines failed writes dropped, counted and logged (at most every reportEvery). A
// failed write does not stop the log: the next one tries again.
type accessOut struct {
	w       io.Writer
	buf     []byte
	lines   int  // lines in buf
	torn    bool // a failed write left part of a line in the file: the next starts a new line
	dropped *atomic.Uint64
	logger  *slog.Logger
	path    string
	now     func() time.Time

	failing  bool      // the last write failed
	unsaid   uint64    // lines dropped by failed writes since the last message
	lost     uint64    // lines dropped since the writes began failing
	lastSaid time.Time // the last message about failed writes
}

// add appends a line, and writes the buffer when it is full.
func (o *accessOut) add(line []byte) {
	o.buf = append(o.buf, line...)
	o.lines++
	if len(o.buf) >= accessBuffer {
		o.flush()
	}
}

// flush writes the buffer; on an error, the lines not fully written are dropped.
func (o *accessOut) flush() {
	if len(o.buf) == 0 {
		return
	}
	var err error
	if o.torn {
		if _, err = o.w.Write([]byte{'\n'}); err == nil {
			o.torn = false
		}
	}
	n := 0
	if err == nil {
		n, err = o.w.Write(o.buf)
	}
	if err == nil {
		if o.failing {
			o.failing = false
			o.logger.Warn("access log: writing again", "path", o.path, "dropped", o.lost)
			o.lost, o.unsaid = 0, 0
		}
	} else {
		written := bytes.Count(o.buf[:n], []byte{'\n'})
		if n > 0 && o.buf[n-1] != '\n' {
			o.torn = true
		}
		o.failed(uint64(o.lines-written), err)
	}
	o.buf, o.lines = o.buf[:0], 0
}

// failed counts lines dropped by a failed write and says so, at most every reportEvery.
func (o *accessOut) failed(lines uint64, err error) {
	o.dropped.Add(lines)
	o.unsaid += lines
	o.lost += lines
	now := o.now()
	if o.failing && now.Sub(o.lastSaid) < reportEvery {
		return
	}
	o.failing = true
	o.lastSaid = now
	o.logger.Error("access log: write failed: lines dropped until a write succeeds (a full disk?)",
		"path", o.path, "dropped", o.unsaid, "err", err)
	o.unsaid = 0
}

func (l *Log) format1(b []byte, e *Entry) []byte {
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
func appendText(b []byte, e *Entry) []byte {
	b = e.Start.AppendFormat(b, accessTime)
	b = append(b, ' ')
	b = append(b, e.Client...)
	b = append(b, ' ')
	b = strconv.AppendQuote(b, e.Method+" "+e.URI+" "+e.Proto)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.In, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Out, 10)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, e.Total.Seconds(), 'f', 6, 64)
	b = append(b, ' ')
	if e.App >= 0 {
		b = strconv.AppendFloat(b, e.App.Seconds(), 'f', 6, 64)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	if e.HasKey {
		b = strconv.AppendQuote(b, e.Key)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	switch e.Worker {
	case WorkerNone:
		b = append(b, '-')
	case WorkerAll:
		b = append(b, '*')
	default:
		b = strconv.AppendInt(b, int64(e.Worker), 10)
	}
	b = append(b, ' ')
	b = append(b, e.Route...)
	if e.Ended {
		b = append(b, " ended-by-handover"...)
	}
	return append(b, '\n')
}

// Line is the JSON form of one access log line (--log-format json).
type Line struct {
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

func appendJSON(b []byte, e *Entry) []byte {
	a := Line{
		Time: e.Start.Format(accessTime), Client: e.Client, Method: e.Method, URI: e.URI,
		Proto: e.Proto, Status: e.Status, BytesIn: e.In, BytesOut: e.Out,
		Duration: e.Total.Seconds(), Route: e.Route, Upgraded: e.Upgraded,
	}
	if e.Ended {
		a.EndedBy = "handover"
	}
	if e.App >= 0 {
		s := e.App.Seconds()
		a.App = &s
	}
	if e.HasKey {
		a.Key = &e.Key
	}
	if e.Worker >= 0 {
		a.Worker = &e.Worker
	}
	j, err := json.Marshal(&a)
	if err != nil {
		return b
	}
	b = append(b, j...)
	return append(b, '\n')
}
