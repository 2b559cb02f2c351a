package listener

import (
	"io"
	"sync"

	"github.com/olio-dev/olio/monitor"
)

// lineWriter passes a router's output on a whole line at a time, so lines from different
// routers never interleave mid-line.
type lineWriter struct {
	out   io.Writer
	mu    *sync.Mutex // shared by every router's writers
	lines monitor.Lines
}

func (l *lineWriter) Write(p []byte) (int, error) { return l.lines.Write(p, l.emit) }

// Flush passes on the router's last words without a newline; monitor calls it once the
// router has exited.
func (l *lineWriter) Flush() { l.lines.Flush(l.emit) }

func (l *lineWriter) emit(line []byte) {
	l.mu.Lock()
	l.out.Write(line)
	l.mu.Unlock()
}
