package router

import (
	"bytes"
	"log/slog"
)

// maxLine bounds one logged line of app output; longer lines are split.
const maxLine = 64 << 10

// lineLogger turns one of the app's output streams into log records, a line each, tagged
// with the stream (the logger already carries the worker index).
type lineLogger struct {
	logger *slog.Logger
	stream string
	buf    []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
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
	l.logger.Info(string(line), "stream", l.stream)
}
