package router

import (
	"bytes"
	"log/slog"
	"sync"
)

// maxLine bounds one logged line of app output; longer lines are split.
const maxLine = 64 << 10

// lineLogger turns one of the app's output streams into log records, a line each, tagged
// with the stream (the logger already carries the worker index). The secret, should the
// app print it (it has it in $OLIO_SECRET), is replaced with [secret]: it never reaches a
// log line.
type lineLogger struct {
	logger *slog.Logger
	stream string
	secret []byte

	mu  sync.Mutex
	buf []byte
}

// Flush logs what is left without a newline: the app's last words before it exited.
// monitor calls it once the app has exited and its output has been copied.
func (l *lineLogger) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = l.buf[:0]
	}
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) >= maxLine {
				l.emit(l.buf[:maxLine])
				l.buf = append(l.buf[:0], l.buf[maxLine:]...)
				continue
			}
			return len(p), nil
		}
		l.emit(l.buf[:i])
		l.buf = append(l.buf[:0], l.buf[i+1:]...)
	}
}

func (l *lineLogger) emit(line []byte) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(l.secret) > 0 && bytes.Contains(line, l.secret) {
		line = bytes.ReplaceAll(line, l.secret, []byte("[secret]"))
	}
	l.logger.Info(string(line), "stream", l.stream)
}
