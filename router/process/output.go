package process

import (
	"bytes"
	"log/slog"

	"github.com/olio-dev/olio/monitor"
)

// lineLogger turns one of the app's output streams into log records, a line each, tagged
// with the stream (the logger already carries the worker index). The secret, should the
// app print it (it has it in $OLIO_SECRET), is replaced with [secret]: it never reaches a
// log line.
type lineLogger struct {
	logger *slog.Logger
	stream string
	secret []byte
	lines  monitor.Lines
}

func (l *lineLogger) Write(p []byte) (int, error) { return l.lines.Write(p, l.emit) }

// Flush logs what is left without a newline: the app's last words before it exited.
// monitor calls it once the app has exited and its output has been copied.
func (l *lineLogger) Flush() { l.lines.Flush(l.emit) }

func (l *lineLogger) emit(line []byte) {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(l.secret) > 0 && bytes.Contains(line, l.secret) {
		line = bytes.ReplaceAll(line, l.secret, []byte("[secret]"))
	}
	l.logger.Info(string(line), "stream", l.stream)
}
