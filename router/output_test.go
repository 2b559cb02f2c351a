package router

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
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
