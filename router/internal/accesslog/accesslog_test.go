package accesslog

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The text form: fixed columns, the request line and key quoted so that no client can
// forge a line or a column.
func TestAccessLogText(t *testing.T) {
	e := Entry{
		Start: time.Date(2026, 12, 1, 14, 10, 0, 123e6, time.UTC), Client: "127.0.0.1:5555",
		Method: "GET", URI: "/p?q=\"x\"\n", Proto: "HTTP/1.1", Status: 200, In: 3, Out: 42,
		Total: 1500 * time.Microsecond, App: 1200 * time.Microsecond, Key: "al ice", HasKey: true,
		Worker: 3, Route: "forwarded",
	}
	got := string(appendText(nil, &e))
	want := `2026-12-01T14:10:00.123Z 127.0.0.1:5555 "GET /p?q=\"x\"\n HTTP/1.1" 200 3 42 0.001500 0.001200 "al ice" 3 forwarded` + "\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	e.App, e.HasKey, e.Worker, e.Route = -1, false, WorkerAll, "fan-out"
	if got := string(appendText(nil, &e)); !strings.HasSuffix(got, " 0.001500 - - * fan-out\n") {
		t.Errorf("got %q", got)
	}
}

// A writer that falls behind (here: a pipe nobody reads) never blocks a request: lines past
// the queue are dropped and counted.
func TestAccessLogDropsWhenBehind(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var dropped atomic.Uint64
	l := startAccessLog(pw, "pipe", "text", &dropped, slog.New(slog.DiscardHandler))
	e := Entry{Start: time.Now(), Method: "GET", URI: "/" + strings.Repeat("x", 1000), Worker: 0, Route: "local"}
	added := make(chan struct{})
	go func() {
		defer close(added)
		for i := 0; i < 4*accessQueue; i++ {
			l.Add(&e)
		}
	}()
	select {
	case <-added:
	case <-time.After(10 * time.Second):
		t.Fatal("adding lines blocked on a writer that is behind")
	}
	if dropped.Load() == 0 {
		t.Fatalf("no line dropped: the pipe (64 KiB) and queue (%d lines) took %d lines of 1 KiB", accessQueue, 4*accessQueue)
	}
	go func() { // let the writer finish, so that close returns
		buf := make([]byte, 1<<16)
		for {
			if _, err := pr.Read(buf); err != nil {
				return
			}
		}
	}()
	l.Close()
	l.Close() // safe twice
}

// A long field is cut to accessFieldMax and marked; a queued entry holds none of the
// request's strings (a short method or key is a substring of a long request line), and
// the queue is bounded in bytes: past accessQueueBytes, entries are dropped and counted.
func TestAccessLogByteBound(t *testing.T) {
	line := "GET /" + strings.Repeat("x", 900<<10) + "?k=alice HTTP/1.1" // as net/http reads it
	e := Entry{Start: time.Now(), Client: "127.0.0.1:1", Method: line[:3], URI: line[4 : len(line)-9],
		Proto: line[len(line)-8:], Key: line[len(line)-14 : len(line)-9], HasKey: true, Worker: 0, Route: "local"}
	q := e
	q.detach()
	lo, hi := uintptr(unsafe.Pointer(unsafe.StringData(line))), uintptr(unsafe.Pointer(unsafe.StringData(line)))+uintptr(len(line))
	for _, f := range []string{q.Method, q.URI, q.Proto, q.Key} {
		if p := uintptr(unsafe.Pointer(unsafe.StringData(f))); p >= lo && p < hi {
			t.Errorf("field %.20q still points into the request line", f)
		}
	}
	if q.Method != "GET" || q.Proto != "HTTP/1.1" || q.Key != "alice" {
		t.Errorf("detached fields: %q %q %q", q.Method, q.Proto, q.Key)
	}
	wantURI := "/" + strings.Repeat("x", accessFieldMax-1) + "…[cut: " + strconv.Itoa(len(e.URI)) + " bytes]"
	if q.URI != wantURI {
		t.Errorf("cut URI %.40q… (%d bytes), want %d bytes ending in the mark", q.URI, len(q.URI), len(wantURI))
	}
	if got := appendText(nil, &q); len(got) > 2*accessFieldMax {
		t.Errorf("a line of %d bytes for a 900 KiB URI", len(got))
	}

	// A writer stuck in a write (a pipe nobody reads): the queue fills by bytes.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var dropped atomic.Uint64
	l := startAccessLog(pw, "pipe", "text", &dropped, slog.New(slog.DiscardHandler))
	const n = 3000 // each about 4.3 KiB queued: past 4 MiB, well before accessQueue lines
	for i := 0; i < n; i++ {
		l.Add(&e)
		if q := l.queued.Load(); q > accessQueueBytes {
			t.Fatalf("%d bytes queued, more than the bound %d", q, accessQueueBytes)
		}
	}
	if d := dropped.Load(); d == 0 || d == n {
		t.Errorf("%d of %d lines dropped; want some: the bound is %d bytes", d, n, accessQueueBytes)
	}
	go io.Copy(io.Discard, pr) // let the writer finish, so that close returns
	l.Close()
	if q := l.queued.Load(); q != 0 {
		t.Errorf("%d bytes still counted as queued after close", q)
	}
}

