package monitor

import (
	"bytes"
	"slices"
	"testing"
)

func TestLines(t *testing.T) {
	var got []string
	line := func(b []byte) { got = append(got, string(b)) }
	var l Lines
	for _, p := range []string{"one\ntw", "o\n\nthree", "\nfour"} {
		if n, err := l.Write([]byte(p), line); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if want := []string{"one\n", "two\n", "\n", "three\n"}; !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
	got = nil
	l.Flush(line)
	l.Flush(line) // nothing left: no empty line
	if want := []string{"four"}; !slices.Equal(got, want) {
		t.Errorf("Flush passed %q, want %q", got, want)
	}

	// A line longer than MaxLine goes in pieces of MaxLine, the rest with its newline.
	got = nil
	long := append(bytes.Repeat([]byte("x"), 2*MaxLine+3), '\n')
	l.Write(long[:MaxLine+1], line)
	l.Write(long[MaxLine+1:], line)
	if len(got) != 3 || len(got[0]) != MaxLine || len(got[1]) != MaxLine || got[2] != "xxx\n" {
		t.Errorf("a line of %d bytes went as %d pieces", len(long), len(got))
	}
}
