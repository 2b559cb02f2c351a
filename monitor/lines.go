package monitor

import (
	"bytes"
	"sync"
)

// MaxLine bounds one line of a child's output: a longer one is passed on in pieces of
// MaxLine bytes, so a child that never writes a newline cannot grow the buffer without end.
const MaxLine = 64 << 10

// Lines splits a child's output stream into lines, so that the output of several children
// can be merged (into one log) without lines interleaving mid-line. The writer of a
// Command's Stdout or Stderr wraps it: its Write calls Lines.Write, and its Flush (which
// the OS starter calls once the child has exited) calls Lines.Flush. The zero value is
// ready; it is safe for concurrent use.
type Lines struct {
	mu  sync.Mutex
	buf []byte
}

// Write adds p to the stream and calls line for each line it completes, with its newline,
// or for a piece of MaxLine bytes of a longer one, without. line must not keep its
// argument. Write returns len(p): output is never refused.
func (l *Lines) Write(p []byte, line func([]byte)) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	rest := l.buf
	for {
		i := bytes.IndexByte(rest, '\n')
		switch {
		case i >= 0 && i <= MaxLine:
			i++
		case len(rest) >= MaxLine:
			i = MaxLine
		default:
			l.buf = append(l.buf[:0], rest...)
			return len(p), nil
		}
		line(rest[:i])
		rest = rest[i:]
	}
}

// Flush calls line with what is left without a newline, if anything: a child's last words
// before it exited.
func (l *Lines) Flush(line func([]byte)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		line(l.buf)
		l.buf = l.buf[:0]
	}
}
