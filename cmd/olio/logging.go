package main

import (
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// newLogger makes the slog logger for format ("text" or "json") writing to w.
func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	newLog, err := loggerFor(format)
	if err != nil {
		return nil, err
	}
	return newLog(w), nil
}

// loggerFor checks format ("text" or "json") and returns what makes its loggers, so that a
// bad format is reported before anything is opened to write to.
func loggerFor(format string) (func(io.Writer) *slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	switch format {
	case "text", "":
		return func(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, opts)) }, nil
	case "json":
		return func(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, opts)) }, nil
	}
	return nil, badUsage("--log-format %q: use text or json", format)
}

// surviveClosedOutput makes a write to a closed stdout or stderr (`olio serve 2>&1 | head`,
// a log collector that went away) fail with EPIPE instead of killing the process with
// SIGPIPE, Go's default for those two descriptors: a reader that goes away must not take
// the service down. Notify rather than Ignore, because an ignored signal stays ignored
// across exec and the apps olio starts should get the default.
func surviveClosedOutput() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}
