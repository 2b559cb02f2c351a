package main

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/olio-dev/olio/listener"
)

// progressPrinter prints a reload's or a scale's progress, a worker at a time: on a
// terminal, one live line rewritten in place; elsewhere (a pipe, a file, a CI log), a plain
// line per worker.
type progressPrinter struct {
	w    io.Writer
	tty  bool
	live bool // a live line is on screen, without its newline
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	return &progressPrinter{w: w, tty: isTerminal(w)}
}

// isTerminal says whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// event prints one worker's step.
func (p *progressPrinter) event(e listener.Progress) {
	line := progressLine(e)
	if !p.tty {
		fmt.Fprintln(p.w, line)
		return
	}
	fmt.Fprint(p.w, "\r\033[K"+line) // carriage return, clear the line
	p.live = true
}

// end finishes the live line, before the summary.
func (p *progressPrinter) end() {
	if p.live {
		fmt.Fprintln(p.w)
		p.live = false
	}
}

// progressLine is how one step reads: "restart: worker 3 ready, 4/8 (app pid 1234, 0.8 s)".
func progressLine(e listener.Progress) string {
	what := "ready"
	switch e.Step {
	case listener.StepStop:
		what = "stopped"
	case listener.StepRollBack:
		what = "back on the previous app"
	}
	detail := seconds(e.Seconds)
	if e.AppPID > 0 {
		detail = fmt.Sprintf("app pid %d, %s", e.AppPID, detail)
	}
	return fmt.Sprintf("%s: worker %d %s, %d/%d (%s)", e.Step, e.Index, what, e.Done, e.Total, detail)
}

func seconds(s float64) string { return fmt.Sprintf("%.2f s", s) }
