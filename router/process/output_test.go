package process

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/olio-dev/olio/monitor"
)

func TestLineLoggerLinesFlushAndSecret(t *testing.T) {
	var logs bytes.Buffer
	l := &lineLogger{logger: slog.New(slog.NewTextHandler(&logs, nil)), stream: "stdout", secret: []byte("s3cr3t-value")}
	l.Write([]byte("first line\r\nsecond "))
	l.Write([]byte("line\nmy secret is s3cr3t-value, see\nfatal: no newline"))
	if got := strings.Count(logs.String(), "\n"); got != 3 {
		t.Fatalf("%d records before Flush, want 3:\n%s", got, logs.String())
	}
	l.Flush()
	l.Flush() // nothing left: no empty record
	out := logs.String()
	for _, want := range []string{`msg="first line"`, `msg="second line"`, `msg="my secret is [secret], see"`, `msg="fatal: no newline"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cr3t-value") {
		t.Errorf("the secret reached the log:\n%s", out)
	}
	if got := strings.Count(out, "\n"); got != 4 {
		t.Errorf("%d records, want 4:\n%s", got, out)
	}
}

// A blank line is a line (the ones after it are not held back); a line of exactly monitor.MaxLine
// bytes goes out without waiting for its newline; without a secret nothing is masked.
func TestLineLoggerBlankLongAndNoSecret(t *testing.T) {
	var logs bytes.Buffer
	l := &lineLogger{logger: slog.New(slog.NewTextHandler(&logs, nil)), stream: "stdout"}
	l.Write([]byte("a\n\nb\n"))
	if got, want := strings.Count(logs.String(), "\n"), 3; got != want {
		t.Fatalf("%d records for a, a blank line and b, want %d:\n%s", got, want, logs.String())
	}
	if !strings.Contains(logs.String(), `msg=b `) {
		t.Errorf("the line after a blank one is missing:\n%s", logs.String())
	}
	logs.Reset()
	l.Write(bytes.Repeat([]byte("x"), monitor.MaxLine))
	if got := strings.Count(logs.String(), "\n"); got != 1 {
		t.Errorf("%d records after %d bytes without a newline, want 1", got, monitor.MaxLine)
	}
	if strings.Contains(logs.String(), "[secret]") {
		t.Errorf("a logger without a secret masked something:\n%.200s", logs.String())
	}
}
