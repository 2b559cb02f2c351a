package descend

import (
	"bufio"
	"fmt"
	"io"
)

// Word is what one master says to the other on a hot upgrade's pipes: one line, once. The
// old master starts the new one with a pipe for each word (see the listener package's
// Upgrade); the word's writer closes its end after saying it.
type Word string

// The hot upgrade's words.
const (
	// WordReady is the new master's: every one of its workers is ready, so the old master
	// may drain and exit.
	WordReady Word = "ready"
	// WordDrained is the old master's: its routers have finished every request they
	// accepted, so the new master's routers may serve their own keys (--handover exclusive).
	WordDrained Word = "drained"
)

// Say writes the word on w, as one line.
func (wd Word) Say(w io.Writer) error {
	if _, err := io.WriteString(w, string(wd)+"\n"); err != nil {
		return fmt.Errorf("descend: say %s: %w", wd, err)
	}
	return nil
}

// Await reads one line from r and returns nil if it is the word. It returns io.EOF if r
// ends before a whole line (the other master closed the pipe, or exited, without saying
// it), and an error wrapping ErrMalformed for another line.
func (wd Word) Await(r io.Reader) error {
	line, err := bufio.NewReader(r).ReadString('\n')
	switch {
	case err != nil:
		return err
	case line != string(wd)+"\n":
		return fmt.Errorf("%w: %q on the pipe, want %q", ErrMalformed, line, wd)
	}
	return nil
}