// diskFull is a file on a disk that fills up: while full, it takes room more bytes, then
// fails with ENOSPC.
type diskFull struct {
	bytes.Buffer
	full bool
	room int
}

func (d *diskFull) Write(p []byte) (int, error) {
	if !d.full {
		return d.Buffer.Write(p)
	}
	n := min(len(p), d.room)
	d.room -= n
	d.Buffer.Write(p[:n])
	if n < len(p) {
		return n, syscall.ENOSPC
	}
	return n, nil
}

// A write that fails (a full disk) drops its lines, counted, and says so at most every
// reportEvery with the count; the next write tries again, starting a new line after a
// torn one, and says how many were lost once it succeeds.
func TestAccessLogWriteFailureResumes(t *testing.T) {
	var disk diskFull
	var logged bytes.Buffer
	var dropped atomic.Uint64
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	o := &accessOut{w: &disk, dropped: &dropped, path: "access.log", now: func() time.Time { return now },
		logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))}
	write := func(lines ...string) {
		for _, l := range lines {
			o.add([]byte(l + "\n"))
		}
		o.flush()
	}
	messages := func() []string { return strings.Split(strings.TrimSuffix(logged.String(), "\n"), "\n") }

	write("a")
	disk.full, disk.room = true, 3
	write("bbbb", "cc") // "bbb" written, then ENOSPC
	write("d")          // within reportEvery: counted, not said again
	if g, e := dropped.Load(), uint64(3); g != e {
		t.Errorf("dropped %d, want %d", g, e)
	}
	if m := messages(); len(m) != 1 || !strings.Contains(m[0], "access log: write failed") || !strings.Contains(m[0], "dropped=2") ||
		!strings.Contains(m[0], "no space left on device") {
		t.Fatalf("messages %q; want one write failure with dropped=2 and the error", m)
	}
	now = now.Add(reportEvery)
	write("e")
	if m := messages(); len(m) != 2 || !strings.Contains(m[1], "write failed") || !strings.Contains(m[1], "dropped=2") {
		t.Fatalf("messages %q; want a second failure %s later, with the 2 dropped since the first", m, reportEvery)
	}
	disk.full = false // space freed
	write("f")
	write("g")
	if m := messages(); len(m) != 3 || !strings.Contains(m[2], "access log: writing again") || !strings.Contains(m[2], "dropped=4") {
		t.Fatalf("messages %q; want writing again, after 4 dropped", m)
	}
	if g, e := disk.String(), "a\nbbb\nf\ng\n"; g != e {
		t.Errorf("file %q, want %q (the torn line ended, the writes resumed)", g, e)
	}
	if g, e := dropped.Load(), uint64(4); g != e {
		t.Errorf("dropped %d, want %d", g, e)
	}
}

// The writer goroutine's work per line (format, buffered write to a file): its capacity is
// 1 s divided by this; past it, lines are dropped.
func BenchmarkAccessLogWriter(b *testing.B) {
	for _, format := range []string{"text", "json"} {
		b.Run(format, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			l := &Log{format: format}
			bw := bufio.NewWriterSize(f, 64<<10)
			e := Entry{Start: time.Now(), Client: "127.0.0.1:44354", Method: "GET", URI: "/cart?item=7",
				Proto: "HTTP/1.1", Status: 200, Out: 238, Total: time.Millisecond, App: 900 * time.Microsecond,
				Key: "alice", HasKey: true, Worker: 1, Route: "forwarded"}
			var line []byte
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				line = l.format1(line[:0], &e)
				bw.Write(line)
			}
			bw.Flush()
		})
	}
}
