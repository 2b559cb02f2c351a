package descend

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// The words are on the wire between two builds of olio: pinned.
func TestWordsPinned(t *testing.T) {
	for wd, line := range map[Word]string{WordReady: "ready\n", WordDrained: "drained\n"} {
		var b strings.Builder
		if err := wd.Say(&b); err != nil || b.String() != line {
			t.Errorf("%s said %q (%v), want %q", wd, b.String(), err, line)
		}
		if err := wd.Await(strings.NewReader(line)); err != nil {
			t.Errorf("awaiting %s, %q: %v", wd, line, err)
		}
	}
}

// Await tells a pipe closed before the word from a wrong word.
func TestAwaitWrongOrNone(t *testing.T) {
	for _, c := range []struct {
		in   string
		want error
	}{
		{"", io.EOF},
		{"rea", io.EOF},
		{"drained\n", ErrMalformed},
		{"ready now\n", ErrMalformed},
	} {
		if err := WordReady.Await(strings.NewReader(c.in)); !errors.Is(err, c.want) {
			t.Errorf("awaiting ready on %q: %v, want %v", c.in, err, c.want)
		}
	}
}
