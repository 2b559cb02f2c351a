package listener

import (
	"bytes"
	"io"
	"sync"
)

// lineWriter passes a router's output on a whole line at a time, so lines from different
// routers never interleave mid-line.
type lineWriter struct {
	out io.Writer
	mu  *sync.Mutex // shared by every router's writers
	buf []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	i := bytes.LastIndexByte(l.buf, '\n')
	if i < 0 {
		if len(l.buf) < 64<<10 {
			return len(p), nil
		}
		i = len(l.buf) - 1
	}
	l.mu.Lock()
	l.out.Write(l.buf[:i+1])
	l.mu.Unlock()
	l.buf = append(l.buf[:0], l.buf[i+1:]...)
	return len(p), nil
}
