package main

import (
	"bytes"
	"testing"

	"github.com/olio-dev/olio/listener"
)

// On a terminal each worker rewrites one live line, which end closes; elsewhere each is
// a plain line.
func TestProgressPrinter(t *testing.T) {
	events := []listener.Progress{
		{Step: listener.StepRestart, Index: 0, Done: 1, Total: 2, AppPID: 11, Seconds: 0.84},
		{Step: listener.StepStop, Index: 1, Done: 2, Total: 2, Seconds: 0.2},
	}
	for _, tty := range []bool{false, true} {
		var b bytes.Buffer
		p := &progressPrinter{w: &b, tty: tty}
		for _, e := range events {
			p.event(e)
		}
		p.end()
		want := "restart: worker 0 ready, 1/2 (app pid 11, 0.84 s)\nstop: worker 1 stopped, 2/2 (0.20 s)\n"
		if tty {
			want = "\r\033[Krestart: worker 0 ready, 1/2 (app pid 11, 0.84 s)\r\033[Kstop: worker 1 stopped, 2/2 (0.20 s)\n"
		}
		if g := b.String(); g != want {
			t.Errorf("tty %v: got %q, want %q", tty, g, want)
		}
	}
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
}
