package monitor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Command describes one process to start.
type Command struct {
	Name       string     // for logs: "app 3", "router 3"
	Path       string     // resolved executable path; a bare name is looked up in $PATH
	Args       []string   // argv[1:]
	Argv0      string     // argv[0]; "": Path (as found in $PATH)
	Env        []string   // complete environment; nil inherits this process's environment
	Dir        string     // working directory; "" is this process's
	Stdout     io.Writer  // nil: discarded; a Flush() method is called once the child has exited and its output is copied
	Stderr     io.Writer  // nil: discarded; flushed like Stdout
	ExtraFiles []*os.File // become fd 3, 4, ...; the caller still owns (and closes) them
	NoDeathSig bool       // true only for the hot-upgrade master, which must outlive its parent
}

// Process is a started OS process: the seam through which the Supervisor is
// tested with fakes.
type Process interface {
	// Pid is the process id.
	Pid() int
	// Signal sends sig to the process's whole process group.
	Signal(sig syscall.Signal) error
	// Wait blocks until the process exits and returns its exit error (nil
	// for status 0). The package calls it exactly once, from the goroutine
	// owned by the Child.
	Wait() error
}

// Starter starts processes. Start returns an error wrapping [ErrStart] when
// the command cannot be started.
type Starter interface {
	Start(c *Command) (Process, error)
}

// OS is the real Starter. Each child gets its own process group (Setpgid)
// and, unless Command.NoDeathSig, Pdeathsig=SIGKILL. All children are forked
// from one goroutine locked to one OS thread that never exits, because the
// kernel fires Pdeathsig when the forking thread exits, not the process.
//
// Its processes signal their process group (falling back to the pid alone if
// the child left its group), and when the group leader exits, whatever is left
// of its group is killed: no grandchild outlives the child.
var OS Starter = osStarter{}

// StarterGoroutine is the function name of the goroutine that [OS] starts on
// first use and never stops. Tests that check for leaked goroutines ignore
// it, e.g. goleak.IgnoreTopFunction(monitor.StarterGoroutine).
const StarterGoroutine = "github.com/olio-dev/olio/monitor.forkLoop"

// waitDelay bounds how long Wait waits for Stdout/Stderr copying after the
// process has exited (a descendant that escaped the group may hold the pipe).
const waitDelay = 2 * time.Second

type forkRequest struct {
	cmd   *exec.Cmd
	reply chan error
}

var (
	forkOnce     sync.Once
	forkRequests chan forkRequest
)

// forkLoop forks every child of OS from one locked thread. It never returns:
// if the thread exited, every child started with Pdeathsig would be killed.
func forkLoop(reqs <-chan forkRequest) {
	runtime.LockOSThread()
	for r := range reqs {
		r.reply <- r.cmd.Start()
	}
}

type osStarter struct{}

func (osStarter) Start(c *Command) (Process, error) {
	path := c.Path
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStart, err)
		}
		path = p
	}
	argv0 := path
	if c.Argv0 != "" {
		argv0 = c.Argv0
	}
	cmd := &exec.Cmd{
		Path:       path,
		Args:       append([]string{argv0}, c.Args...),
		Env:        c.Env,
		Dir:        c.Dir,
		Stdout:     c.Stdout,
		Stderr:     c.Stderr,
		ExtraFiles: c.ExtraFiles,
		WaitDelay:  waitDelay,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid: true,
		},
	}
	if !c.NoDeathSig {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	forkOnce.Do(func() {
		forkRequests = make(chan forkRequest)
		go forkLoop(forkRequests)
	})
	reply := make(chan error, 1)
	forkRequests <- forkRequest{cmd: cmd, reply: reply}
	if err := <-reply; err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	return &osProcess{cmd: cmd, pid: cmd.Process.Pid}, nil
}

// osProcess is a child started by OS.
type osProcess struct {
	cmd *exec.Cmd
	pid int

	mu     sync.Mutex
	exited bool // the leader exited: its pid (and group id) may be reused soon
}

func (p *osProcess) Pid() int { return p.pid }

func (p *osProcess) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return os.ErrProcessDone
	}
	err := unix.Kill(-p.pid, sig)
	if errors.Is(err, unix.ESRCH) {
		// The child moved to another group (setsid, job control).
		err = p.cmd.Process.Signal(sig)
	}
	if err != nil {
		return fmt.Errorf("signal %v to pid %d: %w", sig, p.pid, err)
	}
	return nil
}

func (p *osProcess) Wait() error {
	// Wait for the exit without reaping: while the leader is a zombie its
	// pid, and so its process group id, cannot be reused. Kill what is left
	// of the group then, and only then let Signal see the pid as gone.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	p.mu.Lock()
	_ = unix.Kill(-p.pid, unix.SIGKILL) // ESRCH when the group is already empty
	p.exited = true
	p.mu.Unlock()
	err := p.cmd.Wait()
	for _, w := range []io.Writer{p.cmd.Stdout, p.cmd.Stderr} {
		if f, ok := w.(interface{ Flush() }); ok {
			f.Flush() // a last line without a newline
		}
	}
	return err
}

// Check reports whether c can be started at all: its executable exists and
// is executable, and its directory exists. The error wraps [ErrStart]. Call
// it before running a Supervisor for a clear first error; the Supervisor
// itself treats a failed start as a crash and keeps retrying.
func Check(c *Command) error {
	if c == nil {
		return fmt.Errorf("%w: nil command", ErrStart)
	}
	if _, err := exec.LookPath(c.Path); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStart, c.Name, err)
	}
	if c.Dir != "" {
		fi, err := os.Stat(c.Dir)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrStart, c.Name, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s: %s is not a directory", ErrStart, c.Name, c.Dir)
		}
	}
	return nil
}
